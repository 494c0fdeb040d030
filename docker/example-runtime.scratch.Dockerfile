# The example function runtime, statically linked, FROM scratch (scripts/build-images.sh).
FROM scratch
COPY nanofaas-example-runtime /nanofaas-example-runtime
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/nanofaas-example-runtime"]
