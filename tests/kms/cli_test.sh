#!/usr/bin/env bash
# cloister-kms and `cloister kms` command lines: help, usage errors (exit 2),
# failures (exit 1), init/user add/serve over TLS, audit listing, policy output.
set -uo pipefail
build="${1:?build dir}"
kms="$build/tools/cloister-kms/cloister-kms"
cli="$build/src/cli/cloister"
tmp="$(mktemp -d)"; pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fails=0
expect() { # expect CODE CMD...
  local want=$1; shift
  "$@" >"$tmp/out" 2>"$tmp/err"; local got=$?
  if [ "$got" != "$want" ]; then echo "FAIL ($got != $want): $*"; cat "$tmp/err"; fails=$((fails+1)); fi
}
expect 0 "$kms" --help
expect 2 "$kms"
expect 2 "$kms" frob
expect 2 "$kms" init
expect 2 "$kms" serve "$tmp/x"
expect 2 "$kms" user add alice
expect 0 "$kms" init "$tmp/s" --region eu-west-1 --account 123456789012
expect 1 "$kms" init "$tmp/s"
expect 1 "$kms" init "$tmp/t" --account 12
[ "$(stat -c %a "$tmp/s/root.key")" = 600 ] || { echo "FAIL root.key mode"; fails=$((fails+1)); }
expect 0 "$kms" user add alice --dir "$tmp/s"
grep -q '^secret_access_key [A-Za-z0-9+/]\{40\}$' "$tmp/out" || { echo "FAIL no secret printed"; fails=$((fails+1)); }
grep -q '^arn arn:aws:iam::123456789012:user/alice$' "$tmp/out" || { echo "FAIL arn"; fails=$((fails+1)); }
expect 1 "$kms" user add alice --dir "$tmp/s"
expect 1 "$kms" user add 'bad name' --dir "$tmp/s"
expect 1 "$kms" serve "$tmp/nope" --listen 127.0.0.1:0
expect 2 "$kms" serve "$tmp/s" --listen 127.0.0.1:0 --tls-cert x
chmod 644 "$tmp/s/root.key"; expect 1 "$kms" user add bob --dir "$tmp/s"; chmod 600 "$tmp/s/root.key"
# TLS: an unauthenticated request gets the AWS error shape over HTTPS
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tmp/tls.key" -out "$tmp/tls.crt" -subj /CN=127.0.0.1 \
  -days 1 >/dev/null 2>&1
"$kms" serve "$tmp/s" --listen 127.0.0.1:0 --tls-cert "$tmp/tls.crt" --tls-key "$tmp/tls.key" >"$tmp/serve.out" 2>&1 &
pid=$!
for _ in $(seq 600); do grep -q '^listening on' "$tmp/serve.out" && break; sleep 0.05; done
port="$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$tmp/serve.out")"
body="$(curl -sk --cacert "$tmp/tls.crt" -X POST "https://127.0.0.1:$port/" -H 'X-Amz-Target: TrentService.ListKeys' \
  -H 'Content-Type: application/x-amz-json-1.1' -d '{}')"
case "$body" in *'"__type":"MissingAuthenticationTokenException"'*) ;; *) echo "FAIL tls body: $body"; fails=$((fails+1));; esac
body="$(curl -sk -X POST "https://127.0.0.1:$port/" -H 'X-Amz-Target: TrentService.ListKeys' \
  -H 'Content-Type: text/plain' -d '{}')"
case "$body" in *SerializationException*) ;; *) echo "FAIL content-type: $body"; fails=$((fails+1));; esac
kill "$pid"; wait "$pid" 2>/dev/null; pid=""
# audit lists the refused requests, never bodies
expect 0 "$cli" kms audit --dir "$tmp/s" --json
[ "$(grep -c '"decision":"error"' "$tmp/out")" -ge 2 ] || { echo "FAIL audit rows"; cat "$tmp/out"; fails=$((fails+1)); }
expect 0 "$cli" kms audit --dir "$tmp/s"
expect 2 "$cli" kms audit
expect 1 "$cli" kms audit --dir "$tmp/nope"
expect 2 "$cli" kms
expect 0 "$cli" kms --help
p0=$(printf 'a%.0s' $(seq 96)); d=$(printf 'B%.0s' $(seq 64))
expect 0 "$cli" kms policy --pcr0 "$p0" --pcr2 "$p0" --model-digest "$d" --principal arn:aws:iam::123456789012:user/enclave
grep -q '"Sid": "DenyDecryptUnlessAttestedPCR2"' "$tmp/out" || { echo "FAIL policy deny"; fails=$((fails+1)); }
grep -q "\"kms:EncryptionContext:cloister:model-sha256\": \"$(printf 'b%.0s' $(seq 64))\"" "$tmp/out" || { echo "FAIL policy ctx"; fails=$((fails+1)); }
expect 2 "$cli" kms policy --pcr0 abc --model-digest "$d" --principal arn:aws:iam::123456789012:user/e
expect 2 "$cli" kms policy --pcr0 "$p0" --model-digest "$d"
expect 2 "$cli" kms policy --pcr0 "$p0" --model-digest "$d" --principal bob
expect 2 "$cli" kms policy --pcr40 "$p0" --model-digest "$d" --principal arn:aws:iam::123456789012:user/e
echo "cli_test: $fails failures"
[ "$fails" = 0 ]
