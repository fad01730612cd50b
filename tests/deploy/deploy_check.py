#!/usr/bin/env python3
"""Offline checks of the Helm chart and the docker-compose demo.

Used by tests/deploy/validate.sh; run from the repository root:

    python3 tests/deploy/deploy_check.py lint
    python3 tests/deploy/deploy_check.py render CASE OUTDIR
    python3 tests/deploy/deploy_check.py check CASE OUTDIR
    python3 tests/deploy/deploy_check.py reject
    python3 tests/deploy/deploy_check.py migration-cases
    python3 tests/deploy/deploy_check.py migrate CASE OUTDIR
    python3 tests/deploy/deploy_check.py port-facts PORT_CHART_DIR
    python3 tests/deploy/deploy_check.py rollout
    python3 tests/deploy/deploy_check.py mapping-jq
    python3 tests/deploy/deploy_check.py image
    python3 tests/deploy/deploy_check.py compose
    python3 tests/deploy/deploy_check.py promql SCRAPE_DIR

Helm runs in-process through helm-python-sdk (the Helm Go SDK behind a C
ABI): no helm binary, no cluster, no network. Each command exits non-zero
with a readable message on the first failed assertion.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Any

import yaml

try:
    import helm_python as helm
except ImportError:  # pragma: no cover - validate.sh installs it
    helm = None

CHART = "helm/port-agent"
HERE = "tests/deploy"
MAPPING = "deploy/compose/invocations.json"
# The image's default mapping: Port's image default (port-labs/port-agent,
# app/control_the_payload_config.json, unchanged since v0.8.0).
IMAGE_MAPPING = "deploy/control_the_payload_config.json"
# sha256 of that file in port-labs/port-agent: the same at tag v0.8.0 and at
# 4732c34 (the newest commit read, after tag v0.8.9).
PORT_IMAGE_MAPPING_SHA256 = "ef8fc5185dc725a6a9b4a89a930909f2a1e5792ff0bfdb2fd63e30cfc2fc2d84"
RULES = "deploy/prometheus/port-agent-rules.yaml"
DASHBOARD = "deploy/grafana/port-agent.json"
RUNBOOK = "docs/runbook.md"
# The only metric names the rules and the dashboard may use that the agent
# does not export: kube-state-metrics', in the rules that say so.
KUBE_STATE_METRICS = {
    "kube_pod_status_ready",
    "kube_pod_container_status_restarts_total",
    "kube_pod_container_status_last_terminated_exitcode",
}
RELEASE = "port-agent-test"
NAMESPACE = "port-agent"
# Facts of Port's chart (0.8.15) for Port-style values files; see the file.
MIGRATION = f"{HERE}/port-migration/port-agent-0.8.15.yaml"

PORT_COMPAT_SETS = [
    "--set", "env.normal.PORT_ORG_ID=org_1",
    "--set", "env.normal.KAFKA_CONSUMER_GROUP_ID=org_1.g",
    "--set", "env.secret.PORT_CLIENT_ID=id",
    "--set", "env.secret.PORT_CLIENT_SECRET=sec",
]

# Each case is a helm-style argument list (-f, --set, --set-string, --set-file).
CASES: dict[str, list[str]] = {
    # (a) the chart's defaults
    "default": [],
    # (b) the documented Port command line
    "port-compatible": PORT_COMPAT_SETS + ["--set-file", f"controlThePayloadConfig={MAPPING}"],
    # (c) every optional feature on
    "all-features": [
        "-f", f"{HERE}/values-all-features.yaml",
        "--set-file", f"controlThePayloadConfig={MAPPING}",
        "--set-file", f"selfSignedCertificate.certificate={HERE}/test-ca.crt",
    ],
    # an existing values file written for Port's chart, unchanged
    "port-values-file": ["-f", f"{HERE}/values-port-chart.yaml"],
    # credentials and CA from Secrets the user manages, mapping at a relative path
    "existing-secrets": PORT_COMPAT_SETS + [
        "--set", "secret.useExistingSecret=true",
        "--set", "secret.name=my-port-credentials",
        "--set", "selfSignedCertificate.enabled=true",
        "--set", "selfSignedCertificate.secret.useExistingSecret=true",
        "--set", "selfSignedCertificate.secret.name=my-ca",
        "--set", "selfSignedCertificate.secret.key=ca.crt",
        "--set", "env.normal.CONTROL_THE_PAYLOAD_CONFIG_PATH=./config/mapping.json",
        "--set-file", f"controlThePayloadConfig={MAPPING}",
    ],
    # null clears a default: one key, a whole security context, the token field
    "cleared-defaults": PORT_COMPAT_SETS + [
        "--set", "containerSecurityContext.readOnlyRootFilesystem=null",
        "--set", "podSecurityContext=null",
        "--set", "automountServiceAccountToken=null",
    ],
}

# Values that must be refused at install time (schema or template checks),
# with a part of the message that says why.
REJECT: dict[str, tuple[list[str], str]] = {
    "rolloutStrategy not Recreate/RollingUpdate": (["--set", "rolloutStrategy=Sideways"], "/rolloutStrategy"),
    "mapping that is not JSON": (["--set", "controlThePayloadConfig=not json"], "is not valid JSON"),
    "mapping that is a JSON object, not an array": (
        ["--set-file-text", 'controlThePayloadConfig={"enabled": true}'], "must be a JSON array of mappings"),
    "mapping with a JSON syntax error": (
        ["--set-file-text", 'controlThePayloadConfig=[{"enabled": true,}]'], "is not valid JSON"),
    "mapping array holding a non-object": (
        ["--set-string", "controlThePayloadConfig=[1]"], "must be a JSON array of mapping objects"),
    "AGENT_HTTP_PORT=0 (probes need the server)": (
        ["--set", "env.normal.AGENT_HTTP_PORT=0"], "/env/normal/AGENT_HTTP_PORT"),
    "AGENT_HTTP_PORT=\"0\" given as a string": (
        ["--set-string", "env.normal.AGENT_HTTP_PORT=0"], "must be between 1 and 65535"),
    "http.port out of range": (["--set", "http.port=70000"], "/http/port"),
    "env.normal name starting with a digit": (
        ["--set", "env.normal.1PORT_ORG_ID=org_1"], "invalid propertyName '1PORT_ORG_ID'"),
    "env.secret name with a space": (["--set", "env.secret.MY TOKEN=x"], "invalid propertyName 'MY TOKEN'"),
    "extraVolumes reusing the chart's certificate volume name": ([
        "--set", "selfSignedCertificate.enabled=true",
        "--set-file", f"selfSignedCertificate.certificate={HERE}/test-ca.crt",
        "--set", "extraVolumes[0].name=certificates,extraVolumes[0].emptyDir.medium=Memory",
    ], 'the volume name "certificates" is the chart\'s own'),
    "extraVolumeMounts at the path the chart mounts the mapping": ([
        "--set-file", f"controlThePayloadConfig={MAPPING}",
        "--set", "extraVolumes[0].name=mine,extraVolumes[0].emptyDir.medium=Memory",
        "--set", "extraVolumeMounts[0].name=mine,extraVolumeMounts[0].mountPath=/app/control_the_payload_config.json",
    ], "/app/control_the_payload_config.json is where the chart mounts the mapping"),
    "extraVolumes reusing the chart's mapping volume name (the full name)": ([
        "--set-file", f"controlThePayloadConfig={MAPPING}",
        "--set", f"extraVolumes[0].name={RELEASE},extraVolumes[0].emptyDir.medium=Memory",
    ], f'the volume name "{RELEASE}" is the chart\'s own'),
    "extraVolumeMounts at the path the chart mounts the CA": ([
        "--set", "selfSignedCertificate.enabled=true",
        "--set-file", f"selfSignedCertificate.certificate={HERE}/test-ca.crt",
        "--set", "extraVolumes[0].name=mine,extraVolumes[0].emptyDir.medium=Memory",
        "--set", "extraVolumeMounts[0].name=mine,"
                 "extraVolumeMounts[0].mountPath=/usr/local/share/ca-certificates/cert.crt",
    ], "is where the chart mounts the self-signed certificate"),
    "image.pullPolicy typo": (["--set", "image.pullPolicy=Sometimes"], "/image/pullPolicy"),
    "typo in an added section": (["--set", "serviceMonitor.enabeld=true"], "'enabeld' not allowed"),
    "AGENT_LOG_FORMAT not json/text": (["--set", "env.normal.AGENT_LOG_FORMAT=yaml"], "/env/normal/AGENT_LOG_FORMAT"),
    "self-signed certificate enabled without a certificate": (
        ["--set", "selfSignedCertificate.enabled=true"], "selfSignedCertificate.certificate (the PEM text) is required"),
    "existing certificate secret without a name": ([
        "--set", "selfSignedCertificate.enabled=true",
        "--set", "selfSignedCertificate.secret.useExistingSecret=true",
    ], "selfSignedCertificate.secret.name is required"),
}


class CheckError(Exception):
    pass


def ensure(condition: bool, message: str) -> None:
    if not condition:
        raise CheckError(message)


# --------------------------------------------------------------------------
# values and rendering
# --------------------------------------------------------------------------

def deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def user_values(args: list[str]) -> dict[str, Any]:
    """Turn helm-style arguments into the user-supplied values, like the CLI."""
    values: dict[str, Any] = {}
    it = iter(args)
    for flag in it:
        arg = next(it)
        if flag in ("-f", "--values"):
            with open(arg, encoding="utf-8") as fh:
                parsed = yaml.safe_load(fh) or {}
        elif flag == "--set":
            parsed = helm.parse_set_string(arg)
        elif flag == "--set-string":
            parsed = helm.parse_set_string_values(arg)
        elif flag == "--set-file":
            parsed = helm.parse_set_file(arg)
        elif flag == "--set-file-text":
            # Test helper: --set-file with the file's text given inline.
            key, _, text = arg.partition("=")
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "value")
                with open(path, "w", encoding="utf-8") as fh:
                    fh.write(text)
                parsed = helm.parse_set_file(f"{key}={path}")
        else:
            raise CheckError(f"unknown flag {flag}")
        values = deep_merge(values, parsed)
    return values


def render(args: list[str], release: str = RELEASE, chart_dir: str = CHART) -> tuple[dict[str, Any], dict[str, str]]:
    """Validate against values.schema.json and render, as `helm install` would."""
    supplied = user_values(args)
    with helm.Chart.load(chart_dir) as chart:
        merged = chart.merge_values(supplied)
        chart.validate_schema(merged)
        manifests = chart.render(supplied, name=release, namespace=NAMESPACE, is_install=True)
    return merged, manifests


def manifest_docs(manifests: dict[str, str]) -> list[dict]:
    return [d for path, text in sorted(manifests.items()) if not path.endswith("NOTES.txt")
            for d in yaml.safe_load_all(text) if d]


def write_rendering(outdir: str, merged: dict, manifests: dict[str, str], release: str = RELEASE) -> list[str]:
    if os.path.isdir(outdir):
        shutil.rmtree(outdir)
    os.makedirs(os.path.join(outdir, "manifests"))
    written = []
    for path, text in sorted(manifests.items()):
        name = os.path.basename(path)
        if name == "NOTES.txt":
            with open(os.path.join(outdir, "NOTES.txt"), "w", encoding="utf-8") as fh:
                fh.write(text)
            continue
        if not text.strip():
            continue
        target = os.path.join(outdir, "manifests", name)
        with open(target, "w", encoding="utf-8") as fh:
            fh.write(text)
        written.append(target)
    with open(os.path.join(outdir, "values.json"), "w", encoding="utf-8") as fh:
        json.dump(merged, fh, indent=1)
    with open(os.path.join(outdir, "release"), "w", encoding="utf-8") as fh:
        fh.write(release)
    return written


def load_rendering(outdir: str) -> tuple[dict, list[dict], str]:
    with open(os.path.join(outdir, "values.json"), encoding="utf-8") as fh:
        merged = json.load(fh)
    with open(os.path.join(outdir, "release"), encoding="utf-8") as fh:
        merged["__release"] = fh.read()
    docs: list[dict] = []
    mdir = os.path.join(outdir, "manifests")
    for name in sorted(os.listdir(mdir)):
        with open(os.path.join(mdir, name), encoding="utf-8") as fh:
            docs.extend(d for d in yaml.safe_load_all(fh) if d)
    notes = ""
    if os.path.exists(os.path.join(outdir, "NOTES.txt")):
        with open(os.path.join(outdir, "NOTES.txt"), encoding="utf-8") as fh:
            notes = fh.read()
    return merged, docs, notes


# --------------------------------------------------------------------------
# assertions over one rendering
# --------------------------------------------------------------------------

def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    ensure(len(found) == 1, f"expected one {kind}{' ' + name if name else ''}, found {len(found)}")
    return found[0]


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def check_rendering(case: str, outdir: str) -> list[str]:
    merged, docs, notes = load_rendering(outdir)
    release = merged.pop("__release")
    done: list[str] = []

    deployment = one(docs, "Deployment")
    template = deployment["spec"]["template"]
    pod = template["spec"]
    pod_labels = template["metadata"].get("labels", {})
    ensure(matches(deployment["spec"]["selector"]["matchLabels"], pod_labels),
           "Deployment selector does not match the pod labels")
    containers = pod["containers"]
    ensure(len(containers) == 1, "expected exactly one container")
    c = containers[0]
    env_list = c.get("env", [])
    names = [e["name"] for e in env_list]
    dups = sorted({n for n in names if names.count(n) > 1})
    ensure(not dups, f"duplicate env entries: {dups}")
    env = {e["name"]: e for e in env_list}
    ensure(deployment["spec"]["replicas"] == merged["replicaCount"], "replicas != replicaCount")
    ensure(deployment["spec"]["strategy"]["type"] == merged["rolloutStrategy"], "strategy != rolloutStrategy")
    done.append("Deployment, selector, replicas and strategy")

    # env.normal: every key reaches the container with its value as a string.
    normal = merged["env"].get("normal") or {}
    for key, value in normal.items():
        if value is None:
            ensure(key not in env, f"env.normal.{key} is null but still passed")
            continue
        ensure(key in env, f"env.normal.{key} is not passed to the container")
        want = json.dumps(value) if isinstance(value, bool) else str(value)
        ensure(env[key].get("value") == want,
               f"env.normal.{key}: container has {env[key].get('value')!r}, values say {want!r}")
    done.append(f"every env.normal key passed ({len(normal)})")

    # env.secret: secretKeyRef into the chart's Secret, or envFrom the user's.
    secret_values = merged["env"].get("secret") or {}
    secret_name = merged["secret"].get("name") or deployment["metadata"]["name"]
    if merged["secret"].get("useExistingSecret"):
        refs = [s.get("secretRef", {}).get("name") for s in c.get("envFrom", [])]
        ensure(secret_name in refs, f"envFrom does not reference the existing Secret {secret_name}")
        owned = [s for s in by_kind(docs, "Secret") if s["metadata"]["name"] == secret_name]
        ensure(not owned, "the chart renders a Secret although secret.useExistingSecret is true")
        for key in secret_values:
            ensure(key not in env, f"env.secret.{key} passed with secretKeyRef although the Secret is the user's")
        done.append(f"env.secret via envFrom of Secret {secret_name}")
    else:
        secret = one(docs, "Secret", secret_name)
        data = secret.get("data") or {}
        for key, value in secret_values.items():
            ensure(key in env, f"env.secret.{key} is not passed to the container")
            ref = env[key].get("valueFrom", {}).get("secretKeyRef", {})
            ensure(ref.get("name") == secret_name and ref.get("key") == key,
                   f"env.secret.{key} does not reference key {key} of Secret {secret_name}")
            ensure("value" not in env[key], f"env.secret.{key} is passed in clear")
            ensure(key in data, f"Secret {secret_name} lacks key {key}")
            want = "" if value is None else str(value)
            got = base64.b64decode(data[key]).decode() if data[key] else ""
            ensure(got == want, f"Secret {secret_name}.{key} holds another value")
        done.append(f"every env.secret key passed by secretKeyRef ({len(secret_values)})")

    # The mapping: mounted exactly where CONTROL_THE_PAYLOAD_CONFIG_PATH points.
    ensure("CONTROL_THE_PAYLOAD_CONFIG_PATH" in env, "CONTROL_THE_PAYLOAD_CONFIG_PATH is not set")
    path = env["CONTROL_THE_PAYLOAD_CONFIG_PATH"]["value"]
    absolute = path if path.startswith("/") else os.path.normpath(os.path.join("/app", path))
    # The API server rejects duplicate volume names and mount paths, and a
    # mount of a volume that does not exist; kubernetes-validate sees none.
    mount_list = c.get("volumeMounts") or []
    volume_list = pod.get("volumes") or []
    mount_paths = [m["mountPath"].rstrip("/") or "/" for m in mount_list]
    volume_names = [v["name"] for v in volume_list]
    dup_paths = sorted({p for p in mount_paths if mount_paths.count(p) > 1})
    dup_names = sorted({n for n in volume_names if volume_names.count(n) > 1})
    ensure(not dup_paths, f"several volumeMounts at {dup_paths}: the API server refuses the pod")
    ensure(not dup_names, f"several volumes named {dup_names}: the API server refuses the pod")
    for m in mount_list:
        ensure(m["name"] in volume_names, f"the mount at {m['mountPath']} names volume {m['name']!r}, which does not exist")
    done.append(f"no duplicate volume names or mount paths ({len(volume_names)} volume(s), {len(mount_paths)} mount(s))")
    mounts = {m["mountPath"]: m for m in mount_list}
    volumes = {v["name"]: v for v in volume_list}
    mapping_text = merged.get("controlThePayloadConfig") or ""
    normal = (merged.get("env") or {}).get("normal") or {}
    reloads = bool(mapping_text) and merged.get("mappingReload", True) is not False \
        and "CONTROL_THE_PAYLOAD_CONFIG_PATH" not in normal
    expect_reload = "true" if merged.get("mappingReload", True) is not False else "false"
    if "AGENT_MAPPING_RELOAD" not in normal:
        ensure(env.get("AGENT_MAPPING_RELOAD", {}).get("value") == expect_reload,
               f"AGENT_MAPPING_RELOAD is not {expect_reload!r} (mappingReload)")
    if reloads:
        # A directory mount (the kubelet swaps ..data on a change; a subPath
        # mount never sees one) and the path inside it.
        directory = os.path.dirname(absolute)
        ensure(directory in mounts and "subPath" not in mounts[directory],
               f"mappingReload: no directory mount at {directory} for {absolute}")
        volume = volumes.get(mounts[directory]["name"], {})
        ensure("configMap" in volume, f"the volume mounted at {directory} is not a ConfigMap")
        cm = one(docs, "ConfigMap", volume["configMap"]["name"])
        items = {i["path"]: i["key"] for i in volume["configMap"].get("items", [])}
        key = items.get(os.path.basename(absolute))
        ensure(key in cm.get("data", {}), f"{absolute} is not a key of ConfigMap {cm['metadata']['name']}")
        ensure(json.loads(cm["data"][key]) == json.loads(mapping_text),
               "the ConfigMap does not hold controlThePayloadConfig")
        done.append(f"mapping ConfigMap mounted as a directory at {directory} (reloaded on change)")
    elif mapping_text:
        ensure(absolute in mounts, f"nothing is mounted at {absolute} (CONTROL_THE_PAYLOAD_CONFIG_PATH={path})")
        mount = mounts[absolute]
        volume = volumes.get(mount["name"], {})
        ensure("configMap" in volume, f"the volume mounted at {absolute} is not a ConfigMap")
        cm = one(docs, "ConfigMap", volume["configMap"]["name"])
        ensure("subPath" in mount and mount["subPath"] in cm.get("data", {}),
               f"the mount at {absolute} does not select a key of ConfigMap {cm['metadata']['name']}")
        ensure(json.loads(cm["data"][mount["subPath"]]) == json.loads(mapping_text),
               "the ConfigMap does not hold controlThePayloadConfig")
        done.append(f"mapping ConfigMap mounted at {absolute}")
    else:
        ensure(absolute == "/app/control_the_payload_config.json",
               f"no mapping given, yet CONTROL_THE_PAYLOAD_CONFIG_PATH is {path}, not the image's default")
        ensure(not by_kind(docs, "ConfigMap"), "a ConfigMap is rendered without controlThePayloadConfig")
        done.append("no mapping given: the image's default path")

    # Rolling on change.
    annotations = template["metadata"].get("annotations", {})
    for key in ("checksum/secret",) + (() if reloads else ("checksum/mapping",)):
        ensure(len(str(annotations.get(key, ""))) == 64, f"pod template lacks the {key} annotation")
    if reloads:
        ensure("checksum/mapping" not in annotations, "mappingReload: a mapping change would still roll the pods")
    for key, value in (merged.get("podAnnotations") or {}).items():
        ensure(annotations.get(key) == value, f"podAnnotations.{key} missing")
    for key, value in (merged.get("podLabels") or {}).items():
        if key not in deployment["spec"]["selector"]["matchLabels"]:
            ensure(pod_labels.get(key) == value, f"podLabels.{key} missing")
    for key, value in (merged.get("extraLabels") or {}).items():
        if key not in deployment["spec"]["selector"]["matchLabels"]:
            ensure(pod_labels.get(key) == str(value), f"extraLabels.{key} is not on the pods")
    done.append("checksum annotations, podAnnotations, podLabels and extraLabels on the pods")

    # HTTP port and probes.
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    ensure("http" in ports, "no container port named http")
    ensure(str(ports["http"]) == env["AGENT_HTTP_PORT"]["value"], "AGENT_HTTP_PORT != the http container port")
    for probe, path_ in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = c.get(probe, {}).get("httpGet", {})
        ensure(get.get("path") == path_, f"{probe} does not GET {path_}")
        ensure(get.get("port") in ("http", ports["http"]), f"{probe} is not on the http port")
    done.append(f"probes /healthz and /readyz on port {ports['http']}")

    # Security contexts: exactly the merged values (defaults, the user's keys
    # on top, null clearing a key or the whole context).
    psc = pod.get("securityContext") or {}
    csc = c.get("securityContext") or {}
    ensure(psc == (merged.get("podSecurityContext") or {}),
           f"pod securityContext {psc} is not podSecurityContext {merged.get('podSecurityContext')}")
    ensure(csc == (merged.get("containerSecurityContext") or {}),
           f"container securityContext {csc} is not containerSecurityContext {merged.get('containerSecurityContext')}")
    if case == "default":
        # With no security values: restrictive, and no UID pinned (OpenShift's
        # restricted-v2 assigns one; the image's own user 1000 is non-root).
        ensure(psc.get("runAsNonRoot") is True and csc.get("runAsNonRoot") is True, "runAsNonRoot is not set")
        for ctx, where in ((psc, "pod"), (csc, "container")):
            for key in ("runAsUser", "runAsGroup", "fsGroup"):
                ensure(key not in ctx, f"the default {where} securityContext pins {key}")
            ensure((ctx.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
                   f"the default {where} seccompProfile is not RuntimeDefault")
        ensure(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem is not set")
        ensure(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation is not false")
        ensure(csc.get("privileged") is False, "privileged is not false")
        ensure(csc.get("capabilities") == {"drop": ["ALL"]}, "capabilities are not all dropped")
        ensure(pod.get("automountServiceAccountToken") is False, "the service account token is mounted by default")
        done.append("default security context restrictive, no UID pinned, token not mounted")
    if case == "cleared-defaults":
        ensure("securityContext" not in pod, "podSecurityContext: null leaves a pod securityContext")
        ensure("readOnlyRootFilesystem" not in csc, "readOnlyRootFilesystem: null leaves the key")
        ensure(csc.get("allowPrivilegeEscalation") is False, "clearing one key cleared the others")
        ensure("automountServiceAccountToken" not in pod, "automountServiceAccountToken: null leaves the field")
        done.append("null cleared readOnlyRootFilesystem, the pod securityContext and automountServiceAccountToken")
    want_token = merged.get("automountServiceAccountToken")
    ensure(pod.get("automountServiceAccountToken") == want_token,
           f"automountServiceAccountToken is {pod.get('automountServiceAccountToken')}, values say {want_token}")
    ensure("/tmp" in mounts, "no writable /tmp under a read-only root filesystem")
    res = c.get("resources", {})
    ensure(res.get("requests") and res.get("limits"), "resources requests/limits missing")
    done.append("security contexts as the values say, /tmp, resources")

    # Self-signed CA.
    ssc = merged["selfSignedCertificate"]
    if ssc.get("enabled"):
        cert_path = env.get("SSL_CERT_FILE", {}).get("value")
        ensure(cert_path and env.get("REQUESTS_CA_BUNDLE", {}).get("value") == cert_path,
               "SSL_CERT_FILE and REQUESTS_CA_BUNDLE do not point at the same certificate")
        ensure(cert_path in mounts, f"nothing is mounted at SSL_CERT_FILE={cert_path}")
        volume = volumes[mounts[cert_path]["name"]]
        secret_ref = volume.get("secret", {})
        items = {i["path"]: i["key"] for i in secret_ref.get("items", [])}
        ensure(items.get(mounts[cert_path]["subPath"]), "the certificate mount selects no key")
        if ssc["secret"].get("useExistingSecret"):
            ensure(secret_ref.get("secretName") == ssc["secret"]["name"], "the CA volume does not use the existing Secret")
            ensure(items[mounts[cert_path]["subPath"]] == ssc["secret"]["key"], "the CA volume does not use secret.key")
        else:
            cert_secret = one(docs, "Secret", secret_ref.get("secretName"))
            pem = base64.b64decode(cert_secret["data"]["crt"]).decode()
            ensure(pem == ssc["certificate"], "the CA Secret does not hold selfSignedCertificate.certificate")
        done.append(f"self-signed CA mounted at {cert_path}")
    else:
        ensure("SSL_CERT_FILE" not in env or "SSL_CERT_FILE" in normal, "SSL_CERT_FILE set without selfSignedCertificate")

    # extraVolumes / extraVolumeMounts (templated with tpl) / extraEnv / extraEnvFrom.
    def templated(text: str) -> str:
        return text.replace("{{ .Release.Name }}", release)
    for v in merged.get("extraVolumes") or []:
        ensure(templated(v["name"]) in volumes, f"extraVolumes {templated(v['name'])} missing")
    for m in merged.get("extraVolumeMounts") or []:
        ensure(templated(m["mountPath"]) in mounts, f"extraVolumeMounts {templated(m['mountPath'])} missing")
        ensure(mounts[templated(m["mountPath"])]["name"] == templated(m["name"]),
               f"extraVolumeMounts {m['mountPath']} does not mount volume {templated(m['name'])}")
    for e in merged.get("extraEnv") or []:
        ensure(e["name"] in env, f"extraEnv {e['name']} missing")
    for e in merged.get("extraEnvFrom") or []:
        ensure(e in c.get("envFrom", []), "extraEnvFrom entry missing")
    for key in ("nodeSelector", "tolerations", "affinity", "topologySpreadConstraints"):
        if merged.get(key):
            ensure(pod.get(key), f"{key} missing from the pod spec")
    if merged.get("imagePullSecrets"):
        ensure(pod.get("imagePullSecrets") == merged["imagePullSecrets"], "imagePullSecrets missing")
    if (merged.get("podServiceAccount") or {}).get("name"):
        ensure(pod.get("serviceAccountName") == merged["podServiceAccount"]["name"], "podServiceAccount.name not used")
    image = merged["image"]
    ensure(c["image"].startswith(image["repository"] + ":"), "image.repository not used")
    ensure(c["imagePullPolicy"] == image["pullPolicy"], "image.pullPolicy not used")
    done.append("extra volumes, env, scheduling, image")

    # Service, ServiceMonitor, PodDisruptionBudget.
    services = by_kind(docs, "Service")
    want_service = merged["service"]["enabled"] or merged["serviceMonitor"]["enabled"]
    ensure(bool(services) == bool(want_service), "Service rendered/not rendered against service.enabled")
    if services:
        svc = services[0]
        ensure(matches(svc["spec"]["selector"], pod_labels), "the Service does not select the pods")
        sports = {p["name"]: p for p in svc["spec"]["ports"]}
        ensure("metrics" in sports and sports["metrics"]["targetPort"] in ("http", ports["http"]),
               "the Service has no port named metrics on the http port")
        done.append("Service with a metrics port")
    monitors = by_kind(docs, "ServiceMonitor")
    ensure(bool(monitors) == bool(merged["serviceMonitor"]["enabled"]), "ServiceMonitor against serviceMonitor.enabled")
    if monitors:
        sm = monitors[0]
        ensure(sm["apiVersion"] == "monitoring.coreos.com/v1", "ServiceMonitor apiVersion")
        ensure(matches(sm["spec"]["selector"]["matchLabels"], services[0]["metadata"]["labels"]),
               "the ServiceMonitor does not select the Service")
        ensure(NAMESPACE in sm["spec"]["namespaceSelector"]["matchNames"], "ServiceMonitor namespaceSelector")
        eps = sm["spec"]["endpoints"]
        ensure(eps and eps[0]["port"] == "metrics" and eps[0]["path"] == "/metrics", "ServiceMonitor endpoint")
        for key, value in (merged["serviceMonitor"].get("labels") or {}).items():
            ensure(sm["metadata"]["labels"].get(key) == value, f"serviceMonitor.labels.{key} missing")
        done.append("ServiceMonitor on port metrics")
    pdbs = by_kind(docs, "PodDisruptionBudget")
    ensure(bool(pdbs) == bool(merged["podDisruptionBudget"]["enabled"]), "PDB against podDisruptionBudget.enabled")
    if pdbs:
        spec = pdbs[0]["spec"]
        ensure(matches(spec["selector"]["matchLabels"], pod_labels), "the PDB does not select the pods")
        ensure(("minAvailable" in spec) != ("maxUnavailable" in spec), "the PDB sets both or neither bound")
        done.append("PodDisruptionBudget")

    done.extend(check_monitoring(merged, docs, release))

    # Labels on every object.
    for doc in docs:
        labels = doc["metadata"].get("labels", {})
        ensure(labels.get("app.kubernetes.io/instance") == release,
               f"{doc['kind']} {doc['metadata']['name']} lacks the common labels")
        for key, value in (merged.get("extraLabels") or {}).items():
            ensure(labels.get(key) == str(value), f"{doc['kind']} lacks extraLabels.{key}")

    ensure("kubectl" in notes and "/readyz" in notes, "NOTES.txt does not say what to check")
    done.append("common labels and NOTES.txt")
    return done


def check_monitoring(merged: dict, docs: list[dict], release: str) -> list[str]:
    """The PrometheusRule and the dashboard ConfigMap: there exactly when
    enabled, and carrying deploy/'s files (rules narrowed to the release's
    pods, runbook URLs prefixed)."""
    done: list[str] = []
    fullname = one(docs, "Deployment")["metadata"]["name"]
    pr_values = merged.get("prometheusRule") or {}
    rules = by_kind(docs, "PrometheusRule")
    ensure(bool(rules) == bool(pr_values.get("enabled")), "PrometheusRule against prometheusRule.enabled")
    if rules:
        pr = rules[0]
        ensure(pr["apiVersion"] == "monitoring.coreos.com/v1", "PrometheusRule apiVersion")
        ensure(pr["metadata"]["namespace"] == (pr_values.get("namespace") or NAMESPACE), "PrometheusRule namespace")
        for key, value in (pr_values.get("additionalLabels") or {}).items():
            ensure(pr["metadata"]["labels"].get(key) == value, f"prometheusRule.additionalLabels.{key} missing")
        with open(RULES, encoding="utf-8") as f:
            source = yaml.safe_load(f)
        want = [r for g in source["groups"] for r in g["rules"]]
        got = [r for g in pr["spec"]["groups"] for r in g["rules"]]
        ensure([r["alert"] for r in got] == [r["alert"] for r in want], "PrometheusRule alerts differ from " + RULES)
        base = (pr_values.get("runbookBaseUrl") or "").rstrip("/")
        pods = f'namespace="{NAMESPACE}", pod=~"{fullname}-[a-z0-9]+-[a-z0-9]+"'
        for w, g in zip(want, got):
            ensure(g["expr"] == w["expr"].replace('pod=~".*port-agent.*"', pods), f"{w['alert']}: expr changed")
            ensure(g.get("for") == w.get("for") and g["labels"] == w["labels"], f"{w['alert']}: for/labels changed")
            url = w["annotations"]["runbook_url"]
            ensure(g["annotations"]["runbook_url"] == (f"{base}/{url}" if base else url), f"{w['alert']}: runbook_url")
            ensure({k: v for k, v in g["annotations"].items() if k != "runbook_url"}
                   == {k: v for k, v in w["annotations"].items() if k != "runbook_url"}, f"{w['alert']}: annotations")
        ensure(any(pods in r["expr"] for r in got), "no kube-state-metrics rule narrowed to the release's pods")
        # The rendered groups are a valid rule file.
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump({"groups": pr["spec"]["groups"]}, f)
        try:
            out = subprocess.run([promtool(), "check", "rules", f.name], capture_output=True, text=True)
        finally:
            os.unlink(f.name)
        ensure(out.returncode == 0, f"promtool check rules on the PrometheusRule: {out.stdout}{out.stderr}")
        done.append(f"PrometheusRule: the {len(got)} rules of {RULES}, pods narrowed to {fullname}-*, "
                    "runbook URLs prefixed, promtool check rules passes")
    gd_values = merged.get("grafanaDashboard") or {}
    maps = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    ensure(bool(maps) == bool(gd_values.get("enabled")), "dashboard ConfigMap against grafanaDashboard.enabled")
    if maps:
        cm = maps[0]
        labels = cm["metadata"]["labels"]
        ensure(labels.get(gd_values["label"]) == str(gd_values["labelValue"]), "dashboard ConfigMap lacks the sidecar label")
        for key, value in (gd_values.get("additionalLabels") or {}).items():
            ensure(labels.get(key) == value, f"grafanaDashboard.additionalLabels.{key} missing")
        for key, value in (gd_values.get("annotations") or {}).items():
            ensure(cm["metadata"].get("annotations", {}).get(key) == value, f"grafanaDashboard.annotations.{key} missing")
        with open(DASHBOARD, encoding="utf-8") as f:
            ensure(json.loads(cm["data"]["port-agent.json"]) == json.load(f), f"the ConfigMap's dashboard differs from {DASHBOARD}")
        done.append(f"dashboard ConfigMap {cm['metadata']['name']} with {gd_values['label']}={gd_values['labelValue']}")
    return done


# --------------------------------------------------------------------------
# alert rules and dashboard expressions
# --------------------------------------------------------------------------

def promtool() -> str:
    path = os.environ.get("PROMTOOL") or shutil.which("promtool")
    ensure(bool(path), "promtool not found (validate.sh installs Debian's prometheus package)")
    return path


def dashboard_exprs() -> list[tuple[str, str]]:
    """(where, PromQL) of every query in the dashboard, Grafana's variables
    replaced by values Prometheus accepts; label_values() variable queries
    give their series selector."""
    with open(DASHBOARD, encoding="utf-8") as f:
        dash = json.load(f)
    subst = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
    for var in dash["templating"]["list"]:
        subst[f"${var['name']}"] = ".*"

    def fill(expr: str) -> str:
        for key in sorted(subst, key=len, reverse=True):
            expr = expr.replace(key, subst[key])
        return expr

    out = []

    def walk(panels: list[dict]) -> None:
        for p in panels:
            walk(p.get("panels", []))
            for t in p.get("targets", []):
                out.append((f"panel {p['title']!r} {t['refId']}", fill(t["expr"])))
    walk(dash["panels"])
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            inner = q[len("label_values("):].rsplit(",", 1)[0] if q.startswith("label_values(") else q
            out.append((f"variable {var['name']}", fill(inner)))
    ensure(out, "the dashboard has no queries")
    return out


PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
                "group_left", "group_right", "inf", "nan", "atan2", "start", "end"}


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers that are not
    functions, keywords, label names or durations."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", e):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def cmd_promql(scrape_dir: str) -> None:
    # Metric names the built binary exported: start-up scrape and after
    # traffic (Kafka), and a polling agent's scrape.
    exported: set[str] = set()
    for name in ("startup.prom", "traffic.prom", "polling.prom"):
        path = os.path.join(scrape_dir, name)
        ensure(os.path.exists(path), f"{path} is missing: run cargo test --test it metrics_scrape::")
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip() and not line.startswith("#"):
                    exported.add(line.split("{")[0].split()[0])
    families = {n.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count") for n in exported}
    print(f"  {len(exported)} metric names in the scrape of the built binary ({scrape_dir})")

    with open(RULES, encoding="utf-8") as f:
        rules = [r for g in yaml.safe_load(f)["groups"] for r in g["rules"]]
    exprs = [(f"alert {r['alert']}", r["expr"]) for r in rules] + dashboard_exprs()

    # promtool parses each expression: every one becomes a recording rule.
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump({"groups": [{"name": "expressions", "rules": [
            {"record": f"check:expression_{i}", "expr": e} for i, (_, e) in enumerate(exprs)]}]}, f)
    try:
        out = subprocess.run([promtool(), "check", "rules", f.name], capture_output=True, text=True)
    finally:
        os.unlink(f.name)
    ensure(out.returncode == 0, f"promtool check rules rejects an expression:\n{out.stdout}{out.stderr}")
    print(f"  promtool parses all {len(exprs)} expressions ({len(rules)} alerts, {len(exprs) - len(rules)} dashboard queries)")

    used: set[str] = set()
    for where, e in exprs:
        names = metric_names(e)
        ensure(names, f"{where}: no metric name found in {e!r}")
        unknown = sorted(n for n in names if n not in exported and n not in KUBE_STATE_METRICS)
        ensure(not unknown, f"{where}: {unknown} not exported by the agent (scrape: {sorted(exported)})")
        if where.startswith("alert ") and names & KUBE_STATE_METRICS:
            rule = next(r for r in rules if f"alert {r['alert']}" == where)
            ensure("kube-state-metrics" in rule["annotations"]["description"],
                   f"{where} uses kube-state-metrics but its description does not say so")
        used |= names
    print(f"  every expression names only exported metrics (or kube-state-metrics' {len(KUBE_STATE_METRICS)}, said in the rule)")

    dash_used = set().union(*(metric_names(e) for w, e in exprs if not w.startswith("alert ")))
    dash_families = {n.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count") for n in dash_used}
    missing = sorted(families - dash_families)
    ensure(not missing, f"exported but on no dashboard panel: {missing}")
    print(f"  every exported family ({len(families)}) has a dashboard panel")

    # Each rule's runbook_url names a section of the runbook.
    with open(RUNBOOK, encoding="utf-8") as f:
        runbook = f.read()
    anchors = {re.sub(r"[^a-z0-9 _-]", "", h.strip("# ").lower()).replace(" ", "-")
               for h in runbook.splitlines() if h.startswith("#")}
    broken = sorted(set(re.findall(r"\]\(#([^)]+)\)", runbook)) - anchors)
    ensure(not broken, f"{RUNBOOK} links to sections it does not have: {broken}")
    for r in rules:
        url = r["annotations"]["runbook_url"]
        ensure(url.startswith(RUNBOOK + "#") and url.split("#", 1)[1] in anchors,
               f"alert {r['alert']}: runbook_url {url} names no heading of {RUNBOOK}")
        for key in ("summary", "description"):
            ensure(r["annotations"].get(key), f"alert {r['alert']} has no {key}")
    print(f"  every alert has a summary, a description and a runbook_url naming a section of {RUNBOOK}")


# --------------------------------------------------------------------------
# migration from Port's chart
# --------------------------------------------------------------------------

def load_migration() -> dict:
    with open(MIGRATION, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def mounted_source(volume: dict, sub_path: str | None) -> Any:
    """What a mount puts at its path: {configMap|secret: name, key: k}, or the volume's source."""
    source = {k: v for k, v in volume.items() if k != "name"}
    projected = (source.get("projected") or {}).get("sources") or []
    if len(projected) == 1:
        source = projected[0]
    for kind, name_key in (("configMap", "name"), ("secret", "secretName")):
        if kind in source:
            ref = source[kind] or {}
            items = {i["path"]: i["key"] for i in ref.get("items") or []}
            key = items.get(sub_path) if items else sub_path
            return {kind: ref.get(name_key) or ref.get("name"), "key": key}
    return source


