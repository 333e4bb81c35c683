# syntax=docker/dockerfile:1
#
# The Turnstile operator image: `turnstile operator` (kopf) on python:3.12-slim, as a non-root
# numeric UID with nothing but the wheel and its pinned dependencies installed.
#
#   docker build -t turnstile-operator:dev .
#
# Stage 1 builds wheels for rasa-turnstile[operator] (the distribution; the import package and
# the command are turnstile) and every dependency, pinned by the same
# constraints CI installs (requirements/ci.txt). Stage 2 installs them offline from that wheel
# house, so the runtime image has no compiler, no source tree and no pip cache.

ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY requirements/ci.txt requirements/ci.txt
COPY pyproject.toml README.md LICENSE ./
COPY turnstile/ turnstile/

# The project's wheel first (no deps), then the dependency wheels pinned by CI's constraints.
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && pip wheel --wheel-dir /wheels --constraint requirements/ci.txt "$(ls /wheels/rasa_turnstile-*.whl)[operator]"


FROM ${PYTHON_IMAGE} AS runtime

ARG UID=10001
ARG GID=10001

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

LABEL org.opencontainers.image.title="turnstile-operator" \
      org.opencontainers.image.description="Kubernetes operator for Turnstile's Redis lock and timer stores (Rasa)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/turnstile/turnstile" \
      org.opencontainers.image.url="https://github.com/turnstile/turnstile"

RUN groupadd --system --gid "${GID}" turnstile \
 && useradd --system --uid "${UID}" --gid "${GID}" --no-create-home --no-log-init \
        --home-dir /nonexistent --shell /usr/sbin/nologin turnstile

# Offline install from the builder's wheel house, mounted rather than copied so no wheel layer
# stays in the image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels "$(ls /wheels/rasa_turnstile-*.whl)[operator]" \
 && turnstile --help >/dev/null

# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER ${UID}:${GID}
WORKDIR /tmp

# 8080: kopf's liveness endpoint (--liveness-port); 9090: Prometheus metrics (--metrics-port).
EXPOSE 8080 9090

ENTRYPOINT ["turnstile", "operator"]
