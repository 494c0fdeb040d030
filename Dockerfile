# Production image, for machines that can pull base images.
# Build: docker build -t nanofaas/control-plane .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p nanofaas-control-plane \
 && cp target/release/nanofaas-control-plane /nanofaas-control-plane

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /nanofaas-control-plane /usr/local/bin/nanofaas-control-plane
USER nonroot:nonroot
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/nanofaas-control-plane", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/nanofaas-control-plane"]
