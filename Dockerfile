# Ignition exporter. Build: docker build -t ignition-exporter .
# Run:  docker run -p 9871:9871 -v $PWD/config.yml:/etc/ignition-exporter/config.yml:ro ignition-exporter
# Demo: docker run -p 9871:9871 ignition-exporter --demo
# BASE_IMAGE: any Debian-like image with python3 (3.11+) and its venv module, for sites that
# build from their own mirror: docker build --build-arg BASE_IMAGE=registry.example/python:3.11 .
ARG BASE_IMAGE=python:3.11.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY exporter ./exporter
COPY ignition ./ignition
COPY rules ./rules
COPY dashboards ./dashboards
# A virtual environment: the same layout on the official image and on a distribution's
# python3, whose system site-packages is off limits to pip (PEP 668).
RUN python3 -m venv /opt/ignition-exporter \
 && /opt/ignition-exporter/bin/pip install --no-cache-dir .

FROM ${BASE_IMAGE}
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin exporter
COPY --from=build /opt/ignition-exporter /opt/ignition-exporter
ENV PATH=/opt/ignition-exporter/bin:$PATH
USER 10001
EXPOSE 9871
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9871/healthz', timeout=4)"]
ENTRYPOINT ["ignition-exporter", "--listen", "0.0.0.0:9871"]
CMD ["--config", "/etc/ignition-exporter/config.yml"]
