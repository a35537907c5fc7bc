#!/usr/bin/env bash
# Installs the prerequisites (as scripts/setup.sh) and runs the whole test suite against real SoftHSMv2 tokens
# that the tests create under the system temp directory. Safe to run any number of times.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npx tsc -p tsconfig.test.json
npx vitest run "$@"