def facts(docs: list[dict]) -> dict:
    """The facts a helm upgrade between the two charts depends on (see MIGRATION)."""
    deployment = one(docs, "Deployment")
    template = deployment["spec"]["template"]
    pod = template["spec"]
    ensure(len(pod["containers"]) == 1, "expected exactly one container")
    c = pod["containers"][0]
    env: dict[str, Any] = {}
    for e in c.get("env") or []:
        source = e.get("valueFrom")
        if source is None:
            env[e["name"]] = {"value": "" if e.get("value") is None else str(e["value"])}
        elif "secretKeyRef" in source:
            env[e["name"]] = {"secretKeyRef": {"name": source["secretKeyRef"]["name"], "key": source["secretKeyRef"]["key"]}}
        else:
            env[e["name"]] = {"valueFrom": source}
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    return {
        "deployment": {
            "name": deployment["metadata"]["name"],
            "selector": deployment["spec"]["selector"]["matchLabels"],
            "container": c["name"],
        },
        "podLabels": {k: v for k, v in (template["metadata"].get("labels") or {}).items()
                      if k not in ("helm.sh/chart", "app.kubernetes.io/version")},
        "secrets": {d["metadata"]["name"]: {"type": d.get("type"), "keys": sorted((d.get("data") or {}).keys())}
                    for d in by_kind(docs, "Secret")},
        "configMaps": {d["metadata"]["name"]: sorted((d.get("data") or {}).keys()) for d in by_kind(docs, "ConfigMap")},
        "env": env,
        "envFrom": [{"secretRef": s["secretRef"]["name"]} if "secretRef" in s else s for s in c.get("envFrom") or []],
        "mounts": {m["mountPath"]: mounted_source(volumes.get(m["name"], {}), m.get("subPath"))
                   for m in c.get("volumeMounts") or []},
        "podSecurityContext": pod.get("securityContext") or {},
        "containerSecurityContext": c.get("securityContext") or {},
        # Only compared through the fixture's `differences`.
        "resources": c.get("resources") or {},
        "probes": {p: c[p].get("httpGet", {}).get("path") for p in ("livenessProbe", "readinessProbe") if c.get(p)},
        "automountServiceAccountToken": pod.get("automountServiceAccountToken"),
        "tmp": mounted_source(volumes.get(next((m["name"] for m in c.get("volumeMounts") or []
                                                if m["mountPath"] == "/tmp"), ""), {}), None) or None,
    }


