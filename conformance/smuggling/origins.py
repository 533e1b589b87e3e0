"""The recording origins behind the proxy in the differential smuggling suite.

Three HTTP/1.1 parsers nobody here wrote, each recording every request it parsed (method,
raw target, Host, Content-Length, Transfer-Encoding, Via, body) as one JSON line in the file named
by ORIGIN_LOG, and answering `200 ok`:

- `stdlib`: Python's `http.server` (`ThreadingHTTPServer`, HTTP/1.1 keep-alive). It parses
  request lines and heads itself; bodies are read by Content-Length, as its handlers do.
- `gunicorn`: the WSGI `app` below under gunicorn's gthread worker (its own HTTP parser,
  chunked decoding included).
- `waitress`: the same `app` under waitress (another parser again).

Run `python3 origins.py stdlib PORT` for the first; the runner starts the other two with
their own command lines.
"""

import base64
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_lock = threading.Lock()


def record(origin, method, target, headers, body):
    """Appends one parsed request to ORIGIN_LOG."""
    line = json.dumps(
        {
            "origin": origin,
            "method": method,
            "target": target,
            "host": headers.get("host"),
            "content_length": headers.get("content-length"),
            "transfer_encoding": headers.get("transfer-encoding"),
            "via": headers.get("via"),
            "body": base64.b64encode(body).decode(),
        }
    )
    with _lock:
        with open(os.environ["ORIGIN_LOG"], "a", encoding="utf-8") as log:
            log.write(line + "\n")


# ===== WSGI (gunicorn, waitress) =====


def app(environ, start_response):
    """Records the request as the WSGI server parsed it."""
    name = os.environ.get("ORIGIN_NAME", "wsgi")
    target = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not target:
        query = environ.get("QUERY_STRING", "")
        target = environ.get("PATH_INFO", "") + ("?" + query if query else "")
    headers = {
        key[5:].replace("_", "-").lower(): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    if environ.get("CONTENT_LENGTH"):
        headers["content-length"] = environ["CONTENT_LENGTH"]
    body = environ["wsgi.input"].read()
    record(name, environ["REQUEST_METHOD"], target, headers, body)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


# ===== http.server =====


class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def __getattr__(self, name):
        # Every method (do_GET, do_POST, do_PATCH, extension methods…) is recorded alike.
        if name.startswith("do_"):
            return self.answer
        raise AttributeError(name)

    def answer(self):
        headers = {k.lower(): v for k, v in self.headers.items()}
        body = b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = self.read_chunked()
            if body is None:
                self.send_error(400)
                return
        elif "content-length" in headers:
            try:
                body = self.rfile.read(int(headers["content-length"]))
            except ValueError:
                self.send_error(400)
                return
        record("stdlib", self.command, self.path, headers, body)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "2")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(b"ok")

    def read_chunked(self):
        body = b""
        while True:
            line = self.rfile.readline(4096)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                return None
            if size == 0:
                while self.rfile.readline(4096) not in (b"\r\n", b"\n", b""):
                    pass
                return body
            body += self.rfile.read(size)
            self.rfile.readline(4096)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "stdlib":
        sys.exit("usage: origins.py stdlib PORT")
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Recorder)
    server.daemon_threads = True
    server.serve_forever()
