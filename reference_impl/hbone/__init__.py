"""HBONE: HTTP/2 CONNECT over mutual TLS 1.3 (pooled client, server, byte pipe).

Imports only reference_impl.identity; knows nothing of policy.
"""

from .client import HboneClient, PoolKey
from .errors import HboneError, HboneTLSError
from .headers import (BadAuthority, format_baggage, format_forwarded, new_traceparent, parse_authority,
                      parse_baggage, parse_forwarded, parse_traceparent, workload_baggage)
from .pipe import abort, pipe
from .server import ConnectRequest, HboneServer, Listener, Outcome
from .session import StreamReset
from .splice import StreamSplice, splice
from .stream import HboneStream

__all__ = [
    "BadAuthority", "ConnectRequest", "HboneClient", "HboneError", "HboneServer", "HboneStream",
    "HboneTLSError", "Listener", "Outcome", "PoolKey", "StreamReset", "StreamSplice", "abort", "format_baggage",
    "format_forwarded", "new_traceparent", "parse_authority", "parse_baggage", "parse_forwarded",
    "parse_traceparent", "pipe", "splice", "workload_baggage",
]
