"""The MESH-HTTP tests' echo backend (after the Gateway API suite's echo): every answer is JSON
naming the backend and pod that answered and the request exactly as it arrived (method, path with
query, host, headers with repeated values joined by ','), so a test asserts on what the route did.

Query parameters shape the answer, for the timeout and retry tests:
  status=N              answer with status N
  delay=S               wait S seconds before answering
  key=K&fail=N&code=C   the first N requests with key K get status C, later ones 200; every answer
                        carries `attempt`, the number of requests with key K this pod has seen
Standard library only: it runs from a stock Python image (`python3 -c <this file> PORT...`).
Environment: POD_NAME, POD_NAMESPACE, BACKEND (e.g. echo-v1).
"""
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

ATTEMPTS = {}
LOCK = threading.Lock()


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True   # headers and body are two writes: no 40 ms delayed-ACK stall between them

    def log_message(self, *args):
        pass

    def _answer(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        status = int(params.get("status") or 200)
        attempt = 0
        if params.get("key"):
            with LOCK:
                attempt = ATTEMPTS[params["key"]] = ATTEMPTS.get(params["key"], 0) + 1
            if attempt <= int(params.get("fail") or 0):
                status = int(params.get("code") or 500)
        if params.get("delay"):
            time.sleep(float(params["delay"]))
        headers = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        body = json.dumps({"backend": os.environ.get("BACKEND", ""), "pod": os.environ.get("POD_NAME", ""),
                           "namespace": os.environ.get("POD_NAMESPACE", ""), "method": self.command,
                           "path": self.path, "host": self.headers.get("host", ""), "headers": headers,
                           "attempt": attempt}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _answer


def main(ports):
    servers = [ThreadingHTTPServer(("0.0.0.0", int(port)), Echo) for port in ports]
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    servers[0].serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:] or ["8080"])
