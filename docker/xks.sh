#!/bin/sh
# `xks` inside the container (e.g. `docker exec CONTAINER xks keys list`). Without XKS_CONFIG it uses the demo's configuration.
if [ -z "${XKS_CONFIG:-}" ] && [ -f /var/lib/xks/config.yaml ]; then
  XKS_CONFIG=/var/lib/xks/config.yaml
  export XKS_CONFIG
fi
exec node /app/dist/cli/main.js "$@"