def check_differences(side: str, case: str, got: dict) -> list[str]:
    """The documented differences, for the case they are recorded for."""
    diff = load_migration()["differences"]
    if diff["case"] != case:
        return []
    return [f"{key}: the fixture says {side} renders {want!r}, it renders {got[key]!r}"
            for key, want in diff[side].items() if got[key] != want]


def compare_with_port(expect: dict, ours: dict) -> list[str]:
    """Every way our rendering would break a helm upgrade of a Port release, or behave differently."""
    problems: list[str] = []

    def same(what: str, want: Any, got: Any) -> None:
        if want != got:
            problems.append(f"{what}: Port's chart renders {want!r}, ours {got!r}")

    for key in ("name", "selector", "container"):
        same(f"Deployment {key}" + (" (immutable)" if key == "selector" else ""),
             expect["deployment"][key], ours["deployment"][key])
    for key, value in expect["podLabels"].items():
        same(f"pod label {key}", value, ours["podLabels"].get(key))
    for name, secret in expect["secrets"].items():
        got = ours["secrets"].get(name)
        if got is None:
            problems.append(f"Secret {name}: Port's chart renders it, ours does not")
            continue
        same(f"Secret {name} type (immutable)", secret["type"], got["type"])
        same(f"Secret {name} keys", sorted(secret["keys"]), got["keys"])
    for name in ours["secrets"]:
        if name not in expect["secrets"]:
            problems.append(f"Secret {name}: ours renders it, Port's chart does not")
    same("ConfigMaps (name: keys)", expect["configMaps"], ours["configMaps"])
    for name, source in expect["env"].items():
        same(f"env {name}", source, ours["env"].get(name))
    for source in expect["envFrom"]:
        if source not in ours["envFrom"]:
            problems.append(f"envFrom {source}: Port's pod has it, ours does not")
    for path, source in expect["mounts"].items():
        same(f"mount at {path}", source, ours["mounts"].get(path))
    for ctx in ("podSecurityContext", "containerSecurityContext"):
        for key, value in expect[ctx].items():
            same(f"{ctx}.{key}", value, ours[ctx].get(key))
    return problems


