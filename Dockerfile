# syntax=docker/dockerfile:1
# Sysdig chargeback exporter image.
#
# Two stages from the same base: `build` turns the source tree into a wheel, the final stage
# installs that wheel and its dependencies into a venv under /opt/chargeback-exporter. Every
# third-party package comes from the hash-pinned locks in requirements/ (--require-hashes: pip
# refuses a file whose sha256 is not in the lock); the wheel itself is built from this tree. No
# compiler or build tooling reaches the final image, nor the simulator and its numpy.
#
# BASE is a Python >= 3.11 image with `python3 -m venv`, pinned by digest (docs/adr/0008).
# scripts/build-image.sh overrides it with a locally built Debian base, by that base's digest.
ARG BASE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

FROM ${BASE} AS build
WORKDIR /src
# Only what the wheel needs (see .dockerignore): package metadata, its readme, the locks, the
# package, and schemas/, which exporter/schemas links to (the Avro contract lives at the top level).
COPY pyproject.toml README.md ./
COPY requirements/build.txt requirements/runtime.txt ./requirements/
COPY schemas ./schemas
COPY exporter ./exporter
# The build backend from its lock, then the wheel with no isolated (unpinned) build environment.
# The runtime lock travels with the wheel to the final stage.
RUN python3 -m venv /build-venv \
 && /build-venv/bin/pip install --no-cache-dir --disable-pip-version-check --require-hashes \
      -r requirements/build.txt \
 && /build-venv/bin/pip wheel --no-cache-dir --disable-pip-version-check --no-deps \
      --no-build-isolation --wheel-dir /wheels . \
 && cp requirements/runtime.txt /wheels/runtime.txt

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

# The locked dependencies first (--only-binary: wheels only, since this stage has no compiler),
# then the exporter's wheel without resolving again, and pip check over the result. Bytecode is
# compiled at install time, so a read-only root filesystem costs nothing at start-up.
COPY --from=build /wheels /tmp/wheels
RUN python3 -m venv /opt/chargeback-exporter \
 && /opt/chargeback-exporter/bin/pip install --no-cache-dir --only-binary=:all: --require-hashes \
      -r /tmp/wheels/runtime.txt \
 && /opt/chargeback-exporter/bin/pip install --no-cache-dir --no-deps --no-index /tmp/wheels/*.whl \
 && /opt/chargeback-exporter/bin/pip check \
 && rm -rf /tmp/wheels \
 && groupadd --gid 10001 chargeback \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin chargeback

# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001
EXPOSE 9847
ENTRYPOINT ["/opt/chargeback-exporter/bin/chargeback-exporter"]
CMD ["run", "--config.file", "/etc/chargeback-exporter/config.yaml"]
