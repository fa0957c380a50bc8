#!/usr/bin/env bash
# Exit codes and failure reasons of `cloister attest` on the shared Nitro documents.
set -u
CL="$1"
fails=0
expect() { # expect RC PATTERN -- command...
  local want=$1 pat=$2; shift 3
  local out; out=$("$@" 2>&1); local rc=$?
  if [[ $rc != "$want" ]] || ! grep -q -- "$pat" <<<"$out"; then
    echo "FAIL (rc $rc, want $want, pattern '$pat'): $*"; echo "$out" | head -5; fails=$((fails+1))
  fi
}
expect 0 "usage" -- "$CL" attest --help
expect 2 "DOC is required" -- "$CL" attest show
expect 2 "unknown subcommand" -- "$CL" attest frob
expect 2 "required" -- "$CL" attest verify somefile
expect 1 "" -- "$CL" attest show /nonexistent
if [[ -z "${CLOISTER_TESTDATA:-}" ]]; then echo "skipped: CLOISTER_TESTDATA is not set"; exit $((fails > 0)); fi
N="$CLOISTER_TESTDATA/nitro"; ROOT="$N/root/AWS_NitroEnclaves_Root-G1.pem"
PROD="$N/docs/blocky_2024-09-07_prod_1024B-fields.b64"; AT=2024-09-07T15:00:00Z
PCR0=e72a46ca80a260fb044a125442f0c7e331813bcbaf9724d9f3857758992766f2d65710a27aa94ae3949dd54e7c9fe86a
expect 0 "module_id" -- "$CL" attest show "$PROD"
expect 0 '"debug":true' -- "$CL" attest show --json "$N/docs/evervault_2022-10-12_debug.cbor"
expect 0 "OK" -- "$CL" attest verify "$PROD" --root "$ROOT" --at "$AT" --pcr "0=$PCR0"
expect 0 '"ok":true' -- "$CL" attest verify "$PROD" --root "$N/root/AWS_NitroEnclaves_Root-G1.der" --at 2024-09-07T17:00:00+02:00 --allow-any-pcr --json
expect 1 "ATTEST_PCR_MISMATCH" -- "$CL" attest verify "$PROD" --root "$ROOT" --at "$AT" --pcr "0=${PCR0%?}b"
expect 1 "ATTEST_PCR_MISSING" -- "$CL" attest verify "$PROD" --root "$ROOT" --at "$AT" --pcr "0=$PCR0" --pcr "17=$PCR0"
expect 1 "ATTEST_NO_PCR_POLICY" -- "$CL" attest verify "$PROD" --root "$ROOT" --at "$AT"
expect 1 "ATTEST_CERT_EXPIRED" -- "$CL" attest verify "$PROD" --root "$ROOT" --allow-any-pcr
expect 1 "ATTEST_CERT_NOT_YET_VALID" -- "$CL" attest verify "$PROD" --root "$ROOT" --at 2024-09-07T14:00:00Z --allow-any-pcr
expect 1 "ATTEST_STALE" -- "$CL" attest verify "$PROD" --root "$ROOT" --at 2024-09-07T17:00:00Z --allow-any-pcr --max-age 60
expect 0 "OK" -- "$CL" attest verify "$PROD" --root "$ROOT" --at 2024-09-07T14:38:00Z --allow-any-pcr --max-age 60
expect 1 "ATTEST_NONCE" -- "$CL" attest verify "$PROD" --root "$ROOT" --at "$AT" --allow-any-pcr --nonce 0101
expect 1 "ATTEST_DEBUG" -- "$CL" attest verify "$N/docs/blocky_2024-09-07_debug_1024B-fields.b64" --root "$ROOT" --at "$AT" --allow-any-pcr
expect 0 "OK" -- "$CL" attest verify "$N/docs/blocky_2024-09-07_debug_1024B-fields.b64" --root "$ROOT" --at "$AT" --allow-any-pcr --allow-debug
expect 1 "COSE_BAD_HEADER" -- "$CL" attest verify "$N/bad/blocky_selfsigned_attestation.b64" --root "$ROOT" --allow-any-pcr --allow-debug
expect 1 "ATTEST_ROOT_MISMATCH" -- "$CL" attest verify "$PROD" --root "$N/bad/blocky_selfsigned_cert.der" --at "$AT" --allow-any-pcr
expect 2 "RFC 3339" -- "$CL" attest verify "$PROD" --root "$ROOT" --at yesterday
expect 2 "0..31" -- "$CL" attest verify "$PROD" --root "$ROOT" --pcr "32=$PCR0"
expect 2 "96 hex" -- "$CL" attest verify "$PROD" --root "$ROOT" --pcr "0=abcd"
echo "cli checks done, $fails failed"
exit $((fails > 0))
