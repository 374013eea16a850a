# syntax=docker/dockerfile:1
#
# Both Sluice binaries from one build, each in its own minimal non-root image:
#
#   docker build --target ingester -t ghcr.io/sluice-dev/sluice-ingester:0.1.0 .
#   docker build --target operator -t ghcr.io/sluice-dev/sluice-operator:0.1.0 .
#
# The image names are the Helm chart's defaults (charts/sluice/values.yaml:
# image.repository, ingesterImage.repository); the tag is the chart's appVersion.
# Needs BuildKit (the default builder of current Docker) for the cache mounts.

ARG RUST_VERSION=1.95

# ---- build: one cargo build for both binaries --------------------------------
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# protoc comes from the protoc-bin-vendored crate; no system packages needed.
# The target dir is a cache mount, so the binaries are copied out of it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p sluice-ingester -p sluice-operator --bins \
    && mkdir -p /out \
    && cp target/release/sluice-ingester target/release/sluice-operator /out/

# ---- operator ----------------------------------------------------------------
# distroless/cc: glibc and libgcc only, no shell; `nonroot` is uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS operator
LABEL org.opencontainers.image.title="sluice-operator" \
      org.opencontainers.image.description="Sluice operator: reconciles Ingester resources and drains pods before they go" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/sluice-operator /usr/local/bin/sluice-operator
USER 65532:65532
# /metrics, /health, /ready
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/sluice-operator"]
CMD ["run"]

# ---- ingester (the default target) -------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot AS ingester
LABEL org.opencontainers.image.title="sluice-ingester" \
      org.opencontainers.image.description="Sluice ingester: WAL-backed time-series ingest, Arrow Flight queries, Parquet persistence" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/sluice-ingester /usr/local/bin/sluice-ingester
USER 65532:65532
# `serve` with no arguments keeps everything under ./data: a writable home.
WORKDIR /home/nonroot
# gRPC (Write, Flight, Catalog, Control, health), HTTP (/health, /ready, /metrics, /api/v2/write)
EXPOSE 8082 8080
ENTRYPOINT ["/usr/local/bin/sluice-ingester"]
CMD ["serve"]
