# Multi-stage build: compile in the Rust image, run in a slim Debian image as a non-root user.
FROM rust:1.95-bookworm AS build
# SAML sign-in verifies XML signatures with libxmlsec1 (samael generates its bindings with libclang).
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libxml2-dev libxmlsec1-dev libxmlsec1-openssl libssl-dev pkg-config libclang-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY .cargo .cargo
COPY src src
COPY migrations migrations
COPY schemas schemas
COPY config config
RUN cargo build --release --locked --bin scimd

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libxml2 libxmlsec1 libxmlsec1-openssl libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/scimd --create-home scimd
COPY --from=build /src/target/release/scimd /usr/local/bin/scimd
COPY config/default.toml /etc/scimd/scimd.toml
USER scimd
WORKDIR /var/lib/scimd
# The embedded database lives in the volume; use postgres://... for several instances.
ENV SCIMD_CONFIG=/etc/scimd/scimd.toml \
    SCIMD_DATABASE_URL=sqlite:///var/lib/scimd/scimd.db \
    SCIMD_BIND=0.0.0.0:8080
VOLUME /var/lib/scimd
EXPOSE 8080
ENTRYPOINT ["scimd"]
CMD ["serve"]
