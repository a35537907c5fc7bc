#!/usr/bin/env bash
# Writes the demo's state and configuration into DIR for token KIND (scripts/dev.sh runs it; test/cli/dev-demo.test.ts
# runs it on a directory of its own): random PINs, the SigV4 secret of AWS's XKS test client, a random admin secret,
# a self-signed certificate, the token's directory (SoftHSM) or database (NSS), and config.yaml with everything on:
# the XKS listeners, the operations listener (/metrics, /health), the admin API and the audit trail.
#
#   scripts/dev-config.sh DIR KIND     KIND: softhsm, nss, emulated-cloudhsm, emulated-luna or emulated-nshield
#   ports: XKS_HTTP_PORT (8080), XKS_HTTPS_PORT (8443), XKS_OPS_PORT (9091), XKS_ADMIN_PORT (9090)
#
# config.yaml is rewritten every time, so that a newer checkout's demo takes effect; local.yaml is the user's: made once
# (comments only), never rewritten, and merged over config.yaml (`overrides: local.yaml`) by every command and reload.
# Safe to run again: it keeps the token, PINs, secrets and certificate it made before.
set -euo pipefail
DEV=${1:?usage: dev-config.sh DIR KIND}
KIND=${2:?usage: dev-config.sh DIR KIND}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
case "$KIND" in
  softhsm) PROFILE=softhsm2 ;;
  nss) PROFILE=nss ;;
  emulated-cloudhsm | emulated-luna | emulated-nshield) PROFILE=$KIND ;;
  *) echo "dev-config.sh: KIND=$KIND: expected softhsm, nss, emulated-cloudhsm, emulated-luna or emulated-nshield" >&2; exit 2 ;;
esac
mkdir -p "$DEV/tls"
DEV=$(cd "$DEV" && pwd)
chmod 700 "$DEV"

# Secrets are random per checkout (the SigV4 one excepted: AWS's test client's) and live in files only this user can
# read (the proxy refuses secret files open to group or others); they never reach a command line.
umask 077
[ -s "$DEV/user-pin" ] || openssl rand -hex 16 | tr -d '\n' > "$DEV/user-pin"
[ -s "$DEV/so-pin" ] || openssl rand -hex 16 | tr -d '\n' > "$DEV/so-pin"
# The SigV4 secret and access key id are the defaults of aws-samples/aws-kms-xksproxy-test-client.
printf '%s' 'PleaseReplaceThisWithSomeSecretOfLength43To64' > "$DEV/sigv4-secret"
# The admin API can disable and delete keys: its secret is this checkout's own.
[ -s "$DEV/admin-secret" ] || openssl rand -base64 33 | tr -d '\n' > "$DEV/admin-secret"
chmod 600 "$DEV/user-pin" "$DEV/so-pin" "$DEV/sigv4-secret" "$DEV/admin-secret"

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
  sed "s#@TOKENDIR@#$DEV/tokens#" "$ROOT/softhsm-config/softhsm2.conf.template" > "$DEV/softhsm2.conf"
fi

# A config.yaml of an earlier checkout has no overrides file: the user may have edited it. Keep it for them.
if [ -e "$DEV/config.yaml" ] && ! grep -q '^overrides: local.yaml$' "$DEV/config.yaml"; then
  mv "$DEV/config.yaml" "$DEV/config.yaml.old"
  echo "dev-config.sh: kept your previous $DEV/config.yaml as config.yaml.old: move your own settings into local.yaml" >&2
fi

LIBRARY_LINE=""
# The parameters hold single quotes: a YAML double-quoted scalar keeps them.
[ -z "$LIBRARY_PARAMETERS" ] || LIBRARY_LINE="  libraryParameters: \"$LIBRARY_PARAMETERS\""
# Everything a real deployment would turn on: /metrics and /health, the admin API (loopback only), the audit trail.
cat > "$DEV/config.yaml.new" <<YAML
# Written by scripts/dev.sh at every start (see config.sample.yaml for every option): put your own settings in
# local.yaml, which it keeps and merges over this file. The SigV4 access key id and secret are the defaults of
# aws-samples/aws-kms-xksproxy-test-client: a public demo, never for production; keep it on loopback.
overrides: local.yaml
hsm:
  profile: $PROFILE
${LIBRARY_LINE}
  tokenLabel: xks-demo
  pin: { file: user-pin }
listeners:
  http: { host: 127.0.0.1, port: ${XKS_HTTP_PORT:-8080} }
  https: { host: 127.0.0.1, port: ${XKS_HTTPS_PORT:-8443}, certFile: tls/cert.pem, keyFile: tls/key.pem }
  ops: { host: 127.0.0.1, port: ${XKS_OPS_PORT:-9091} }
prefixes:
  - path: example/uri/path/prefix
    region: us-east-1
    credentials:
      - accessKeyId: BETWEEN2TENAND3TENCHARACTERS
        secret: { file: sigv4-secret }
admin:
  listener: { host: 127.0.0.1, port: ${XKS_ADMIN_PORT:-9090} }
  region: us-east-1
  credentials:
    - accessKeyId: XKSDEMOADMIN0000000001
      secret: { file: admin-secret }
audit:
  dir: audit
  # A checkpoint (MAC made in the HSM) 5 s after a line, so that \`xks audit verify\` has one to check at once.
  checkpointSeconds: 5
YAML
mv "$DEV/config.yaml.new" "$DEV/config.yaml"

if [ ! -e "$DEV/local.yaml" ]; then
  cat > "$DEV/local.yaml" <<'YAML'
# Your settings for the demo. scripts/dev.sh rewrites config.yaml at every start and never touches this file; every
# command, and the running proxy on a reload, merges it over config.yaml: a section here is merged key by key, a list
# or a value replaces config.yaml's, null removes the setting. `xks config check` shows the result. For example:
#
# audit:
#   checkpointSeconds: 10     # audit settings need a restart (a reload says so in the log)
# log:
#   level: debug
# prefixes:                   # a list replaces the demo's: repeat what you keep
#   - path: example/uri/path/prefix
#     region: us-east-1
#     credentials:
#       - accessKeyId: BETWEEN2TENAND3TENCHARACTERS
#         secret: { file: sigv4-secret }
#     keys: [foo]
YAML
  chmod 600 "$DEV/local.yaml"
fi
umask 022
