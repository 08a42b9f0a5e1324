# thoonk-bridge daemon. Build: docker build -t thoonk-bridge .
# Run:   docker run -v "$PWD/config:/config" -p 8080:8080 thoonk-bridge run /config/bridge.yaml
# (in a container, set http.listen: 0.0.0.0:8080; leave `redis:` out for the embedded Redis in /data)
FROM python:3.11-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server curl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY thoonk_bridge ./thoonk_bridge
COPY plugins ./plugins
RUN pip install --no-cache-dir . && useradd --system --home /data --create-home bridge

USER bridge
WORKDIR /data
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["thoonk-bridge"]
CMD ["run", "/config/bridge.yaml"]