def cmd_migrate(case: str, outdir: str) -> None:
    """Lint, render and compare with Port's chart for one Port-style values file."""
    spec = load_migration()
    release = spec["release"]
    expect = spec["cases"][case]["expect"]
    args = spec["cases"][case]["args"]
    report = helm.lint(CHART, user_values(args), strict=True, namespace=spec["namespace"])
    lint_problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    lint_problems += [{"error": e} for e in report.get("errors", [])]
    ensure(not lint_problems, "helm lint --strict: " + "; ".join(str(p.get("error")) for p in lint_problems))
    print(f"  ok: helm lint --strict ({len(report.get('messages', []))} informational message(s))")
    merged, manifests = render(args, release=release)
    written = write_rendering(outdir, merged, manifests, release=release)
    print(f"  ok: rendered {', '.join(os.path.basename(w) for w in written)}")
    for line in check_rendering(case, outdir):
        print(f"  ok: {line}")
    ours = facts(manifest_docs(manifests))
    problems = compare_with_port(expect, ours) + check_differences("ours", case, ours)
    ensure(not problems, f"differs from Port's chart {spec['version']}:\n    " + "\n    ".join(problems))
    print(f"  ok: as Port's chart {spec['version']} renders: Deployment {expect['deployment']['name']} and its selector, "
          f"{len(expect['secrets'])} Secret(s) and their type, {len(expect['env'])} env var(s), "
          f"{len(expect['mounts'])} mount path(s), {len(expect['podLabels'])} pod label(s)")


