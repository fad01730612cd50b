#!/usr/bin/env python3
"""An example internal service for the docker-compose demo.

It stands for whatever the agent calls inside a private network (a deploy
API, a CI trigger, ...). Every request is printed, and the X-Port-Signature
header the agent adds (SPEC §4.2) is checked against the raw body with the
demo client secret, the way a real receiver would verify it.

Standard library only; runs in python:3.12-slim.
"""
import base64
import hashlib
import hmac
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ.get("PORT_CLIENT_SECRET", "demo-client-secret-0123456789abcdef")
PORT = int(os.environ.get("PORT", "8000"))


def check_signature(headers, body):
    ts = headers.get("X-Port-Timestamp")
    sig = headers.get("X-Port-Signature")
    if not ts or not sig:
        return "missing"
    mac = hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256)
    want = "v1," + base64.b64encode(mac.digest()).decode()
    return "ok" if hmac.compare_digest(want, sig) else "MISMATCH"


class Handler(BaseHTTPRequestHandler):
    server_version = "example-service/1"

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        print(f"\n=== example-service received {self.command} {self.path}", flush=True)
        for name, value in self.headers.items():
            print(f"    {name}: {value}", flush=True)
        print(f"    body: {body.decode('utf-8', 'replace')}", flush=True)
        print(f"    X-Port-Signature check: {check_signature(self.headers, body)}", flush=True)

        run_id = None
        try:
            parsed = json.loads(body) if body else None
            if isinstance(parsed, dict):
                run_id = parsed.get("runId") or (parsed.get("context") or {}).get("runId")
        except ValueError:
            pass
        answer = json.dumps({
            "status": "deployed",
            "deploymentId": f"dep-{run_id or 'unknown'}",
            "message": "example-service accepted the request",
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET = _handle

    def log_message(self, fmt, *args):
        sys.stdout.write("example-service: " + (fmt % args) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    print(f"example-service listening on :{PORT}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
