#!/usr/bin/env bash
# Starts the proxy on a token under .dev/<kind>/ with the demo keys and the credentials of AWS's XKS test client.
# XKS_DEV_TOKEN chooses the token: softhsm (default, SoftHSMv2), nss (NSS softoken, a certutil database), or
# emulated-cloudhsm / emulated-luna / emulated-nshield (SoftHSMv2 behind this project's PKCS#11 emulator, imposing that
# vendor's documented behaviour: test/emulator/pkcs11-emulator.c). Same keys, credentials and ports for every kind.
# Safe to run again: it keeps the token, PINs and certificate it made before.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
KIND=${XKS_DEV_TOKEN:-softhsm}
case "$KIND" in
  softhsm) PROFILE=softhsm2 ;;
  nss) PROFILE=nss ;;
  emulated-cloudhsm | emulated-luna | emulated-nshield) PROFILE=$KIND ;;
  *) echo "dev.sh: XKS_DEV_TOKEN=$KIND: expected softhsm, nss, emulated-cloudhsm, emulated-luna or emulated-nshield" >&2; exit 2 ;;
esac
bash scripts/setup.sh

DEV="$ROOT/.dev/$KIND"
# Earlier checkouts kept the SoftHSM demo directly in .dev/: move it into .dev/softhsm/ once, keeping its token.
if [ "$KIND" = softhsm ] && [ -d "$ROOT/.dev/tokens" ] && [ ! -e "$DEV" ]; then
  mkdir -p "$DEV"
  for f in tokens tls user-pin so-pin sigv4-secret; do [ -e "$ROOT/.dev/$f" ] && mv "$ROOT/.dev/$f" "$DEV/"; done
  rm -f "$ROOT/.dev/config.yaml" "$ROOT/.dev/softhsm2.conf"
fi
mkdir -p "$DEV/tls"
chmod 700 "$ROOT/.dev" "$DEV"

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

LIBRARY_PARAMETERS=""
if [ "$KIND" = nss ]; then
  # NSS: a database whose password is the user PIN; its token is named by dbTokenDescription.
  if [ ! -e "$DEV/nssdb/key4.db" ]; then
    mkdir -p "$DEV/nssdb"
    certutil -N -d "sql:$DEV/nssdb" -f "$DEV/user-pin"
  fi
  LIBRARY_PARAMETERS="configdir='sql:$DEV/nssdb' certPrefix='' keyPrefix='' secmod='secmod.db' flags= dbTokenDescription='xks-demo'"
else
  mkdir -p "$DEV/tokens"
  export SOFTHSM2_CONF="$DEV/softhsm2.conf"
  sed "s#@TOKENDIR@#$DEV/tokens#" softhsm-config/softhsm2.conf.template > "$SOFTHSM2_CONF"
fi

sed -e "s#@HOST@#127.0.0.1#g" -e "s#@HTTP_PORT@#${XKS_HTTP_PORT:-8080}#" -e "s#@HTTPS_PORT@#${XKS_HTTPS_PORT:-8443}#" \
  -e "s#^  profile: softhsm2\$#  profile: $PROFILE#" \
  softhsm-config/demo-config.yaml.template > "$DEV/config.yaml"
# The parameters hold single quotes: a YAML double-quoted scalar keeps them.
[ -z "$LIBRARY_PARAMETERS" ] || sed -i "/^  profile: /a\\  libraryParameters: \"$LIBRARY_PARAMETERS\"" "$DEV/config.yaml"
umask 022

xks() { node "$ROOT/dist/cli/main.js" "$@" --config "$DEV/config.yaml"; }
# NSS has no security officer and no token to initialise: its database is the token.
[ "$KIND" = nss ] || XKS_HSM_SO_PIN=$(cat "$DEV/so-pin") xks hsm init-token
xks keys create foo --usage encrypt,decrypt --if-missing
xks keys create encrypt_only_key --usage encrypt --if-missing
xks keys create decrypt_only_key --usage decrypt --if-missing
xks keys create impotent_key --usage none --if-missing

cat <<INFO

XKS proxy demo on the $KIND token "xks-demo" (profile $PROFILE; state in .dev/$KIND/)
  HTTP   http://127.0.0.1:${XKS_HTTP_PORT:-8080}/example/uri/path/prefix/kms/xks/v1
  HTTPS  https://127.0.0.1:${XKS_HTTPS_PORT:-8443}/example/uri/path/prefix/kms/xks/v1  (self-signed: .dev/$KIND/tls/cert.pem)
  SigV4  access key id BETWEEN2TENAND3TENCHARACTERS, secret in .dev/$KIND/sigv4-secret, region us-east-1, service kms-xks-proxy
  Keys   foo (encrypt+decrypt), encrypt_only_key, decrypt_only_key, impotent_key
Try:
  curl -s --aws-sigv4 "aws:amz:us-east-1:kms-xks-proxy" --user "BETWEEN2TENAND3TENCHARACTERS:\$(cat .dev/$KIND/sigv4-secret)" \\
    -H 'Content-Type: application/json' -d '{"requestMetadata":{"kmsRequestId":"1","kmsOperation":"KmsHealthCheck"}}' \\
    http://127.0.0.1:${XKS_HTTP_PORT:-8080}/example/uri/path/prefix/kms/xks/v1/health
  ${SOFTHSM2_CONF:+SOFTHSM2_CONF=.dev/$KIND/softhsm2.conf }node dist/cli/main.js keys list --config .dev/$KIND/config.yaml
Stop with Ctrl-C.

INFO
exec node "$ROOT/dist/cli/main.js" serve --config "$DEV/config.yaml"