def cmd_port_facts(port_chart: str) -> None:
    """Render each migration case with a checkout of Port's chart and compare with the fixture."""
    spec = load_migration()
    bad = 0
    for case, entry in spec["cases"].items():
        _, manifests = render(entry["args"], release=spec["release"], chart_dir=port_chart)
        got = facts(manifest_docs(manifests))
        want = entry["expect"]
        diffs = [k for k in want if want[k] != got[k]]
        documented = check_differences("port", case, got)
        if diffs or documented:
            bad += 1
            print(f"  {case}: the fixture differs from {port_chart} in {', '.join(diffs + ['differences'] * bool(documented))}")
            for k in diffs:
                print(f"    {k}: fixture {json.dumps(want[k], sort_keys=True)}")
                print(f"    {k}: chart   {json.dumps(got[k], sort_keys=True)}")
            for problem in documented:
                print(f"    {problem}")
        else:
            print(f"  {case}: the fixture matches {port_chart}")
    ensure(bad == 0, f"{bad} case(s) differ")


# --------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------

def cmd_lint() -> None:
    for case in ("default", "port-compatible", "all-features"):
        report = helm.lint(CHART, user_values(CASES[case]), strict=True, namespace=NAMESPACE)
        problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
        problems += [{"error": e} for e in report.get("errors", [])]
        ensure(not problems, f"helm lint ({case}): " + "; ".join(str(p.get("error")) for p in problems))
        print(f"  helm lint --strict ({case}): {len(report.get('messages', []))} informational message(s)")


