# thoonk-bridge daemon. Build: docker build -t thoonk-bridge .
# Run, from the repository root (README "Deployment"):
#   docker run -v "$PWD/config:/config" -p 8080:8080 thoonk-bridge run /config/example.yaml
# config/example.yaml listens on ${THOONK_BRIDGE_LISTEN} (0.0.0.0:8080 here, so -p reaches it from
# outside the container), keeps its state (the embedded Redis) in /data (its state_dir ../data is
# relative to /config) and uses ${REDIS_URL} instead when given (-e REDIS_URL=redis://...).
# Your own config: mount it and name it, e.g. ... thoonk-bridge run /config/bridge.yaml
FROM python:3.11-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server curl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY thoonk_bridge ./thoonk_bridge
COPY plugins ./plugins
RUN pip install --no-cache-dir ".[fast]" && useradd --system --home /data --create-home bridge

USER bridge
WORKDIR /data
# Bind every interface inside the container (the example config reads it); loopback alone would be
# unreachable through -p.
ENV THOONK_BRIDGE_LISTEN=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["thoonk-bridge"]
CMD ["run", "/config/example.yaml"]
