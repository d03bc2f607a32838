# syntax=docker/dockerfile:1
#
# The four binaries of the split deployment, one small runtime image each:
#
#   docker build --target chat-manager    -t chat-manager .
#   docker build --target message-manager -t message-manager .
#   docker build --target webhook-manager -t webhook-manager .
#   docker build --target api-gateway     -t api-gateway .      # also the default target
#
# The build needs no protoc, libpq or SQLite on the system (a pure-Rust proto compiler;
# libpq and SQLite are built from bundled sources). BuildKit (the default builder since
# Docker 23) keeps cargo's registry and target directory in cache mounts, so a rebuild after
# a source change recompiles only the workspace crates, not the dependencies.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p chat-manager -p message-manager -p webhook-manager -p api-gateway \
    && mkdir -p /out \
    && cp target/release/chat-manager target/release/message-manager target/release/webhook-manager \
        target/release/api-gateway /out/

# What every runtime image shares: CA certificates only (no compilers, no package lists; the
# system CAs also verify customers' webhook receivers over HTTPS, in webhook-manager's image),
# and a fixed non-root user (numeric, so Kubernetes' runAsNonRoot can verify it).
FROM debian:bookworm-slim AS runtime-base
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 chat \
    && useradd --system --uid 10001 --gid chat --home-dir /var/lib/chat --create-home \
        --shell /usr/sbin/nologin chat
# The working directory is the user's: the gateway's embedded default (no upstream URLs)
# keeps its data in ./data there. The split deployment writes nothing to disk.
WORKDIR /var/lib/chat
USER 10001:10001
# Two glibc malloc arenas instead of one per thread (up to 8 per core): under load the services
# then hold 40 to 50 MiB instead of 60 to 70, at the same throughput (BENCHMARKS.md).
ENV MALLOC_ARENA_MAX=2

FROM runtime-base AS chat-manager
COPY --from=builder /out/chat-manager /usr/local/bin/chat-manager
ENV LISTEN_ADDR=0.0.0.0:9001
EXPOSE 9001 9101
ENTRYPOINT ["chat-manager"]

FROM runtime-base AS message-manager
COPY --from=builder /out/message-manager /usr/local/bin/message-manager
ENV LISTEN_ADDR=0.0.0.0:9002
EXPOSE 9002 9102
ENTRYPOINT ["message-manager"]

FROM runtime-base AS webhook-manager
COPY --from=builder /out/webhook-manager /usr/local/bin/webhook-manager
ENV LISTEN_ADDR=0.0.0.0:9003
EXPOSE 9003 9103
ENTRYPOINT ["webhook-manager"]

# Last, so a plain `docker build .` gives the gateway (which alone runs the embedded default:
# `docker run -p 8080:8080 <image>`).
FROM runtime-base AS api-gateway
COPY --from=builder /out/api-gateway /usr/local/bin/api-gateway
ENV LISTEN_ADDR=0.0.0.0:8080
EXPOSE 8080 9100
ENTRYPOINT ["api-gateway"]