def cmd_render(case: str, outdir: str) -> None:
    merged, manifests = render(CASES[case])
    written = write_rendering(outdir, merged, manifests)
    print(f"  rendered {case}: {', '.join(os.path.basename(w) for w in written)}")


def cmd_check(case: str, outdir: str) -> None:
    for line in check_rendering(case, outdir):
        print(f"  ok: {line}")


def cmd_reject() -> None:
    for what, (args, reason) in REJECT.items():
        try:
            render(PORT_COMPAT_SETS + args)
        except helm.HelmError as err:
            detail = " ".join(str(err).split()) or type(err).__name__
            ensure(reason in detail, f"{what}: refused, but not because of {reason!r}: {detail}")
            print(f"  refused: {what}: {detail[:160]}")
            continue
        raise CheckError(f"values accepted although they must be refused: {what} ({' '.join(args)})")


def cmd_rollout() -> None:
    """A change of the mapping or of the credentials changes the pod template."""
    def annotations(extra: list[str]) -> dict:
        _, manifests = render(CASES["port-compatible"] + extra)
        dep = next(d for p, t in manifests.items() if p.endswith("deployment.yaml") for d in yaml.safe_load_all(t) if d)
        return dep["spec"]["template"]["metadata"]["annotations"]

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        fh.write('[{"enabled": true, "url": "\\"http://other.internal/\\""}]')
        other = fh.name
    try:
        for reload in ("false", "true"):
            flag = ["--set", f"mappingReload={reload}"]
            base = annotations(flag)
            mapping = annotations(flag + ["--set-file", f"controlThePayloadConfig={other}"])
            secret = annotations(flag + ["--set", "env.secret.PORT_CLIENT_SECRET=rotated"])
            again = annotations(flag)
            ensure(base == again, "the checksums are not stable across identical renders")
            ensure(mapping["checksum/secret"] == base["checksum/secret"], "a mapping change changes checksum/secret")
            ensure(secret["checksum/secret"] != base["checksum/secret"], "a secret change does not change checksum/secret")
            if reload == "false":
                ensure(mapping["checksum/mapping"] != base["checksum/mapping"],
                       "mappingReload=false: a mapping change does not change checksum/mapping")
            else:
                ensure(mapping == base, "mappingReload=true: a mapping change changes the pod template (rolls the pods)")
    finally:
        os.unlink(other)
    print("  ok: mappingReload=false: mapping change -> new checksum/mapping; mappingReload=true: the pods do not roll;"
          " secret change -> new checksum/secret; stable otherwise")


