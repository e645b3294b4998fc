FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && cp target/release/sluice /usr/local/bin/sluice

FROM debian:bookworm-slim
COPY --from=build /usr/local/bin/sluice /usr/local/bin/sluice
ENTRYPOINT ["/usr/local/bin/sluice"]
