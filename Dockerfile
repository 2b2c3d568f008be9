# syntax=docker/dockerfile:1
# tollgate image: a static-ish Rust binary on distroless, running as a non-root user, no shell.
#   docker build -t tollgate:0.1.0 .

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The whole tree, .cargo/config.toml included (--cfg tokio_unstable: see README, Layout).
COPY . .
# Cache mounts keep the registry and build artefacts between builds; --locked builds Cargo.lock.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && cp target/release/tollgate /tollgate

# glibc and libgcc, CA certificates, no shell or package manager; user 65532 ("nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /tollgate /usr/local/bin/tollgate
USER 65532:65532
# ext_authz and health; Prometheus metrics. The admin API stays on loopback (9192).
EXPOSE 9191 9090
ENTRYPOINT ["/usr/local/bin/tollgate"]
