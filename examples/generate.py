#!/usr/bin/env python3
"""Regenerate examples/recorded-topic.jsonl: realistic messages for the
example mapping, signed the way Port signs them.

Signing secret (documented, for examples only): example-client-secret-0123456789abcdef
Needs `pip install cryptography` (only to encrypt the example secret input).
Run from the repository root: python3 examples/generate.py
"""
import base64, copy, hashlib, hmac, json, os

SECRET = "example-client-secret-0123456789abcdef"
ORG = "org_demo"
RUNS, CHANGES = f"{ORG}.runs", f"{ORG}.change.log"
TS = 1763800000

def encrypt(plain: str, iv: bytes) -> str:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    sealed = AESGCM(SECRET.encode()[:32]).encrypt(iv, plain.encode(), None)  # ciphertext || tag
    return base64.b64encode(iv + sealed).decode()

def canonical(msg) -> str:
    return json.dumps(msg, separators=(",", ":"), ensure_ascii=False)

def sign(msg, ts=TS):
    msg = copy.deepcopy(msg)
    gitlab = msg["payload"]["action"]["invocationMethod"].get("type") == "GITLAB"
    if gitlab:
        body = {k: v for k, v in msg.items() if k != "headers"}
    else:
        msg["headers"] = {}
        body = msg
    digest = hmac.new(SECRET.encode(), f"{ts}.{canonical(body)}".encode(), hashlib.sha256).digest()
    msg["headers"] = {"X-Port-Signature": "v1," + base64.b64encode(digest).decode(), "X-Port-Timestamp": ts}
    return msg

def run(run_id, action, method="POST", url="http://deployer.internal:8080/deploy", sync=False,
        type_="WEBHOOK", agent=True, props=None, extra_method=None):
    im = {"type": type_, "agent": agent, "synchronized": sync, "method": method, "url": url}
    im.update(extra_method or {})
    return {
        "action": action, "resourceType": "run", "status": "TRIGGERED",
        "trigger": {"by": {"orgId": ORG, "userId": "u_ana", "user": {"email": "ana@example.com"}},
                    "origin": "UI", "at": "2026-11-01T12:00:00.000Z"},
        "context": {"entity": "svc-payments", "blueprint": "microservice", "runId": run_id},
        "payload": {"entity": {"identifier": "svc-payments", "title": "Payments",
                               "properties": {"region": "eu-west-1", "tier": 1}},
                    "action": {"invocationMethod": im},
                    "properties": props or {}},
        "headers": {},
    }

def record(msg, topic=RUNS, offset=0, key=None, raw=None):
    value = raw if raw is not None else msg
    return {"topic": topic, "partition": 0, "offset": offset, "timestamp": 1763800000000 + offset,
            "key": key, "headers": {}, "value": value}

gitlab = {"groupName": "acme/platform", "projectName": "payments", "defaultRef": "main"}
lines = []
def add(obj):
    lines.append(json.dumps(obj, ensure_ascii=False))

o = 0
add(record(sign(run("r_ex01", "deploy_service", sync=True, props={"version": "2.4.0", "replicas": 3})), offset=o)); o += 1
add(record(sign(run("r_ex02", "deploy_service", sync=True,
                    props={"version": "2.4.1", "replicas": 2, "note": "déploiement — 東京 🚀"})), offset=o)); o += 1
add(record(sign(run("r_ex03", "trigger_pipeline", type_="GITLAB", url="https://gitlab.example.com/",
                    props={"ref": "release/2.4", "token": encrypt("glptt-example-trigger-token", bytes(range(16)))},
                    extra_method=gitlab)), offset=o, key="svc-payments")); o += 1
add(record(sign(run("r_ex04", "trigger_pipeline", type_="GITLAB", url="https://gitlab.example.com/",
                    props={"ref": "main", "token": "bm90LWVuY3J5cHRlZA=="}, extra_method=gitlab)), offset=o)); o += 1
add(record(sign(run("r_ex05", "get_status", method="GET", url="http://status.internal/v1/services/svc-payments")), offset=o)); o += 1
add(record(sign(run("r_ex06", "scale_service", method="put", url="http://scaler.internal/scale",
                    props={"replicas": 5})), offset=o)); o += 1
add(record(sign(run("r_ex07", "delete_preview", method="DELETE", url="http://previews.internal/previews/pr-42")), offset=o)); o += 1
add(record(sign(run("wfnr_ex08", "workflow_step", sync=True, url="http://runner.internal/steps")), offset=o)); o += 1
add(record(sign(run("wfnr_ex09", "workflow_step", url="http://runner.internal/steps")), offset=o)); o += 1
change = {"changelogDestination": {"type": "WEBHOOK", "agent": True, "url": "http://audit.internal/changes"},
          "action": "UPDATE", "resourceType": "entity",
          "diff": {"before": {"identifier": "svc-payments", "properties": {"tier": 2}},
                   "after": {"identifier": "svc-payments", "properties": {"tier": 1}}}}
add(record(change, topic=CHANGES, offset=0))
not_ours_change = dict(change, changelogDestination={"type": "WEBHOOK", "agent": False, "url": "https://hooks.example.com/x"})
add(record(not_ours_change, topic=CHANGES, offset=1))
add(record(sign(run("r_ex12", "deploy_service", agent=False)), offset=o)); o += 1
tampered = sign(run("r_ex13", "deploy_service", sync=True, props={"version": "2.4.0"}))
tampered["payload"]["properties"]["version"] = "6.6.6"
add(record(tampered, offset=o)); o += 1
add(record(run("r_ex14", "deploy_service", sync=True), offset=o)); o += 1
add(record(sign(run("r_ex15", "unowned_action")), offset=o)); o += 1
add(record(sign(run("wfnr_ex16", "unowned_action")), offset=o)); o += 1
add(record(None, offset=o, raw="this is not JSON")); o += 1
kcat = sign(run("r_ex18", "restart_service", url="http://ops.internal/restart"))
add({"topic": RUNS, "partition": 0, "offset": o, "tstype": "create", "ts": 1763800000018, "broker": 1,
     "key": None, "payload": canonical(kcat)}); o += 1
add(sign(run("r_ex19", "restart_service", url="http://ops.internal/restart")))
add(record(sign(run("r_ex20", "deploy_service", sync=True, props={"version": "2.5.0", "replicas": "many"})), offset=o)); o += 1

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "recorded-topic.jsonl"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
print(f"wrote {len(lines)} lines")
