# Offline image: a statically linked binary built on the host (scripts/build-images.sh), no base
# image to pull. Context: a directory holding only `nanofaas-control-plane`.
FROM scratch
COPY nanofaas-control-plane /nanofaas-control-plane
USER 65532:65532
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/nanofaas-control-plane", "healthcheck"]
ENTRYPOINT ["/nanofaas-control-plane"]
