# The Strongroom server image, for builders with Docker. scripts/build-image.sh
# builds the same image without a daemon (umoci), as CI does.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p examples --bin strongroom \
 && install -d -o 100 -g 1000 /out/vault/data /out/home/vault \
 && install -d /out/vault/config

# glibc, libgcc_s and CA certificates; nothing else (no shell).
FROM gcr.io/distroless/cc-debian12
COPY --from=build /src/target/release/strongroom /usr/local/bin/strongroom
COPY --from=build /out/ /
ENV HOME=/home/vault
WORKDIR /home/vault
USER 100:1000
EXPOSE 8200 8201
VOLUME /vault/data
ENTRYPOINT ["/usr/local/bin/strongroom", "server"]
CMD ["-config=/vault/config/strongroom.hcl"]
