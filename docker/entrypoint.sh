#!/usr/bin/env bash
# Entrypoint of the XKS proxy image. Arguments are an `xks` command (default: serve); anything else is run as is.
#
#   XKS_CONFIG set    Production. Runs `xks <command>` with that configuration and nothing else: mount the config,
#                     the vendor's PKCS#11 client (read-only) and the secrets it refers to (hsm.pin: { env: XKS_HSM_PIN }
#                     or { file: /run/secrets/... }).
#   XKS_CONFIG unset  Demo. In /var/lib/xks (the volume) it keeps a SoftHSMv2 token "xks-demo", random PINs, a self-signed
#                     certificate, a random admin secret and a configuration (HTTP 0.0.0.0:8080, HTTPS 0.0.0.0:8443, the
#                     credentials of AWS's XKS test client; operations listener 0.0.0.0:9091, admin API 0.0.0.0:9090, the
#                     audit trail in /var/lib/xks/audit), creates the test client's keys, then runs `xks <command>`.
#                     Safe to restart: it keeps the token, keys, PINs and certificate it made before.
set -euo pipefail

if [ $# -eq 0 ]; then set -- serve; fi
XKS_MAIN=/app/dist/cli/main.js
case "$1" in
  serve | keys | hsm | kek | import | audit | report | config | call | aws | migrate) ;;
  help | -h | --help | -V | --version) exec node "$XKS_MAIN" "$@" ;;
  *) exec "$@" ;;
esac
say() { printf 'entrypoint: %s\n' "$*" >&2; }

if [ -n "${XKS_CONFIG:-}" ]; then
  if [ ! -r "$XKS_CONFIG" ]; then
    say "XKS_CONFIG=$XKS_CONFIG is not a readable file: mount the configuration into the container"
    exit 1
  fi
  exec node "$XKS_MAIN" "$@"
fi

DATA=/var/lib/xks
if [ ! -d "$DATA" ] || [ ! -w "$DATA" ]; then
  say "$DATA must be a directory writable by uid $(id -u) (a named volume is; chown a bind-mounted one to $(id -u))"
  exit 1
fi
cd "$DATA"
umask 077
mkdir -p tokens tls
if [ ! -s user-pin ] && [ -n "$(ls -A tokens)" ]; then
  say "$DATA/tokens holds a token but $DATA/user-pin is missing: restore it, or empty the volume to start a new demo token"
  exit 1
fi
# PINs are random per volume and live in files only the service user can read; they never reach a command line.
[ -s user-pin ] || { openssl rand -hex 16 | tr -d '\n' >user-pin; }
[ -s so-pin ] || { openssl rand -hex 16 | tr -d '\n' >so-pin; }
# The SigV4 access key id and secret are the defaults of aws-samples/aws-kms-xksproxy-test-client: a demo, not a secret.
printf '%s' 'PleaseReplaceThisWithSomeSecretOfLength43To64' >sigv4-secret
# The admin API can disable and delete keys: its secret is this volume's own.
[ -s admin-secret ] || { openssl rand -base64 33 | tr -d '\n' >admin-secret; }
if [ ! -s tls/cert.pem ] || [ ! -s tls/key.pem ]; then
  openssl req -x509 -newkey rsa:2048 -sha256 -days 365 -nodes -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout tls/key.pem -out tls/cert.pem 2>/dev/null
fi
sed -e 's#@HOST@#0.0.0.0#g' -e 's#@HTTP_PORT@#8080#' -e 's#@HTTPS_PORT@#8443#' -e 's#@OPS_PORT@#9091#' -e 's#@ADMIN_PORT@#9090#' \
  /app/softhsm-config/demo-config.yaml.template >config.yaml.new
mv config.yaml.new config.yaml
export XKS_CONFIG="$DATA/config.yaml"

XKS_HSM_SO_PIN=$(cat so-pin) node "$XKS_MAIN" hsm init-token
node "$XKS_MAIN" keys create foo --usage encrypt,decrypt --if-missing
node "$XKS_MAIN" keys create encrypt_only_key --usage encrypt --if-missing
node "$XKS_MAIN" keys create decrypt_only_key --usage decrypt --if-missing
node "$XKS_MAIN" keys create impotent_key --usage none --if-missing
say "demo: SoftHSMv2 token xks-demo in $DATA; URI prefix example/uri/path/prefix, region us-east-1,"
say "demo: access key id BETWEEN2TENAND3TENCHARACTERS (the XKS test client's demo credentials: not for production)"
say "demo: metrics and health on :9091 (/metrics, /health); admin API on :9090, access key id XKSDEMOADMIN0000000001,"
say "demo: secret in $DATA/admin-secret; audit trail in $DATA/audit, checked with"
say "demo: docker exec <container> sh -c 'xks audit verify --allow-unsealed-tail $DATA/audit/*.jsonl'"
exec node "$XKS_MAIN" "$@"
