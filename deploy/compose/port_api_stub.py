#!/usr/bin/env python3
"""A stand-in for Port's API for the docker-compose demo.

Prints every call the agent makes (run logs, response and status patches,
the organization patch, ...) so that a run's reporting can be seen.

  POST /v1/auth/access_token  ->  {"accessToken": "demo", "expiresIn": 3600}
  anything else               ->  200 {"ok": true}

Standard library only; runs in python:3.12-slim.
"""
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("PORT", "8000"))


class Handler(BaseHTTPRequestHandler):
    server_version = "port-api-stub/1"

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        if self.command == "POST" and path == "/v1/auth/access_token":
            # Never print the credentials the agent sends here.
            print(f"PORT API {self.command} {self.path} (credentials not shown)", flush=True)
            answer = {"accessToken": "demo", "expiresIn": 3600}
        else:
            text = body.decode("utf-8", "replace")
            auth = "with token" if self.headers.get("Authorization") else "WITHOUT token"
            print(f"PORT API {self.command} {self.path} ({auth}) {text}", flush=True)
            answer = {"ok": True}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET = _handle

    def log_message(self, fmt, *args):
        # The request line is already printed with its body above.
        pass


if __name__ == "__main__":
    print(f"port-api stand-in listening on :{PORT}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
