#!/usr/bin/env bash
# Installs the prerequisites (as scripts/setup.sh) and runs the test suite against real PKCS#11 tokens that the tests
# create under the system temp directory, once per token kind (XKS_TEST_TOKEN, read by test/helpers/test-token.ts):
#   softhsm  SoftHSMv2: the whole suite.
#   emulated-cloudhsm, emulated-luna, emulated-nshield (after the two below): SoftHSM behind test/emulator, the vendor
#            profiles' behaviour; the tests in EMULATED_TESTS.
#   nss      NSS softoken (libsoftokn3, a database made with certutil): every test file that uses a token, i.e. all
#            but the token-free ones in NSS_EXCLUDE below (they already ran in the SoftHSM run).
#            Inside those files, tests that cannot apply to NSS skip themselves and say why (it.skipIf/describe.skipIf
#            on TOKEN_FACTS in test/helpers/test-token.ts):
#              test/keys/backup.test.ts, test/cli/kek.test.ts: a trusted KEK needs a security officer login; NSS has
#                none (C_Login(CKU_SO) answers CKR_USER_TYPE_INVALID), so the whole of both files skips.
#              test/cli/report.test.ts (the readable-key violation): NSS makes every private token key sensitive.
#              test/keys/rotation-race.test.ts (the first block): a SoftHSM file-object-store visibility fact.
#              test/hsm/reinit.test.ts (session leak count): counts SoftHSM's small session handle numbers.
# Both runs always run; the script fails if either failed, after saying which. Arguments go to both vitest runs
# (e.g. a file filter: scripts/test.sh test/cli). Safe to run any number of times.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npx tsc -p tsconfig.test.json

# Token-free tests (parsing, pure functions, manifests, profiles, the layer rule), the emulator's own test (it forwards to SoftHSM
# whatever the kind) and the deployment kit's (test/deploy: its monitoring test checks the dashboard and alert rules
# against a proxy on a SoftHSM token, which says nothing more on another kind): run once, in the SoftHSM run.
NSS_EXCLUDE=(
  'test/config/**' 'test/deploy/**' 'test/xks/**' 'test/emulator/**'
  test/layers.test.ts test/hsm/profiles.test.ts test/http/sigv4.test.ts test/http/admin-errors.test.ts
  test/http/request-cycle.test.ts test/cli/cli-errors.test.ts
  test/import/expiry.test.ts test/import/import-token.test.ts test/import/oaep.test.ts test/import/schemas.test.ts
  test/keys/policy.test.ts test/keys/catalogue-assemble.test.ts test/hsm/errors.test.ts test/http/routes.test.ts
  test/http/rate-limit.test.ts test/audit/trail-lock.test.ts test/cli/sigv4-sign.test.ts test/hsm/seam.test.ts
  test/hsm/session-pool.test.ts test/http/amz-date.test.ts test/keys/policy-wildcard.test.ts
)
nss_args=(--passWithNoTests)
for glob in "${NSS_EXCLUDE[@]}"; do nss_args+=(--exclude "$glob"); done

failed=0
summary=()
failures=()
reports=$(mktemp -d)
trap 'rm -rf "$reports"' EXIT
run() {
  local kind=$1 start=$SECONDS outcome
  shift
  echo
  echo "=== test: token kind ${kind} (XKS_TEST_TOKEN=${kind}) ==="
  if XKS_TEST_TOKEN="$kind" npx vitest run --reporter=default --reporter=json --outputFile.json="$reports/$kind.json" "$@"
  then outcome=passed
  else outcome=FAILED; failed=1; failures+=("$kind")
  fi
  summary+=("test: ${kind}: ${outcome} in $((SECONDS - start)) s")
}

# The vendor profiles (hsm/luna.yaml, cloudhsm.yaml, nshield.yaml) on SoftHSM behind our PKCS#11 emulator, which
# imposes each vendor's documented behaviour (test/emulator/pkcs11-emulator.c): the XKS conformance, tampering,
# rotation, key states and BYOK tests, or what the arguments name.
EMULATED_TESTS=(
  test/http/xks-conformance.test.ts test/http/tampering.test.ts test/keys/rotation.test.ts test/keys/states.test.ts
  test/import/algorithms.test.ts test/import/import-errors.test.ts test/import/material-lifecycle.test.ts
)

run softhsm "$@"
run nss "${nss_args[@]}" "$@"
for kind in emulated-cloudhsm emulated-luna emulated-nshield; do
  if [ $# -gt 0 ]; then run "$kind" --passWithNoTests "$@"; else run "$kind" "${EMULATED_TESTS[@]}"; fi
done

echo
printf '%s\n' "${summary[@]}"
for kind in "${failures[@]}"; do node scripts/test-failures.mjs "$reports/$kind.json" "$kind"; done
exit "$failed"
