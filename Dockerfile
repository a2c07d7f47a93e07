# syntax=docker/dockerfile:1
# trackd: one uvicorn process per container; scale with replicas, not workers (k8s/, docs/scaling.md).
#
# Production needs DATABASE_URL. Without it trackd would start an embedded PostgreSQL inside the
# container (fine for `make run`, wrong for a pod whose disk is an emptyDir), so the entrypoint
# refuses to start `serve` or `migrate` without it unless TRACKD_ALLOW_EMBEDDED_DB=1 (local tries only).

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, from the exact pins, so a code-only change reuses this layer.
COPY pyproject.toml constraints.txt README.md ./
COPY app ./app
COPY trackd_links ./trackd_links
RUN pip install --no-cache-dir -c constraints.txt . \
    && python -m compileall -q -j 0 /opt/venv

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="trackd" \
      org.opencontainers.image.description="Email click/open tracking and redirect service" \
      org.opencontainers.image.licenses="Apache-2.0"
# The root filesystem is read-only in Kubernetes: nothing may write .pyc files at run time
# (they are compiled in the builder), and the journal lives in TRACKD_DATA_DIR (an emptyDir).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TRACKD_HOST=0.0.0.0 \
    TRACKD_PORT=8000 \
    TRACKD_DATA_DIR=/var/lib/trackd
RUN groupadd --system --gid 10001 trackd \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/trackd trackd \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/trackd
COPY --from=builder /opt/venv /opt/venv
WORKDIR /var/lib/trackd
# Numeric, so the kubelet can check runAsNonRoot without reading /etc/passwd.
USER 10001
EXPOSE 8000
VOLUME ["/var/lib/trackd"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('TRACKD_PORT', '8000') + '/healthz', timeout=2)"]
# The guard below, then exec: uvicorn becomes PID 1 and gets SIGTERM itself (graceful drain).
ENTRYPOINT ["/bin/sh", "-c", "case \"$1 $2\" in 'trackd serve'|'trackd migrate') if [ -z \"$DATABASE_URL\" ] && [ \"$TRACKD_ALLOW_EMBEDDED_DB\" != 1 ]; then echo 'trackd: DATABASE_URL is not set; the embedded PostgreSQL is for development (set TRACKD_ALLOW_EMBEDDED_DB=1 to use it anyway)' >&2; exit 64; fi;; esac; exec \"$@\"", "trackd-entrypoint"]
# One process: proxy headers are resolved by trackd from TRACKD_TRUSTED_PROXIES (uvicorn's are off).
CMD ["trackd", "serve"]
