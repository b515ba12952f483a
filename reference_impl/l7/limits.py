"""The bounds the L7 front end holds every client to, Envoy's where Envoy has one, so bad input
costs the proxy a bounded amount of memory and time and never stalls other clients.

- A request's header block may be up to 60 KiB (Envoy's `max_request_headers_kb` default);
  larger is `431 Request Header Fields Too Large`.
- Once the first byte of a request has arrived, its whole header block must arrive within
  REQUEST_HEADERS_TIMEOUT (Envoy's `request_headers_timeout`; Envoy leaves it off by default, the
  reference sets one so a slow-headers client cannot hold a connection open forever); a client
  that is slower is answered `408` and cut off. An idle keep-alive connection is not timed here.
- A request with both Content-Length and Transfer-Encoding, or two different Content-Lengths, is
  `400` (RFC 9112 section 6.3 allows it, Envoy does it): such framing is how requests are smuggled.
"""

from __future__ import annotations

MAX_REQUEST_HEADERS_BYTES = 60 * 1024
REQUEST_HEADERS_TIMEOUT = 5.0
#: HTTP/2: the header list size the proxy advertises (SETTINGS_MAX_HEADER_LIST_SIZE) and enforces
MAX_HEADER_LIST_SIZE = MAX_REQUEST_HEADERS_BYTES
#: HTTP/2: streams one client connection may have open at once (Envoy's default is 2^31-1; a
#: smaller bound keeps one client from holding all of a small proxy's upstream connections)
MAX_CONCURRENT_STREAMS = 100
