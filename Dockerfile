# AWS KMS XKS proxy. Two stages: one compiles (TypeScript and pkcs11js's native addon), one runs.
#   build:  docker build -t xks-proxy .        (podman: podman build --format docker -t xks-proxy .  to keep HEALTHCHECK)
#   demo:   docker run -d -p 127.0.0.1:8080:8080 -p 127.0.0.1:8443:8443 -v xks-data:/var/lib/xks xks-proxy   (loopback only: the demo's credentials are public)
#   real HSM: set XKS_CONFIG to a mounted configuration and mount the vendor's PKCS#11 client read-only (see docker/entrypoint.sh).

FROM node:20-bookworm-slim AS build
# pkcs11js has no prebuilt binaries: node-gyp compiles it, against the headers the node image ships in /usr/local/include/node.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*
ENV npm_config_nodedir=/usr/local
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error \
 && test -f node_modules/pkcs11js/build/Release/pkcs11.node
# The SBOM of the production dependencies (CycloneDX, from package-lock.json): the image carries it as /app/sbom.cdx.json.
COPY scripts/sbom.mjs ./scripts/
RUN node scripts/sbom.mjs --out /src/sbom.cdx.json
COPY tsconfig.json ./
COPY src ./src
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund --loglevel=error \
 && rm -rf node_modules/pkcs11js/build/Release/obj.target node_modules/pkcs11js/build/Release/.deps \
 && find node_modules -mindepth 1 -type d -empty -delete

FROM node:20-bookworm-slim
# softhsm2: the demo's token (a real HSM's library is mounted instead); openssl: the demo's PINs and self-signed
# certificate; tini: PID 1 that forwards SIGTERM to node and reaps children.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends softhsm2 openssl tini \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log
WORKDIR /app
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY --from=build /src/sbom.cdx.json ./sbom.cdx.json
COPY hsm ./hsm
COPY softhsm-config ./softhsm-config
COPY config.sample.yaml ./
COPY docker ./docker
# The service runs as uid 10001 and owns only /var/lib/xks (the volume): the code in /app stays root's, read-only to it.
# SoftHSM's packaged token directory is root-only, so the service gets its own SOFTHSM2_CONF with a token directory in the volume.
RUN groupadd -g 10001 xks \
 && useradd -u 10001 -g 10001 -d /var/lib/xks -M -s /usr/sbin/nologin xks \
 && mkdir -p /etc/xks /var/lib/xks/tokens \
 && sed 's#@TOKENDIR@#/var/lib/xks/tokens#' softhsm-config/softhsm2.conf.template > /etc/xks/softhsm2.conf \
 && chown -R 10001:10001 /var/lib/xks && chmod 700 /var/lib/xks \
 && chmod 755 docker/*.sh && ln -s /app/docker/xks.sh /usr/local/bin/xks
ENV NODE_ENV=production \
    SOFTHSM2_CONF=/etc/xks/softhsm2.conf
VOLUME /var/lib/xks
USER 10001:10001
EXPOSE 8080 8443 9090 9091
# Liveness: GET /ping on the HTTP listener (XKS_HEALTHCHECK_URL to change it). It says the process serves, not that the HSM is healthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD ["node", "/app/docker/healthcheck.mjs"]
ENTRYPOINT ["/usr/bin/tini", "--", "/app/docker/entrypoint.sh"]
CMD ["serve"]