def jq(expr: str, data: Any, env: dict[str, str] | None = None) -> Any:
    out = subprocess.run(["jq", "-c", expr], input=json.dumps(data), capture_output=True, text=True, check=False,
                         env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})})
    ensure(out.returncode == 0, f"jq failed on {expr!r}: {out.stderr.strip()}")
    first = out.stdout.splitlines()[0] if out.stdout.strip() else "null"
    return json.loads(first)


def cmd_mapping_jq() -> None:
    """The demo mapping, run by the jq binary against the demo message."""
    with open(MAPPING, encoding="utf-8") as fh:
        mappings = json.load(fh)
    with open("deploy/compose/sample-run.json", encoding="utf-8") as fh:
        message = json.load(fh)
    message["headers"].pop("X-Port-Signature")
    message["headers"].pop("X-Port-Timestamp")
    first = mappings[0]
    ensure(jq(first["enabled"], message) is True, "the demo mapping does not select the sample run")
    other = json.loads(json.dumps(message))
    other["payload"]["action"]["invocationMethod"]["url"] = "http://elsewhere:8000/x"
    ensure(jq(first["enabled"], other) is False, "the demo mapping selects a run for another service")
    ensure(mappings[-1] == {"enabled": True}, "the demo mapping does not end with the catch-all")
    body = {k: jq(v, message) for k, v in first["body"].items()}
    ensure(body == {"runId": "r_demo0001", "service": "svc-demo", "version": "1.2.3",
                    "environment": "staging", "requestedBy": "u_demo"}, f"unexpected body {body}")
    headers = {k: jq(v, message) for k, v in first["headers"].items()}
    ensure(headers == {"X-Demo-Run-Id": "r_demo0001"}, f"unexpected headers {headers}")
    ensure(jq(first["method"], message) == "POST", "method")
    report_input = {
        "body": message,
        "request": {"method": "POST", "url": "http://example-service:8000/deploy", "body": body, "headers": headers, "query": {}},
        "response": {"statusCode": 200, "headers": {}, "text": "",
                     "json": {"status": "deployed", "deploymentId": "dep-r_demo0001"}},
    }
    report = {k: jq(v, report_input) for k, v in first["report"].items()}
    ensure(report == {
        "status": "SUCCESS",
        "summary": "Deployed svc-demo 1.2.3 to staging",
        "link": "http://example-service:8000/deployments/dep-r_demo0001",
        "externalRunId": "dep-r_demo0001",
    }, f"unexpected report {report}")
    print("  ok: the demo mapping selects the sample run and builds the expected request and report")
    image_mapping_jq()


def image_mapping_jq() -> None:
    """The image's default mapping under the jq binary (the Python agent's engine is
    libjq): the same message, environment and expectations as the Rust test
    image_default_mapping_gitlab in tests/it/mappings.rs."""
    with open(IMAGE_MAPPING, encoding="utf-8") as fh:
        gitlab, catch_all = json.load(fh)
    message = {
        "action": "deploy_service", "resourceType": "run", "status": "TRIGGERED",
        "trigger": {"by": {"orgId": "org_1", "userId": "u_1"}, "origin": "UI", "at": "2026-11-01T12:00:00.000Z"},
        "context": {"entity": "svc-a", "blueprint": "microservice", "runId": "r_gl2"},
        "payload": {
            "entity": {"identifier": "svc-a", "properties": {"region": "eu-west-1"}},
            "action": {"invocationMethod": {"type": "GITLAB", "agent": True, "synchronized": False,
                                            "groupName": "acme/platform", "projectName": "svc-a",
                                            "defaultRef": "develop", "omitUserInputs": False, "omitPayload": False}},
            "properties": {"version": "1.2.3", "replicas": 3, "flags": {"dry": True}},
        },
    }
    env = {"GITLAB_URL": "https://gitlab.example.com/", "acme_platform_svc-a": "trig-tok",
           "acme-platform_svc-a": "not-this-one"}
    ensure(jq(gitlab["enabled"], message) is True, "the GitLab entry does not select a GITLAB invocation")
    url = jq(gitlab["url"], message, env)
    ensure(url == "https://gitlab.example.com/api/v4/projects/acme%2Fplatform%2Fsvc-a/trigger/pipeline", f"url {url}")
    body = {k: jq(v, message, env) for k, v in gitlab["body"].items()}
    want = {"ref": "develop", "token": "trig-tok",
            "variables": {"version": "1.2.3", "replicas": "3", "flags": '{"dry":true}'}, "port_payload": message}
    ensure(body == want, f"unexpected body {body}")
    response = {"statusCode": 201, "headers": {}, "text": "",
                "json": {"id": 991, "web_url": "https://gitlab.example.com/acme/platform/svc-a/-/pipelines/991"}}
    report = {k: jq(v, {"body": message, "request": {}, "response": response}) for k, v in gitlab["report"].items()}
    ensure(report == {"link": "https://gitlab.example.com/acme/platform/svc-a/-/pipelines/991", "externalRunId": "991"},
           f"unexpected report {report}")
    webhook = json.loads(json.dumps(message))
    webhook["payload"]["action"]["invocationMethod"] = {"type": "WEBHOOK", "agent": True, "synchronized": True,
                                                        "method": "PUT", "url": "http://hooks.internal/deploy"}
    ensure(jq(gitlab["enabled"], webhook) is False, "the GitLab entry selects a WEBHOOK invocation")
    ensure(jq(catch_all["url"], webhook) == "http://hooks.internal/deploy", "the catch-all's url")
    ensure(jq(catch_all["method"], webhook) == "PUT", "the catch-all's method")
    print("  ok: the image's default mapping under jq: a GITLAB run triggers the pipeline as tests/it/mappings.rs expects; "
          "a WEBHOOK run goes to the catch-all")


