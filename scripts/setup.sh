# Set-up shared by scripts/test.sh and scripts/bench.sh (sourced, not run):
# the Debian packages the build needs and the tansu broker the tests and the
# benchmark start on 127.0.0.1. Each step is skipped when already done.

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# install_packages PKG...: the build's packages (librdkafka is built from
# source by rdkafka-sys, with OpenSSL for SASL_SSL) plus the ones given.
install_packages() {
  local needed=() pkg
  for pkg in build-essential pkg-config libssl-dev zlib1g-dev "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || needed+=("$pkg")
  done
  if [ ${#needed[@]} -gt 0 ]; then
    echo "==> installing ${needed[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${needed[@]}" >/dev/null
  fi
}

# install_tansu: the real Kafka-protocol broker; `cargo install` is skipped
# when this version is installed.
TANSU_VERSION=0.6.0
install_tansu() {
  if ! cargo install --list 2>/dev/null | grep -q "^tansu v${TANSU_VERSION}:"; then
    echo "==> installing tansu ${TANSU_VERSION} (first run only; takes a while)"
    cargo install tansu --version "${TANSU_VERSION}" --locked --no-default-features --features dynostore
  fi
  export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
}
