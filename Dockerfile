# syntax=docker/dockerfile:1
# The service image: the browser bundles built with Node, the Python environment
# built with the locked constraints, then a slim runtime that runs one hypercorn
# worker as a non-root user.

# --- the pages' scripts and styles (esbuild, from frontend/package-lock.json) ---------
FROM node:20.18.1-bookworm-slim AS frontend
WORKDIR /src/frontend
COPY frontend/package.json frontend/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY frontend/src ./src
RUN mkdir -p ../app/web/static/dist && npm run --silent build

# --- the virtualenv ---------------------------------------------------------------------
FROM python:3.11.11-slim-bookworm AS python
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /srv/virtuoso
RUN python -m venv /opt/venv
COPY pyproject.toml constraints.txt README.md ./
COPY app ./app
# Editable: the service reads config/ next to the app package.
RUN /opt/venv/bin/pip install -c constraints.txt -e .

# --- runtime ------------------------------------------------------------------------------
FROM python:3.11.11-slim-bookworm
RUN useradd --system --uid 10001 --home-dir /srv/virtuoso --shell /usr/sbin/nologin virtuoso
WORKDIR /srv/virtuoso
COPY --from=python /opt/venv /opt/venv
COPY --from=python /srv/virtuoso /srv/virtuoso
COPY config ./config
COPY --from=frontend /src/app/web/static/dist ./app/web/static/dist
RUN mkdir -p /srv/virtuoso/data && chown virtuoso /srv/virtuoso/data
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    VIRTUOSO_BIND=0.0.0.0:8003 \
    VIRTUOSO_DATA_DIR=/srv/virtuoso/data
USER virtuoso
EXPOSE 8003
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8003/health', timeout=2)"]
# One hypercorn worker per container: scale with replicas, not processes.
CMD ["virtuoso", "serve"]
