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
# kms.db and its WAL/SHM are private whatever the umask; serve refuses a readable store
for f in "$tmp/s"/kms.db*; do
  [ "$(stat -c %a "$f")" = 600 ] || { echo "FAIL $(basename "$f") mode $(stat -c %a "$f")"; fails=$((fails+1)); }
done
chmod 644 "$tmp/s/kms.db"; expect 1 "$kms" serve "$tmp/s" --listen 127.0.0.1:0
grep -q 'kms.db mode 644' "$tmp/err" || { echo "FAIL readable kms.db not named"; cat "$tmp/err"; fails=$((fails+1)); }
chmod 600 "$tmp/s/kms.db"
# principals of other accounts
expect 0 "$kms" user add op --account 444455556666 --dir "$tmp/s"
grep -q '^arn arn:aws:iam::444455556666:user/op$' "$tmp/out" || { echo "FAIL cross-account arn"; fails=$((fails+1)); }
expect 1 "$kms" user add op2 --account 4444 --dir "$tmp/s"
expect 0 "$kms" user add --help
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
expect 0 "$kms" audit "$tmp/s" --json
[ "$(grep -c '"decision":"error"' "$tmp/out")" -ge 2 ] || { echo "FAIL audit rows"; cat "$tmp/out"; fails=$((fails+1)); }
grep -q '"operation":"ListKeys".*"error":"MissingAuthenticationTokenException"' "$tmp/out" || { echo "FAIL audit row fields"; cat "$tmp/out"; fails=$((fails+1)); }
expect 0 "$kms" audit "$tmp/s"
head -1 "$tmp/out" | grep -q '^seq  *time_ms  *operation  *principal' || { echo "FAIL audit header"; cat "$tmp/out"; fails=$((fails+1)); }
[ "$(grep -c 'MissingAuthenticationTokenException' "$tmp/out")" -ge 1 ] || { echo "FAIL audit text rows"; cat "$tmp/out"; fails=$((fails+1)); }
CLOISTER_KMS_DIR="$tmp/s" expect 0 "$kms" audit --json
expect 0 "$kms" audit --help
grep -q 'audit DIR \[--json\]' "$tmp/out" || { echo "FAIL audit help"; fails=$((fails+1)); }
env -u CLOISTER_KMS_DIR "$kms" audit >/dev/null 2>"$tmp/err"; [ $? = 2 ] || { echo "FAIL audit without DIR"; fails=$((fails+1)); }
expect 2 "$kms" audit "$tmp/s" --frob
expect 2 "$kms" audit "$tmp/s" "$tmp/s"
expect 1 "$kms" audit "$tmp/nope"
# the client tool no longer opens the key service's database: it points there
expect 2 "$cli" kms audit --dir "$tmp/s"
grep -q "cloister-kms audit DIR" "$tmp/err" || { echo "FAIL cloister kms audit pointer"; cat "$tmp/err"; fails=$((fails+1)); }
expect 2 "$cli" kms
expect 0 "$cli" kms --help
p0=$(printf 'a%.0s' $(seq 96)); d=$(printf 'B%.0s' $(seq 64))
# any certificate will do as a root
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes -keyout "$tmp/r.key" -out "$tmp/root.pem" \
  -subj /CN=root -days 1 >/dev/null 2>&1
fp=$(openssl x509 -in "$tmp/root.pem" -outform DER | sha256sum | cut -d' ' -f1)
E=arn:aws:iam::444455556666:user/enclave A=arn:aws:iam::123456789012:user/owner
pol=(--pcr0 "$p0" --pcr2 "$p0" --model-digest "$d" --root "$tmp/root.pem")
expect 0 "$cli" kms policy "${pol[@]}" --principal "$E" --admin "$A"
grep -q '"Sid": "DenyDecryptUnlessAttestedPCR2"' "$tmp/out" || { echo "FAIL policy deny"; fails=$((fails+1)); }
grep -q '"Sid": "DenyDecryptUnlessAttestationRoot"' "$tmp/out" || { echo "FAIL policy root deny"; fails=$((fails+1)); }
grep -q '"Sid": "DenyReleasePrincipalKeyControl"' "$tmp/out" || { echo "FAIL policy key-control deny"; fails=$((fails+1)); }
grep -q "\"cloister:attestation-root-sha256\": \"$fp\"" "$tmp/out" || { echo "FAIL root pin"; fails=$((fails+1)); }
grep -q "\"kms:EncryptionContext:cloister:model-sha256\": \"$(printf 'b%.0s' $(seq 64))\"" "$tmp/out" || { echo "FAIL policy ctx"; fails=$((fails+1)); }
expect 2 "$cli" kms policy --pcr0 abc --model-digest "$d" --root "$tmp/root.pem" --principal "$E" --admin "$A"
expect 2 "$cli" kms policy --pcr0 "$p0" --model-digest "$d" --root "$tmp/root.pem"
expect 2 "$cli" kms policy "${pol[@]}" --principal bob --admin "$A"
expect 2 "$cli" kms policy --pcr40 "$p0" --model-digest "$d" --root "$tmp/root.pem" --principal "$E" --admin "$A"
# the generator refuses what would let the operator administer the key
expect 2 "$cli" kms policy --pcr0 "$p0" --model-digest "$d" --principal "$E" --admin "$A"     # no --root
grep -q -- '--root ROOT.pem is required' "$tmp/err" || { echo "FAIL --root reason"; fails=$((fails+1)); }
expect 2 "$cli" kms policy "${pol[@]}" --principal "$E"                                       # no --admin
grep -q -- '--admin ARN is required' "$tmp/err" || { echo "FAIL --admin reason"; fails=$((fails+1)); }
expect 2 "$cli" kms policy "${pol[@]}" --principal "$E" --admin "$E"
grep -q 'must differ from --principal' "$tmp/err" || { echo "FAIL same-principal reason"; fails=$((fails+1)); }
expect 2 "$cli" kms policy "${pol[@]}" --principal "$E" --admin arn:aws:iam::444455556666:root
grep -q 'account root of --principal' "$tmp/err" || { echo "FAIL account-root reason"; fails=$((fails+1)); }
expect 2 "$cli" kms policy "${pol[@]}" --principal arn:aws:iam::444455556666:root --admin "$A"
expect 2 "$cli" kms policy "${pol[@]}" --principal "$E" --admin 'arn:aws:iam::123456789012:user/*'
expect 1 "$cli" kms policy --pcr0 "$p0" --model-digest "$d" --root "$tmp/nope.pem" --principal "$E" --admin "$A"
echo "cli_test: $fails failures"
[ "$fails" = 0 ]
