# syntax=docker/dockerfile:1
# Sysdig chargeback exporter image.
#
# Two stages from the same base: `build` turns the source tree into a wheel, the final stage
# installs that wheel (and its dependencies, as binary wheels from PyPI) into a venv under
# /opt/chargeback-exporter. No compiler or build tooling reaches the final image.
#
# BASE is a Python >= 3.11 image with `python3 -m venv`; override it to build from a mirror or
# a locally built base (scripts/build-image.sh does that with a debootstrap'ed Debian).
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
WORKDIR /src
# Only what the wheel needs (see .dockerignore): package metadata, its readme, the package,
# and schemas/, which exporter/schemas links to (the Avro contract lives at the top level).
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY exporter ./exporter
RUN python3 -m venv /build-venv \
 && /build-venv/bin/pip install --no-cache-dir --disable-pip-version-check "pip>=24" \
 && /build-venv/bin/pip wheel --no-cache-dir --disable-pip-version-check --no-deps \
      --wheel-dir /wheels .

FROM ${BASE}
ARG BASE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="chargeback-exporter" \
      org.opencontainers.image.description="Sysdig usage to exactly-once Avro billing records (Core-Hours, GiB-Hours) on Kafka" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="sysdig-chargeback-exporter" \
      org.opencontainers.image.base.name="${BASE}"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/chargeback-exporter/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# --only-binary: dependencies must come as wheels, since this stage has no compiler. Bytecode
# is compiled at install time, so a read-only root filesystem costs nothing at start-up.
COPY --from=build /wheels /tmp/wheels
RUN python3 -m venv /opt/chargeback-exporter \
 && /opt/chargeback-exporter/bin/pip install --no-cache-dir --only-binary=:all: /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels \
 && groupadd --gid 10001 chargeback \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin chargeback

# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001
EXPOSE 9847
ENTRYPOINT ["/opt/chargeback-exporter/bin/chargeback-exporter"]
CMD ["run", "--config.file", "/etc/chargeback-exporter/config.yaml"]
