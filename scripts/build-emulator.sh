#!/usr/bin/env bash
# Builds the PKCS#11 HSM emulator used by tests (test/emulator/pkcs11-emulator.c) into
# test/emulator/build/libxks-emulator.so. Rebuilds only when the source is newer than the library; safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."

src=test/emulator/pkcs11-emulator.c
out=test/emulator/build/libxks-emulator.so
inc=node_modules/pkcs11js/includes/pkcs11

if [ -f "$out" ] && [ ! "$src" -nt "$out" ]; then
  exit 0
fi
if [ ! -f "$inc/pkcs11.h" ]; then
  echo "build-emulator: $inc/pkcs11.h is missing: run npm ci first" >&2
  exit 1
fi
command -v gcc >/dev/null || { echo "build-emulator: gcc is required (apt-get install gcc)" >&2; exit 1; }

mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
gcc -shared -fPIC -O2 -Wall -Wextra -Werror -fvisibility=hidden -I"$inc" -o "$tmp" "$src" -ldl -lpthread
mv -f "$tmp" "$out"
echo "build-emulator: built $out"
