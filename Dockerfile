# vrata's container images, one target per component (docker-compose.yml builds each):
#   docker build --target xds-server -t vrata/xds-server .
#   docker build --target ext-authz -t vrata/ext-authz .
#   docker build --target ratelimit-service -t vrata/ratelimit-service .
#   docker build --target response-cache -t vrata/response-cache .
#   docker build --target demo-upstream -t vrata/demo-upstream .
# One build stage compiles the whole workspace once (release, Cargo.lock as committed); each
# target is a small Debian image with one binary, running as an unprivileged user. curl is there
# for the health checks (`/readyz` on the admin port).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
      -p vrata-xds -p vrata-ext-authz -p vrata-ratelimit -p vrata-response-cache -p vrata-e2e --bins \
 && mkdir /out \
 && cp target/release/xds-server target/release/ext-authz target/release/ratelimit-service \
       target/release/response-cache target/release/demo-upstream /out/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home vrata
USER vrata

FROM runtime AS xds-server
COPY --from=build /out/xds-server /usr/local/bin/
ENTRYPOINT ["xds-server"]

FROM runtime AS ext-authz
COPY --from=build /out/ext-authz /usr/local/bin/
ENTRYPOINT ["ext-authz"]

FROM runtime AS ratelimit-service
COPY --from=build /out/ratelimit-service /usr/local/bin/
ENTRYPOINT ["ratelimit-service"]

FROM runtime AS response-cache
COPY --from=build /out/response-cache /usr/local/bin/
ENTRYPOINT ["response-cache"]

FROM runtime AS demo-upstream
COPY --from=build /out/demo-upstream /usr/local/bin/
ENTRYPOINT ["demo-upstream"]
