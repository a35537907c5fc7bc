#!/usr/bin/env bash
# Installs the proxy on a production host, next to the HSM vendor's client: Debian or Ubuntu with Node.js 20.12 or
# newer. Unlike scripts/setup.sh (development and CI) it installs no SoftHSM, no test tools and no dev dependencies:
#   /opt/xks-proxy           the built proxy with its production dependencies only, and its SBOM (sbom.cdx.json)
#   /usr/local/bin/xks       the CLI (XKS_CONFIG defaults to /etc/xks/config.yaml)
#   /etc/xks                 root:xks 0750, for config.yaml (0640) and secret files (xks, 0400)
#   /var/lib/xks             xks 0700, the state directory (audit trail in /var/lib/xks/audit)
#   /etc/systemd/system      xks-proxy.service, the key maintenance and import sweep services and timers, and with
#                            --vendor the vendor's drop-in for each of the three services (deploy/systemd/vendors/)
#   user and group xks       uid and gid 10001 when free, as in the container image (shared volumes keep one owner)
# It starts nothing: write the config and the PIN file, run `xks hsm check`, then enable the units (it says how).
# Safe to run again (an upgrade replaces /opt/xks-proxy and the units; /etc/xks and /var/lib/xks are kept).
#
#   sudo scripts/install.sh [--vendor luna|cloudhsm|nshield] [--prefix /opt/xks-proxy]
#   scripts/install.sh --destdir DIR [--skip-build] ...   stage into DIR (packaging): no user, no chown, no systemctl
#   --skip-build   install the dist/ already built in this checkout (its node_modules must hold the dependencies)
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$(pwd)

vendor="" prefix=/opt/xks-proxy destdir="" skip_build=0
while [ $# -gt 0 ]; do
  case "$1" in
    --vendor) vendor=${2:-}; shift 2 ;;
    --prefix) prefix=${2:-}; shift 2 ;;
    --destdir) destdir=${2:-}; shift 2 ;;
    --skip-build) skip_build=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "install: unknown argument $1 (--help)" >&2; exit 2 ;;
  esac
