#!/usr/bin/env bash
# Installs what the proxy needs on Debian/Ubuntu and builds it. Safe to run any number of times.
#   apt:  softhsm2 (the PKCS#11 token for dev/CI), opensc (pkcs11-tool), openssl (demo TLS certificate), curl,
#         libnss3-tools (certutil: makes the NSS softoken databases of the tests' second token kind; brings libnss3),
#         prometheus (for promtool only: the tests check deploy/monitoring/'s alert rules with it; the server it also
#         brings is stopped and disabled, since it would listen on 9090, the admin API's port in the demo)
# This is the development and CI setup (SoftHSM, the test tools, dev dependencies). A production host uses
# scripts/install.sh instead: no SoftHSM, no test tools, production dependencies only.
#   npm:  the dependencies in package-lock.json (pkcs11js compiles with node-gyp: python3, make, g++)
#   gcc (brought by g++) builds the PKCS#11 HSM emulator used by the tests (scripts/build-emulator.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -e /usr/lib/softhsm/libsofthsm2.so ] || need_apt+=(softhsm2)
command -v pkcs11-tool >/dev/null || need_apt+=(opensc)
command -v certutil >/dev/null || need_apt+=(libnss3-tools)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v curl >/dev/null || need_apt+=(curl)
command -v make >/dev/null || need_apt+=(make)
command -v g++ >/dev/null || need_apt+=(g++)
command -v python3 >/dev/null || need_apt+=(python3)
command -v promtool >/dev/null || need_apt+=(prometheus)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} with apt-get"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # Only promtool is wanted from the prometheus package: its server would hold port 9090 (the demo's admin API).
  if [[ " ${need_apt[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  fi
fi

# crypto.hash (one-shot SHA-256 on the SigV4 path) arrived in Node 20.12.
if ! node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=12)?0:1)' 2>/dev/null; then
  echo "setup: Node.js 20.12 or newer is required (found $(node -v 2>/dev/null || echo none))" >&2
  exit 1
fi

# node-gyp needs Node's headers; with Debian's nodejs they are under /usr.
if [ -z "${npm_config_nodedir:-}" ] && [ -f /usr/include/node/node.h ] && [ ! -d "$HOME/.cache/node-gyp" ]; then
  export npm_config_nodedir=/usr
fi

stamp=node_modules/.package-lock.json
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ] || [ ! -e node_modules/pkcs11js/build/Release/pkcs11.node ]; then
  echo "setup: installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error
fi

bash scripts/build-emulator.sh

echo "setup: building"
npm run --silent build
