"""Raw HTTP on $LAMBDA_SOCKET: the function answers requests itself, without a handler."""

import json
import os
import socketserver
from http.server import BaseHTTPRequestHandler


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self._answer()

    def do_POST(self):
        self._answer()

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        reply = json.dumps({
            "method": self.command,
            "path": self.path,
            "invocation_type": self.headers.get("Lambda-Invocation-Type"),
            "request_id": self.headers.get("Lambda-Request-Id"),
            "body_bytes": len(body),
            "served_by": "raw HTTP server from a user Dockerfile",
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format, *args):
        print("%s %s" % (self.command, self.path), flush=True)


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


if __name__ == "__main__":
    path = os.environ["LAMBDA_SOCKET"]
    if os.path.exists(path):
        os.unlink(path)
    with Server(path, Handler) as server:
        os.chmod(path, 0o666)
        server.serve_forever()
