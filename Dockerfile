# syntax=docker/dockerfile:1
#
# The exchange gateway image: `gateway` is the entrypoint, `run --config /etc/xchg/gateway.toml` the default.
#   docker build -t xchg-gateway:0.1.0 .
#   docker run --read-only --tmpfs /tmp -v ./gateway.toml:/etc/xchg/gateway.toml:ro ... xchg-gateway:0.1.0
#
# Two stages: the builder turns the project and its dependencies into wheels and installs them into a
# virtual environment; the final stage gets only that environment, the schemas and an unprivileged user --
# no compiler, no pip cache, no source tree, no tests. Every dependency used today ships binary wheels for
# linux/amd64 and linux/arm64, so the builder needs no compiler either; add build-essential there (never in
# the final stage) if one ever does not.
#
# The base image is pinned by version and digest (python:3.11.15-slim, Debian). The digest was taken from
# public references, not pulled on the machine this was written on: check it with
#   docker buildx imagetools inspect python:3.11.15-slim
# and let a dependency bot move tag and digest together.
ARG PYTHON_IMAGE=python:3.11.15-slim@sha256:90744cff8f32887f075c47d747a173ff333e9e98801667af93c357fa9f5e28ff

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Metadata first so the dependency layer is cached until pyproject.toml changes.
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY adapters ./adapters
RUN python -m pip wheel --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-index --find-links /wheels xchg-gateway \
 && /opt/venv/bin/pip uninstall --yes pip setuptools \
 && /opt/venv/bin/gateway --help >/dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="xchg-gateway" \
      org.opencontainers.image.description="Inter-agency exchange gateway for the protection of trafficking victims" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed, unprivileged uid/gid (Kubernetes runAsUser 10001 matches); no login shell, no home directory.
RUN groupadd --system --gid 10001 xchg \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin xchg \
 && mkdir -p /etc/xchg /var/lib/xchg \
 && chown 10001:10001 /var/lib/xchg \
 && chmod 0700 /var/lib/xchg
COPY --from=builder /opt/venv /opt/venv
COPY schemas /opt/xchg/schemas
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    XCHG_SCHEMAS=/opt/xchg/schemas \
    XCHG__SCHEMAS=/opt/xchg/schemas
# Outbox, inbox and file-drop state: mount a persistent volume here (the outbox must survive restarts).
VOLUME ["/var/lib/xchg"]
USER 10001:10001
WORKDIR /var/lib/xchg
EXPOSE 8080
# Liveness only (/healthz): /readyz fails while Kafka is down, and restarting a gateway for that would
# help nothing (docs/OPERATIONS_HTTP.md). Set XCHG_HEALTHCHECK_URL if [ops] port is not 8080.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('XCHG_HEALTHCHECK_URL', 'http://127.0.0.1:8080/healthz'), timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["gateway"]
CMD ["run", "--config", "/etc/xchg/gateway.toml", "--log-json"]