done
case "$vendor" in ""|luna|cloudhsm|nshield) ;; *) echo "install: --vendor must be luna, cloudhsm or nshield" >&2; exit 2 ;; esac
case "$prefix" in /*) ;; *) echo "install: --prefix must be an absolute path" >&2; exit 2 ;; esac
if [ -z "$destdir" ] && [ "$(id -u)" -ne 0 ]; then
  echo "install: run as root (or stage with --destdir DIR)" >&2
  exit 1
fi

# crypto.hash (one-shot SHA-256 on the SigV4 path) arrived in Node 20.12.
if ! node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=12)?0:1)' 2>/dev/null; then
  echo "install: Node.js 20.12 or newer is required (found $(node -v 2>/dev/null || echo none))" >&2
  exit 1
fi

if [ "$skip_build" -eq 0 ]; then
  # pkcs11js compiles with node-gyp: python3, make and g++. Nothing else comes from apt.
  need_apt=()
  command -v make >/dev/null || need_apt+=(make)
  command -v g++ >/dev/null || need_apt+=(g++)
  command -v python3 >/dev/null || need_apt+=(python3)
  if [ ${#need_apt[@]} -gt 0 ]; then
    echo "install: installing ${need_apt[*]} with apt-get (to compile pkcs11js)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  fi
  if [ -z "${npm_config_nodedir:-}" ] && [ -f /usr/include/node/node.h ] && [ ! -d "$HOME/.cache/node-gyp" ]; then
    export npm_config_nodedir=/usr
  fi
  # The build needs the dev dependencies (TypeScript); only the production ones are installed below.
  echo "install: building"
  npm ci --no-audit --no-fund --loglevel=error
  npm run --silent build
fi
[ -f dist/cli/main.js ] || { echo "install: dist/cli/main.js is missing (build first, or drop --skip-build)" >&2; exit 1; }
[ -f node_modules/pkcs11js/build/Release/pkcs11.node ] || { echo "install: pkcs11js is not built in node_modules" >&2; exit 1; }

target="$destdir$prefix"
stage="$target.new"
rm -rf "$stage"
mkdir -p "$stage"
cp -a dist hsm package.json package-lock.json config.sample.yaml README.md "$stage/"
mkdir -p "$stage/deploy" && cp -a deploy/systemd deploy/monitoring "$stage/deploy/"

# Production dependencies only: the packages npm resolves for --omit=dev (parents before their nested packages).
mkdir -p "$stage/node_modules"
npm ls --omit=dev --all --parseable | while IFS= read -r dir; do
  rel=${dir#"$SRC"/}
  case "$rel" in node_modules/*) ;; *) continue ;; esac
  [ -e "$stage/$rel" ] && continue # already copied inside its parent package
  mkdir -p "$stage/$(dirname "$rel")"
  cp -a "$SRC/$rel" "$stage/$(dirname "$rel")/"
done
# What a production process never loads: pkcs11js's build intermediates.
rm -rf "$stage/node_modules/pkcs11js/build/Release/obj.target" "$stage/node_modules/pkcs11js/build/Release/.deps"
node scripts/sbom.mjs --out "$stage/sbom.cdx.json" >/dev/null
if [ -e "$target" ]; then rm -rf "$target.old" && mv "$target" "$target.old"; fi
mv "$stage" "$target"
rm -rf "$target.old"

mkdir -p "$destdir/usr/local/bin"
cat > "$destdir/usr/local/bin/xks" <<EOF
#!/bin/sh
# The xks CLI of the proxy installed in $prefix (scripts/install.sh).
export XKS_CONFIG="\${XKS_CONFIG:-/etc/xks/config.yaml}"
exec node $prefix/dist/cli/main.js "\$@"
EOF
chmod 0755 "$destdir/usr/local/bin/xks"

# The service account: uid and gid 10001 when free, as in the container image.
if [ -z "$destdir" ]; then
  if ! getent group xks >/dev/null; then
    if getent group 10001 >/dev/null; then groupadd --system xks; else groupadd --system --gid 10001 xks; fi
  fi
  if ! id xks >/dev/null 2>&1; then
    uid_opt=(--uid 10001); getent passwd 10001 >/dev/null && uid_opt=()
    useradd --system "${uid_opt[@]}" --gid xks --home-dir /var/lib/xks --no-create-home --shell /usr/sbin/nologin xks
  fi
  own_etc=(-o root -g xks) own_state=(-o xks -g xks)
else
  own_etc=() own_state=()
fi
install -d -m 0750 "${own_etc[@]}" "$destdir/etc/xks"
install -d -m 0700 "${own_state[@]}" "$destdir/var/lib/xks" "$destdir/var/lib/xks/audit"

units="$destdir/etc/systemd/system"
install -d -m 0755 "$units"
install -m 0644 deploy/systemd/*.service deploy/systemd/*.timer "$units/"
for svc in xks-proxy xks-keys-maintenance xks-import-sweep; do
  for other in luna cloudhsm nshield; do rm -f "$units/$svc.service.d/50-$other.conf"; done
  if [ -n "$vendor" ]; then
    install -d -m 0755 "$units/$svc.service.d"
    install -m 0644 "deploy/systemd/vendors/$vendor.conf" "$units/$svc.service.d/50-$vendor.conf"
  fi
done
if [ -z "$destdir" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

echo "install: installed in $destdir$prefix (production dependencies only), units in $units${vendor:+, $vendor drop-ins}"
cat <<EOF
Next:
  1. Write /etc/xks/config.yaml (config.sample.yaml in $prefix documents every field; hsm.profile: ${vendor:-luna|cloudhsm|nshield}):
       install -m 0640 -o root -g xks config.yaml /etc/xks/config.yaml
     and the PIN (hsm.pin: { file: /etc/xks/hsm-pin }) and SigV4 secrets, readable by xks only:
       printf '%s' "\$PIN" | install -m 0400 -o xks -g xks /dev/stdin /etc/xks/hsm-pin
  2. Check the HSM as the service user:  sudo -u xks xks hsm check
  3. Start:  systemctl enable --now xks-proxy.service xks-keys-maintenance.timer xks-import-sweep.timer
EOF
case "$vendor" in
  luna) echo "  Luna: register this host's NTLS client certificate and assign the partition; let group xks read its key (deploy/systemd/vendors/luna.conf)." ;;
  cloudhsm) echo "  CloudHSM: run /opt/cloudhsm/bin/configure-pkcs11 -a <HSM ENI IP>; let group xks write /opt/cloudhsm/run (deploy/systemd/vendors/cloudhsm.conf)." ;;
  nshield) echo "  nShield: enroll this host with the Connect (nethsmenroll); keep /opt/nfast/kmdata/local in step with the RFS (deploy/systemd/vendors/nshield.conf)." ;;
esac