def cmd_image() -> None:
    """Facts about the Dockerfile and its build context that hadolint does not check."""
    with open("Dockerfile", encoding="utf-8") as fh:
        lines = [l.strip() for l in fh if l.strip() and not l.lstrip().startswith("#")]
    froms = [l for l in lines if l.upper().startswith("FROM ")]
    ensure(len(froms) >= 2, "the Dockerfile is not multi-stage")
    ensure(froms[0].split()[1] == "rust:1-bookworm", "the builder is not rust:1-bookworm")
    ensure(any("cargo build --release --locked" in l for l in lines), "the build step is not `cargo build --release --locked`")
    last = lines[lines.index(froms[-1]):]
    ensure("USER 1000:1000" in last, "the final stage does not run as uid 1000")
    ensure("WORKDIR /app" in last, "the final stage's working directory is not /app")
    ensure("EXPOSE 8080" in last, "the final stage does not EXPOSE 8080")
    ensure('ENTRYPOINT ["/usr/local/bin/port-agent"]' in last, "the entrypoint is not the binary")
    ensure(any(l.startswith(f"COPY {IMAGE_MAPPING} /app/control_the_payload_config.json") for l in last),
           "the default mapping is not copied to /app/control_the_payload_config.json")
    with open(IMAGE_MAPPING, encoding="utf-8") as fh:
        default = json.load(fh)
    ensure(len(default) == 2 and default[0]["enabled"] == '.payload.action.invocationMethod.type == "GITLAB"',
           f"{IMAGE_MAPPING} does not start with Port's GitLab mapping")
    ensure(default[1]["enabled"] is True, f"{IMAGE_MAPPING} does not end with the catch-all")
    with open(IMAGE_MAPPING, "rb") as fh:
        ensure(hashlib.sha256(fh.read()).hexdigest() == PORT_IMAGE_MAPPING_SHA256,
               f"{IMAGE_MAPPING} is no longer the same file as Port's image default")
    with open(".dockerignore", encoding="utf-8") as fh:
        ignored = {l.strip().rstrip("/") for l in fh if l.strip() and not l.startswith("#")}
    ensure({"target", ".git"} <= ignored, ".dockerignore does not exclude target/ and .git")
    for needed in ("src", "Cargo.toml", "Cargo.lock", "deploy", "deploy/control_the_payload_config.json", "tests", "benches"):
        ensure(needed not in ignored, f".dockerignore excludes {needed}, which the build needs")
    print("  ok: multi-stage, cargo build --release --locked, uid 1000, /app, EXPOSE 8080, default mapping, .dockerignore")


def cmd_compose() -> None:
    """The demo's wiring: what `docker compose config` cannot know."""
    sys.dont_write_bytecode = True
    sys.path.insert(0, "deploy/compose")
    import sign_message  # noqa: E402 - the demo's own signing helper

    with open("docker-compose.yml", encoding="utf-8") as fh:
        compose = yaml.safe_load(fh)
    services = compose["services"]
    for name in ("kafka", "create-topics", "port-api", "example-service", "agent", "produce-sample"):
        ensure(name in services, f"service {name} missing")
    ensure(services["kafka"]["image"].startswith("apache/kafka:"), "Kafka is not apache/kafka")
    ensure("controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"], "Kafka is not in KRaft mode")
    agent = services["agent"]
    env = {k: str(v) for k, v in agent["environment"].items()}
    ensure(agent["build"]["dockerfile"] == "Dockerfile" and agent["build"]["context"] == ".", "the agent is not built from the Dockerfile")
    ensure(env["USING_LOCAL_PORT_INSTANCE"] == "true", "the agent is not in local mode")
    ensure(env["KAFKA_CONSUMER_BOOTSTRAP_SERVERS"] == "kafka:9092", "the agent does not use the compose Kafka")
    org = env["PORT_ORG_ID"]
    ensure(org == "org_demo", "PORT_ORG_ID is not org_demo")
    ensure(env["KAFKA_CONSUMER_GROUP_ID"] == f"{org}.agent", "the consumer group is not org_demo.agent")
    ensure(env["PORT_API_BASE_URL"] == "http://port-api:8000", "PORT_API_BASE_URL does not point at the stand-in")
    ensure(env["PORT_CLIENT_SECRET"] == sign_message.DEMO_SECRET, "the agent's secret is not the demo secret")
    ensure(str(services["example-service"]["environment"]["PORT_CLIENT_SECRET"]) == sign_message.DEMO_SECRET,
           "the example service checks signatures with another secret")
    topics_script = " ".join(services["create-topics"]["command"])
    for topic in (f"{org}.runs", f"{org}.change.log"):
        ensure(topic in topics_script, f"topic {topic} is not created")
    ensure(f"--topic {org}.runs" in " ".join(services["produce-sample"]["command"]), "the sample is not produced to the runs topic")
    # Every bind-mounted file exists; the mapping is mounted where the agent reads it.
    mounted = {}
    for svc in services.values():
        for vol in svc.get("volumes", []):
            src, dst = vol.split(":")[:2]
            ensure(os.path.isfile(src), f"bind-mounted file {src} does not exist")
            mounted[dst] = src
    ensure(mounted.get(env["CONTROL_THE_PAYLOAD_CONFIG_PATH"]) == f"./{MAPPING}",
           "CONTROL_THE_PAYLOAD_CONFIG_PATH does not name the mounted demo mapping")
    # The sample: one line, signed with the demo secret, aimed at the example service.
    with open("deploy/compose/sample-run.json", encoding="utf-8") as fh:
        text = fh.read()
    ensure(text.count("\n") == 1 and text.endswith("\n"), "sample-run.json is not exactly one line")
    message = json.loads(text)
    headers = message["headers"]
    want = sign_message.signature(sign_message.DEMO_SECRET, headers["X-Port-Timestamp"], sign_message.signed_text(message))
    ensure(headers["X-Port-Signature"] == want, "sample-run.json's signature does not verify with the demo secret")
    ensure(sign_message.signed_text(message).endswith('"headers":{}}'), "the signed text does not keep an empty headers object")
    im = message["payload"]["action"]["invocationMethod"]
    ensure(im["agent"] is True and im["url"] == "http://example-service:8000/deploy", "the sample's invocation method")
    ensure(str(services["example-service"]["environment"]["PORT"]) == "8000", "the example service does not listen on 8000")
    print(f"  ok: services, local mode, topics {org}.runs/{org}.change.log, mounts, signed sample run {message['context']['runId']}")


def main(argv: list[str]) -> int:
    if helm is None and argv[:1] not in (["mapping-jq"], ["image"], ["compose"], ["cases"], ["migration-cases"], ["promql"]):
        print("helm-python-sdk is not installed (pip install helm-python-sdk)", file=sys.stderr)
        return 2
    try:
        if argv[:1] == ["lint"]:
            cmd_lint()
        elif argv[:1] == ["render"] and len(argv) == 3:
            cmd_render(argv[1], argv[2])
        elif argv[:1] == ["check"] and len(argv) == 3:
            cmd_check(argv[1], argv[2])
        elif argv[:1] == ["reject"]:
            cmd_reject()
        elif argv[:1] == ["rollout"]:
            cmd_rollout()
        elif argv[:1] == ["mapping-jq"]:
            cmd_mapping_jq()
        elif argv[:1] == ["image"]:
            cmd_image()
        elif argv[:1] == ["compose"]:
            cmd_compose()
        elif argv[:1] == ["cases"]:
            print(" ".join(CASES))
        elif argv[:1] == ["migration-cases"]:
            print(" ".join(load_migration()["cases"]))
        elif argv[:1] == ["migrate"] and len(argv) == 3:
            cmd_migrate(argv[1], argv[2])
        elif argv[:1] == ["promql"] and len(argv) == 2:
            cmd_promql(argv[1])
        elif argv[:1] == ["port-facts"] and len(argv) == 2:
            cmd_port_facts(argv[1])
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except CheckError as err:
        print(f"  FAILED: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # helm errors, YAML errors, missing files
        print(f"  FAILED: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
