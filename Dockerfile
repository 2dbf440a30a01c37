# syntax=docker/dockerfile:1
#
# geo-stream-processor container image.
#
#   docker build -t geo-stream-processor:local .
#   docker build --build-arg EXTRAS=otlp,geo -t geo-stream-processor:geo .
#
# Stage 1 builds the project wheel and installs it with its dependencies into a virtualenv
# at /opt/venv. Stage 2 copies only that virtualenv onto a clean python:3.11-slim: no
# compiler, no pip cache, no sources. Both stages use the same base image, so the venv's
# interpreter symlink (/usr/local/bin/python3.11) resolves in the final stage.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder

# Optional extras of the geo-stream-processor package to install (comma separated):
# otlp (OTLP exporter, used by docker-compose.yml and the Helm chart's otel settings),
# geo (geopandas). Empty for none.
ARG EXTRAS=otlp

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
RUN python -m venv /opt/venv

# Only what the wheel needs (see .dockerignore): metadata first, then the package.
COPY pyproject.toml README.md ./
COPY processor ./processor

RUN --mount=type=cache,target=/root/.cache/pip \
    python -m pip wheel --no-deps --wheel-dir /wheels . \
 && wheel="$(ls /wheels/geo_stream_processor-*.whl)" \
 && /opt/venv/bin/pip install "${wheel}${EXTRAS:+[${EXTRAS}]}" \
 && /opt/venv/bin/processor --help >/dev/null

# The runtime needs no installer in the venv.
RUN /opt/venv/bin/pip uninstall --yes pip setuptools


FROM ${PYTHON_IMAGE} AS runtime

ARG UID=10001
ARG GID=10001

LABEL org.opencontainers.image.title="geo-stream-processor" \
      org.opencontainers.image.description="Backpressure-aware geospatial Kafka stream processor" \
      org.opencontainers.image.licenses="Apache-2.0"

# A numeric, unprivileged user: Kubernetes' runAsNonRoot can only verify numeric UIDs.
RUN groupadd --system --gid "${GID}" processor \
 && useradd --system --uid "${UID}" --gid processor --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin processor \
 && mkdir -p /var/lib/processor/spill \
 && chown -R "${UID}:${GID}" /var/lib/processor

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PROCESSOR_SPILL_DIR=/var/lib/processor/spill \
    PROCESSOR_HTTP_PORT=8080

# Spill segments (overflow of already-fetched records) live here; never the only copy of a
# record, but keeping them across restarts saves re-reading from Kafka.
VOLUME ["/var/lib/processor/spill"]
WORKDIR /var/lib/processor

USER ${UID}:${GID}
EXPOSE 8080

# No curl in the slim image: ask /healthz with the standard library.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('PROCESSOR_HTTP_PORT', '8080'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status == 200 else 1)"]

# SIGTERM (docker stop, Kubernetes) starts a graceful drain bounded by
# PROCESSOR_SHUTDOWN_TIMEOUT_S; give the container longer than that to stop.
STOPSIGNAL SIGTERM
ENTRYPOINT ["processor"]
CMD ["run"]
