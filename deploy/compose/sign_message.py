#!/usr/bin/env python3
"""Sign (or verify) a sample Port action-run message, as Port does (SPEC §4.1).

The signed text is the compact JSON of the message with the two X-Port-*
keys removed from `.headers` (the `headers` object itself stays in place),
key order kept and non-ASCII written raw. The signature is
"v1," + base64(HMAC-SHA256(PORT_CLIENT_SECRET, f"{timestamp}.{text}")).

    python3 deploy/compose/sign_message.py deploy/compose/sample-run.json            # verify
    python3 deploy/compose/sign_message.py --write deploy/compose/sample-run.json    # re-sign in place

The file holds one message on one line (kafka-console-producer sends a line
per record). Standard library only.
"""
import argparse
import base64
import hashlib
import hmac
import json
import sys
import time

DEMO_SECRET = "demo-client-secret-0123456789abcdef"


def signed_text(message):
    stripped = json.loads(json.dumps(message))  # deep copy, order kept
    headers = stripped.get("headers")
    if isinstance(headers, dict):
        headers.pop("X-Port-Signature", None)
        headers.pop("X-Port-Timestamp", None)
    return json.dumps(stripped, separators=(",", ":"), ensure_ascii=False)


def signature(secret, timestamp, text):
    mac = hmac.new(secret.encode(), f"{timestamp}.{text}".encode(), hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("--secret", default=DEMO_SECRET)
    parser.add_argument("--write", action="store_true", help="re-sign with the current time and rewrite the file")
    args = parser.parse_args()

    with open(args.file, encoding="utf-8") as fh:
        message = json.loads(fh.read())
    if args.write:
        message.setdefault("headers", {})
        message["headers"].pop("X-Port-Signature", None)
        message["headers"].pop("X-Port-Timestamp", None)
        ts = int(time.time())
        message["headers"]["X-Port-Signature"] = signature(args.secret, ts, signed_text(message))
        message["headers"]["X-Port-Timestamp"] = ts
        with open(args.file, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(message, separators=(",", ":"), ensure_ascii=False) + "\n")
        print(f"signed {args.file} at {ts}")
        return 0

    headers = message.get("headers") or {}
    ts = headers.get("X-Port-Timestamp")
    got = headers.get("X-Port-Signature")
    want = signature(args.secret, ts, signed_text(message))
    if got != want:
        print(f"{args.file}: signature mismatch: has {got!r}, expected {want!r}", file=sys.stderr)
        return 1
    print(f"{args.file}: signature ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
