"""Errors an HBONE client surfaces to its caller."""


class HboneError(Exception):
    """The tunnel could not be opened: ``status`` is the CONNECT's HTTP status, or None when
    no response came (connection refused, reset, TLS failure)."""

    def __init__(self, status: int | None, message: str = ""):
        self.status = status
        super().__init__(message or f"HBONE CONNECT answered {status}")


class HboneTLSError(HboneError):
    """The mutual-TLS handshake failed or the server is not an expected identity."""

    def __init__(self, message: str):
        super().__init__(None, message)
