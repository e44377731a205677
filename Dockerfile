# Ignition exporter. Build: docker build -t ignition-exporter .
# Run:  docker run -p 9871:9871 -v $PWD/config.yml:/etc/ignition-exporter/config.yml:ro ignition-exporter
# Demo: docker run -p 9871:9871 ignition-exporter --demo
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
COPY ignition ./ignition
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11.11-slim-bookworm
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin exporter
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
EXPOSE 9871
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9871/healthz', timeout=4)"]
ENTRYPOINT ["ignition-exporter", "--listen", "0.0.0.0:9871"]
CMD ["--config", "/etc/ignition-exporter/config.yml"]
