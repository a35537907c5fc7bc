#!/usr/bin/env bash
# Starts the proxy on a SoftHSMv2 token under .dev/ with the demo keys and the credentials of AWS's XKS test client.
# Safe to run again: it keeps the token, PINs and certificate it made before.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
bash scripts/setup.sh

DEV="$ROOT/.dev"
mkdir -p "$DEV/tokens" "$DEV/tls"
chmod 700 "$DEV"
export SOFTHSM2_CONF="$DEV/softhsm2.conf"
sed "s#@TOKENDIR@#$DEV/tokens#" softhsm-config/softhsm2.conf.template > "$SOFTHSM2_CONF"

# PINs are random per checkout and live in files only this user can read; they never reach a command line.
umask 077
[ -s "$DEV/user-pin" ] || openssl rand -hex 16 | tr -d '\n' > "$DEV/user-pin"
[ -s "$DEV/so-pin" ] || openssl rand -hex 16 | tr -d '\n' > "$DEV/so-pin"
# The SigV4 secret and access key id are the defaults of aws-samples/aws-kms-xksproxy-test-client.
printf '%s' 'PleaseReplaceThisWithSomeSecretOfLength43To64' > "$DEV/sigv4-secret"

if [ ! -s "$DEV/tls/cert.pem" ]; then
  openssl req -x509 -newkey rsa:2048 -sha256 -days 365 -nodes -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$DEV/tls/key.pem" -out "$DEV/tls/cert.pem" 2>/dev/null
fi

sed -e "s#@HOST@#127.0.0.1#g" -e "s#@HTTP_PORT@#${XKS_HTTP_PORT:-8080}#" -e "s#@HTTPS_PORT@#${XKS_HTTPS_PORT:-8443}#" \
  softhsm-config/demo-config.yaml.template > "$DEV/config.yaml"
umask 022

xks() { node "$ROOT/dist/cli/main.js" "$@" --config "$DEV/config.yaml"; }
XKS_HSM_SO_PIN=$(cat "$DEV/so-pin") xks hsm init-token
xks keys create foo --usage encrypt,decrypt --if-missing
xks keys create encrypt_only_key --usage encrypt --if-missing
xks keys create decrypt_only_key --usage decrypt --if-missing
xks keys create impotent_key --usage none --if-missing

cat <<INFO

XKS proxy demo on SoftHSMv2 token "xks-demo" (state in .dev/)
  HTTP   http://127.0.0.1:${XKS_HTTP_PORT:-8080}/example/uri/path/prefix/kms/xks/v1
  HTTPS  https://127.0.0.1:${XKS_HTTPS_PORT:-8443}/example/uri/path/prefix/kms/xks/v1  (self-signed: .dev/tls/cert.pem)
  SigV4  access key id BETWEEN2TENAND3TENCHARACTERS, secret in .dev/sigv4-secret, region us-east-1, service kms-xks-proxy
  Keys   foo (encrypt+decrypt), encrypt_only_key, decrypt_only_key, impotent_key
Try:
  curl -s --aws-sigv4 "aws:amz:us-east-1:kms-xks-proxy" --user "BETWEEN2TENAND3TENCHARACTERS:\$(cat .dev/sigv4-secret)" \\
    -H 'Content-Type: application/json' -d '{"requestMetadata":{"kmsRequestId":"1","kmsOperation":"KmsHealthCheck"}}' \\
    http://127.0.0.1:${XKS_HTTP_PORT:-8080}/example/uri/path/prefix/kms/xks/v1/health
  SOFTHSM2_CONF=.dev/softhsm2.conf node dist/cli/main.js keys list --config .dev/config.yaml
Stop with Ctrl-C.

INFO
exec node "$ROOT/dist/cli/main.js" serve --config "$DEV/config.yaml"
