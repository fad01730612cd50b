# port-agent container image.
#
#   docker build -t port-agent .
#   docker run --rm -e PORT_ORG_ID=... -e PORT_CLIENT_ID=... -e PORT_CLIENT_SECRET=... \
#       -e KAFKA_CONSUMER_GROUP_ID=... -p 8080:8080 port-agent
#
# Stage 1 builds the release binary with the same command as the README
# (`cargo build --release --locked`). librdkafka is compiled from source by
# the rdkafka crate; rust:1-bookworm already ships everything that needs
# (a C toolchain, make, perl, python3, pkg-config, libssl-dev, zlib1g-dev).
FROM rust:1-bookworm AS builder

WORKDIR /src

# Fail early, with a readable message, if a future base image drops a tool.
RUN set -eu; \
    for tool in cc c++ make perl python3 pkg-config; do \
        command -v "$tool" >/dev/null || { echo "builder image lacks $tool" >&2; exit 1; }; \
    done; \
    pkg-config --exists openssl zlib || { echo "builder image lacks libssl-dev/zlib1g-dev" >&2; exit 1; }

COPY . .
RUN cargo build --release --locked \
    && install -D -m 0755 target/release/port-agent /out/port-agent

# Stage 2: a slim Debian with OpenSSL 3 (libssl3, linked by librdkafka) and
# the CA bundle. No shell script at start-up: the binary reads CA bundles
# (SSL_CERT_FILE / REQUESTS_CA_BUNDLE) itself.
FROM debian:bookworm-slim

LABEL org.opencontainers.image.title="port-agent" \
      org.opencontainers.image.description="Execution agent for Port: Kafka invocations to signed HTTP requests, results reported to Port" \
      org.opencontainers.image.licenses="Apache-2.0"

# Versions are not pinned on purpose: bookworm-security replaces libssl3 and
# ca-certificates in place, so an exact pin stops building (or keeps a
# vulnerable OpenSSL) after the next security update. The base image tag
# fixes the Debian release and with it the OpenSSL 3.0 ABI.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1000 port-agent \
    && useradd --uid 1000 --gid 1000 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin port-agent

WORKDIR /app

COPY --from=builder /out/port-agent /usr/local/bin/port-agent
# The default mapping, the same as Port's image ships (port-labs/port-agent
# app/control_the_payload_config.json): GITLAB invocations trigger a GitLab
# pipeline, everything else goes to the catch-all. CONTROL_THE_PAYLOAD_CONFIG_PATH
# defaults to ./control_the_payload_config.json, i.e. this file.
COPY deploy/control_the_payload_config.json /app/control_the_payload_config.json

USER 1000:1000

# AGENT_HTTP_PORT: GET /healthz, GET /readyz, GET /metrics.
EXPOSE 8080

ENTRYPOINT ["/usr/local/bin/port-agent"]
