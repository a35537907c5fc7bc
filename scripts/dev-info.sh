#!/usr/bin/env bash
# Prints what the demo in DIR serves and how to try each part of it (scripts/dev.sh prints it before it serves;
# test/cli/dev-demo.test.ts runs every "Try" line). Paths are absolute: the lines work from any directory.
#   scripts/dev-info.sh DIR KIND      ports: XKS_HTTP_PORT, XKS_HTTPS_PORT, XKS_OPS_PORT, XKS_ADMIN_PORT (as dev-config.sh)
set -euo pipefail
DEV=$(cd "${1:?usage: dev-info.sh DIR KIND}" && pwd)
KIND=${2:?usage: dev-info.sh DIR KIND}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HTTP=${XKS_HTTP_PORT:-8080}
OPS=${XKS_OPS_PORT:-9091}
ADMIN=${XKS_ADMIN_PORT:-9090}
ENV="XKS_CONFIG=$DEV/config.yaml"
[ "$KIND" = nss ] || ENV="$ENV SOFTHSM2_CONF=$DEV/softhsm2.conf"
cat <<INFO

XKS proxy demo on the $KIND token "xks-demo" (state in $DEV/)
  HTTP     http://127.0.0.1:$HTTP/example/uri/path/prefix/kms/xks/v1
  HTTPS    https://127.0.0.1:${XKS_HTTPS_PORT:-8443}/example/uri/path/prefix/kms/xks/v1  (self-signed: $DEV/tls/cert.pem)
  SigV4    access key id BETWEEN2TENAND3TENCHARACTERS, secret in $DEV/sigv4-secret, region us-east-1, service kms-xks-proxy
  Keys     foo (encrypt+decrypt), encrypt_only_key, decrypt_only_key, impotent_key
  Ops      http://127.0.0.1:$OPS/metrics and /health (Prometheus, readiness)
  Admin    http://127.0.0.1:$ADMIN/  access key id XKSDEMOADMIN0000000001, secret in $DEV/admin-secret, service xks-admin
  Audit    $DEV/audit/ (sealed by a checkpoint in the HSM 5 s after new lines: verify the calls 5 s after them)
  Settings $DEV/local.yaml: yours, kept by scripts/dev.sh and merged over config.yaml (which it rewrites)
Try, in another shell, from any directory:
  export $ENV
  xks() { node $ROOT/dist/cli/main.js "\$@"; }
  xks call health
  xks call encrypt foo --plaintext hello | xks call decrypt foo --text
  xks keys list
  curl -s http://127.0.0.1:$OPS/metrics | grep '^xks_requests_total'
  curl -s --aws-sigv4 aws:amz:us-east-1:xks-admin -K <(printf 'user = "XKSDEMOADMIN0000000001:%s"\\n' "\$(cat $DEV/admin-secret)") -H 'Content-Type: application/x-amz-json-1.1' -H 'X-Amz-Target: XksAdmin.DescribeKey' -d '{"KeyId":"foo"}' http://127.0.0.1:$ADMIN/
  xks audit verify --allow-unsealed-tail $DEV/audit/*.jsonl
  xks config check
Stop with Ctrl-C.

INFO
