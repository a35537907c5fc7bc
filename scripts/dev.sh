#!/usr/bin/env bash
# Starts the proxy on a token under .dev/<kind>/ with the demo keys and the credentials of AWS's XKS test client, with
# everything on: the operations listener (/metrics, /health), the admin API and the audit trail (scripts/dev-config.sh
# writes the state and config; your own settings go in .dev/<kind>/local.yaml, which it keeps), then prints how to
# try each part (scripts/dev-info.sh).
# XKS_DEV_TOKEN chooses the token: softhsm (default, SoftHSMv2), nss (NSS softoken, a certutil database), or
# emulated-cloudhsm / emulated-luna / emulated-nshield (SoftHSMv2 behind this project's PKCS#11 emulator, imposing that
# vendor's documented behaviour: test/emulator/pkcs11-emulator.c). Same keys, credentials and ports for every kind.
# Safe to run again: it keeps the token, PINs, secrets, certificate and local.yaml it made before.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
KIND=${XKS_DEV_TOKEN:-softhsm}
case "$KIND" in
  softhsm | nss | emulated-cloudhsm | emulated-luna | emulated-nshield) ;;
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
bash scripts/dev-config.sh "$DEV" "$KIND"
[ "$KIND" = nss ] || export SOFTHSM2_CONF="$DEV/softhsm2.conf"

xks() { node "$ROOT/dist/cli/main.js" "$@" --config "$DEV/config.yaml"; }
# NSS has no security officer and no token to initialise: its database is the token.
[ "$KIND" = nss ] || XKS_HSM_SO_PIN=$(cat "$DEV/so-pin") xks hsm init-token
xks keys create foo --usage encrypt,decrypt --if-missing
xks keys create encrypt_only_key --usage encrypt --if-missing
xks keys create decrypt_only_key --usage decrypt --if-missing
xks keys create impotent_key --usage none --if-missing

bash scripts/dev-info.sh "$DEV" "$KIND"
exec node "$ROOT/dist/cli/main.js" serve --config "$DEV/config.yaml"
