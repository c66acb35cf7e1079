# rowsync container image: built from this repository, runs `rowsync` with the arguments given.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY web-ui ./web-ui
RUN cargo build --release --locked --bin rowsync

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/rowsync /usr/local/bin/rowsync
# The state store's directory; a named volume mounted here keeps this ownership.
RUN mkdir -p /var/lib/rowsync && chown 65534:65534 /var/lib/rowsync
USER 65534:65534
# The admin UI, API and /metrics (`[admin] listen`).
EXPOSE 8080
ENTRYPOINT ["rowsync"]
CMD ["run", "--config", "/etc/rowsync/rowsync.toml"]
