# syntax=docker/dockerfile:1
#
# Triage: one image for the gateway and every worker kind; the command picks which. It runs the compiled JavaScript
# (`npm run build`: tsc emits dist/) and carries no TypeScript toolchain (no tsc, no tsx).
#   gateway:  node dist/src/server.js                (the default CMD, what `npm start` runs after building)
#   worker:   node dist/workers/main.js <kind>        (inference | callbacks | maintenance | batch)
#
# Build:  docker build -t triage:dev .
# Run:    docker run --read-only --tmpfs /tmp -v triage-data:/data -p 8080:8080 \
#           -e TRIAGE_REDIS_URL=redis://redis:6379 -e TRIAGE_API_KEYS_FILE=/run/secrets/keys.yaml \
#           -v "$PWD/keys.yaml:/run/secrets/keys.yaml:ro" triage:dev
# A worker container has no HTTP server: run it with --no-healthcheck (Kubernetes ignores HEALTHCHECK anyway).

ARG NODE_IMAGE=node:22-slim

# ---- build: the TypeScript compiler emits dist/ (the only stage with dev packages) ----------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
ENV ONNXRUNTIME_NODE_INSTALL=skip \
    NPM_CONFIG_AUDIT=false \
    NPM_CONFIG_FUND=false \
    NPM_CONFIG_UPDATE_NOTIFIER=false
COPY package.json package-lock.json ./
RUN npm ci
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY routes ./routes
COPY workers ./workers
RUN npm run build

# ---- dependencies: production packages only ------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
# onnxruntime-node's install script would download GPU binaries from outside the npm registry; the CPU binaries ship
# inside the package, so the download is skipped.
ENV ONNXRUNTIME_NODE_INSTALL=skip \
    NPM_CONFIG_AUDIT=false \
    NPM_CONFIG_FUND=false \
    NPM_CONFIG_UPDATE_NOTIFIER=false
COPY package.json package-lock.json ./
# onnxruntime-node ships its binaries for every OS (about 290 MB): keep Linux's only (x64 and arm64)
RUN npm ci --omit=dev \
 && npm cache clean --force \
 && ort=node_modules/onnxruntime-node/bin \
 && test -n "$(find "$ort" -path '*/linux/*' -name '*.node' -print -quit)" \
 && find "$ort" -mindepth 2 -maxdepth 2 -type d \( -name darwin -o -name win32 \) -exec rm -rf {} +

# ---- runtime ---------------------------------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
WORKDIR /app

# A fixed non-root uid/gid (Kubernetes runAsNonRoot checks a numeric USER). The application files stay owned by root:
# the process can read its code and models, never change them.
RUN groupadd --system --gid 10001 triage \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin triage \
 && mkdir -p /data \
 && chown 10001:10001 /data

# TRIAGE_DATA_DIR: the only place the process writes (batch outputs); everything else is read-only.
ENV NODE_ENV=production \
    ONNXRUNTIME_NODE_INSTALL=skip \
    TRIAGE_ENV=production \
    TRIAGE_PORT=8080 \
    TRIAGE_MODELS_DIR=models \
    TRIAGE_DATA_DIR=/data

COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY models ./models

VOLUME ["/data"]
USER 10001:10001
EXPOSE 8080

# The process itself is PID 1 (exec form, no shell in between): it receives SIGTERM, stops accepting, drains in-flight
# requests for TRIAGE_SHUTDOWN_GRACE_MS and closes workers, queues and Redis. It starts no child processes, so there
# are no zombies to reap and no init (tini, --init) is needed.
STOPSIGNAL SIGTERM

# No curl in the slim image: node's own fetch. Liveness only (/readyz also needs Redis and is for the load balancer).
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.TRIAGE_PORT || 8080) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

CMD ["node", "dist/src/server.js"]
