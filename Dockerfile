# Warren's container image: a fully static `warren` on an empty base (no shell, no libc, no package manager).
#
#   docker build -t warren .                      # builds the binary in the official Swift image (stage "build")
#   Scripts/container-test.sh                     # here: builds the binary on the host, then the image with podman
#
# Configuration: the file /etc/warren/warren.yaml (mount your own over it; `config/warren.yaml` documents every
# key) and WARREN_* environment variables, which override the file (see the README). Logs go to standard output.
# SIGTERM (docker stop / podman stop) drains: consumers cancelled, confirms sent, connections closed with 320,
# exit 0. The HEALTHCHECK asks 127.0.0.1 on WARREN_METRICS_PORT (default 15692): set that variable, not only the
# file's metrics_port, if you move the HTTP listener.

ARG SWIFT_IMAGE=swift:6.3-bookworm
# Where the binary comes from: "binary-from-build" (compiled in the Swift image) or "binary-from-host" (a static
# binary already built with `swift build -c release -Xswiftc -static-executable`, copied from the build context
# as ./warren; for machines that cannot pull the Swift image).
ARG BINARY_FROM=binary-from-build

FROM ${SWIFT_IMAGE} AS build
WORKDIR /src
COPY Package.swift ./
COPY Sources Sources
COPY Plugins Plugins
COPY Examples Examples
COPY Benchmarks Benchmarks
COPY Tests Tests
RUN swift build -c release --product warren -Xswiftc -static-executable \
  && install -D "$(swift build -c release --show-bin-path)/warren" /out/warren

FROM scratch AS binary-from-build
COPY --from=build /out/warren /warren

FROM scratch AS binary-from-host
COPY warren /warren

FROM ${BINARY_FROM} AS binary

FROM scratch AS runtime
COPY --from=binary /warren /usr/local/bin/warren
COPY config/warren.yaml /etc/warren/warren.yaml
# The data directory, owned by the unprivileged user the broker runs as.
COPY --chown=10001:10001 container/data/ /var/lib/warren/
ENV WARREN_AMQP_BIND=0.0.0.0 \
    WARREN_METRICS_BIND=0.0.0.0 \
    WARREN_MANAGEMENT_BIND=0.0.0.0 \
    WARREN_DATA_DIR=/var/lib/warren
USER 10001:10001
VOLUME /var/lib/warren
# 5671: AMQPS, opened when WARREN_TLS_CERT and WARREN_TLS_KEY name a certificate and key (mount a directory of
# them, e.g. at /etc/warren/tls; see compose.yaml).
EXPOSE 5671 5672 15672 15692
# `warren health` asks the broker's own /healthz (the image has no curl).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/usr/local/bin/warren", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/warren"]
CMD ["serve", "--config", "/etc/warren/warren.yaml"]
