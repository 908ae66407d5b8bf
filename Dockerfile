# syntax=docker/dockerfile:1
# The edgepm host as a container (ECS Fargate: infrastructure/cloudformation-template.yaml; any
# other runtime alike). README.md, "Deploying on AWS", builds and pushes it:
#   docker build -t edgepm:0.1.0 .
# One binary: the reference plugins (wasm32-wasip2, built by host/build.rs) and the shipped
# tenants' models are embedded in it, so the image needs nothing else.

# ---- build: the host and, through host/build.rs, the reference plugins
FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src
COPY rust-toolchain.toml ./
# The toolchain file names the target; rustup applies it only when it installs the toolchain.
RUN rustup target add wasm32-wasip2
COPY . .
# The caches keep the registry and the build between two image builds; the binary leaves the
# cached target folder in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p edgepm \
    && install -D -m 0755 target/release/edgepm /out/edgepm

# ---- runtime: glibc, the CA bundle (IoT Core's Amazon Root CA 1 is in it), one user, no shell use
FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="edgepm" \
      org.opencontainers.image.description="Edge inference host for predictive maintenance" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/edgepm /usr/local/bin/edgepm
# 10001: the user the ECS task definition and the EFS access points name.
RUN groupadd --system --gid 10001 edgepm \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --shell /usr/sbin/nologin edgepm \
    && mkdir -p /data /plugins /models /etc/edgepm \
    && chown edgepm:edgepm /data /plugins /models
USER 10001:10001
WORKDIR /data
# The store, outbox, logs and compile cache; the tenants' plugins; their models.
VOLUME ["/data", "/plugins", "/models"]
# /healthz of [http] listen (127.0.0.1:9464 by default); `edgepm healthcheck --addr` otherwise.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["edgepm", "healthcheck"]
ENTRYPOINT ["edgepm"]
# A configuration file mounted at /etc/edgepm/edgepm.toml; or the TOML itself in EDGEPM_CONFIG
# with the command `run` alone (what the ECS task definition does).
CMD ["run", "--config", "/etc/edgepm/edgepm.toml"]
