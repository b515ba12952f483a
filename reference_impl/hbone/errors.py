"""Errors an HBONE client surfaces to its caller."""


class HboneError(Exception):
    """The tunnel could not be opened: ``status`` is the CONNECT's HTTP status, or None when
    no response came (connection refused, reset, TLS failure).

    ``unprocessed`` is True only when the peer certainly never acted on the CONNECT (its stream
    id was above a GOAWAY's last stream id, it was refused with REFUSED_STREAM, or it was never
    sent): such a request is safe to send again on a fresh connection (RFC 9113 §8.7).

    ``unreachable`` is True when not even the TCP connection to the peer was made (refused, no
    route, timed out): nothing reached that peer, so another endpoint of the same destination may
    be tried instead."""

    def __init__(self, status: int | None, message: str = "", *, unprocessed: bool = False,
                 unreachable: bool = False):
        self.status = status
        self.unprocessed = unprocessed
        self.unreachable = unreachable
        super().__init__(message or f"HBONE CONNECT answered {status}")


class HboneTLSError(HboneError):
    """The mutual-TLS handshake failed or the server is not an expected identity."""

    def __init__(self, message: str):
        super().__init__(None, message)
