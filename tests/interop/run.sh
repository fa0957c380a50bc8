#!/usr/bin/env bash
# ctest driver: starts a real cloister-kms on 127.0.0.1 (random port) and runs
# interop.mjs with the AWS SDK. Exits 77 (skipped) when node_modules is absent.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="${1:?build dir}"
if [ ! -d "$here/node_modules/@aws-sdk/client-kms" ] || ! command -v node >/dev/null; then
  echo "skipped: run 'npm ci --prefix tests/interop' first"; exit 77
fi
kms="$build/tools/cloister-kms/cloister-kms"
tmp="$(mktemp -d)"; pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
"$kms" init "$tmp/kms" >/dev/null
creds="$("$kms" user add interop --dir "$tmp/kms")"
ak="$(awk '/^access_key_id/{print $2}' <<<"$creds")"
sk="$(awk '/^secret_access_key/{print $2}' <<<"$creds")"
extra=()
if [ -x "$build/tests/kms/kms_recipient_fixture" ]; then
  mkdir -p "$tmp/fx"; "$build/tests/kms/kms_recipient_fixture" "$tmp/fx" >/dev/null
  extra=(--trust-root "$tmp/fx/root.der")
  export RECIPIENT_DOC="$tmp/fx/doc.b64" RECIPIENT_KEY="$tmp/fx/rsa.pem"
fi
"$kms" serve "$tmp/kms" --listen 127.0.0.1:0 "${extra[@]}" >"$tmp/serve.out" 2>"$tmp/serve.err" &
pid=$!
for _ in $(seq 600); do grep -q "^listening on" "$tmp/serve.out" 2>/dev/null && break; sleep 0.05; done
port="$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$tmp/serve.out")"
[ -n "$port" ] || { cat "$tmp/serve.err"; exit 1; }
KMS_ENDPOINT="http://127.0.0.1:$port" KMS_AK="$ak" KMS_SK="$sk" node "$here/interop.mjs"
