#!/usr/bin/env bash
# Issue 9, break 1, performed as the operator would: root on the host, its own
# key service, the unmodified enclave image. The operator cannot read model A
# (the owner's), so it serves model B (one it has) and tries to pass it off as A:
#   a. B sealed under the operator's key with a header and key context that claim
#      A's digest      -> the enclave computes B's digest and refuses to boot;
#   b. header claims B but the key context claims A -> refused before the key is used;
#   c. B sealed honestly under the operator's key -> the enclave boots and attests
#      B's digest and the operator's key: a client pinning A (or the owner's key)
#      refuses before sending anything.
. "$(dirname "$0")/lib.sh"
SRC=$CLOISTER_SOURCE_DIR
BUILD=$CLOISTER_BUILD_DIR
set +u
. "$SRC/scripts/stack.sh"
set -u
command -v curl >/dev/null || { echo "skipped: curl missing"; exit 77; }
FORGE=$BUILD/tests/integration/cl_forge_sealed

modelA=$cl_tmp/a.gguf
modelB=$cl_tmp/b.gguf
"$BUILD/src/cli/cloister" mkmodel --arch llama --shape tiny --type q8_0 --seed 1 -o "$modelA" >/dev/null 2>&1 ||
  "$BUILD/src/cli/cloister" mkmodel --arch llama --shape tiny --type q8_0 -o "$modelA" >/dev/null
"$BUILD/src/cli/cloister" mkmodel --arch llama --shape tiny --type f32 -o "$modelB" >/dev/null
digestA=$(sha256sum "$modelA" | cut -d' ' -f1)
digestB=$(sha256sum "$modelB" | cut -d' ' -f1)
[ "$digestA" != "$digestB" ] || { bad "two different models"; finish; exit 1; }
export TMPDIR=$cl_tmp/tmp && mkdir -p "$TMPDIR"
if ! stack_up "$BUILD" "$modelA"; then bad "genuine stack came up"; stack_down; finish; exit 1; fi
trap 'evil_down; stack_down' EXIT
expect 0 "genuine deployment: the client verifies the owner's enclave" \
  "$CL" ask --host "$host_url" --trust "$D/TRUST.json" -n 4 --temp 0 "hello"
expect_err "key +arn:aws:kms:" "the attestation names the key the model key came from"

# The operator's own key service, key and credentials.
E=$D/evil && mkdir -m 700 "$E"
"$KMS" init "$E/kms" >/dev/null
"$KMS" user add mallory --dir "$E/kms" > "$E/mallory.txt"
macct=$(stack_field arn "$E/mallory.txt" | cut -d: -f5)
( umask 077
  printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' \
    "$(stack_field access_key_id "$E/mallory.txt")" "$(stack_field secret_access_key "$E/mallory.txt")" > "$E/credentials"
  printf '{"access_key_id":"%s","secret_access_key":"%s","region":"us-east-1"}\n' \
    "$(stack_field access_key_id "$E/mallory.txt")" "$(stack_field secret_access_key "$E/mallory.txt")" > "$E/host.json" )
"$KMS" serve "$E/kms" --listen 127.0.0.1:0 --trust-root "$D/sim-root.pem" > "$E/kms.out" 2> "$E/kms.log" &
evil_kms=$!
evil_host=
evil_enclave=
evil_down() {
  for p in $evil_enclave $evil_host $evil_kms; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  evil_enclave= evil_host= evil_kms=
}
stack_wait_for "$E/kms.out" 'listening on' 60 || { bad "operator's key service up"; finish; exit 1; }
evil_url=http://$(grep -oE '127\.0\.0\.1:[0-9]+' "$E/kms.out" | head -1)
printf '{"Version":"2012-10-17","Statement":[{"Sid":"all","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::%s:user/mallory"},"Action":"kms:*","Resource":"*"}]}\n' "$macct" > "$E/policy.json"
evil_key=$(AWS_SHARED_CREDENTIALS_FILE=$E/credentials AWS_REGION=us-east-1 \
  "$CL" kms create-key --kms "$evil_url" --policy "$E/policy.json" 2>"$E/create.err")
[ -n "$evil_key" ] && ok "operator made a key of its own" || { bad "operator key: $(cat "$E/create.err")"; finish; exit 1; }

# boot_evil MODEL.sealed: the genuine enclave image on a host the operator
# configured (its key service, its credentials); waits until ready or exited.
boot_evil() {
  local n=$1
  mkdir -m 700 "$E/vsock$n"
  "$HOST" --listen 127.0.0.1:0 --enclave-cid 16 --vsock-dir "$E/vsock$n" --model "$2" --kms "$evil_url" \
    --kms-credentials "$E/host.json" > "$E/host$n.out" 2> "$E/host$n.log" &
  evil_host=$!
  stack_wait_for "$E/host$n.out" 'listening on' 30 || return 1
  evil_host_url=http://$(grep -oE '127\.0\.0\.1:[0-9]+' "$E/host$n.out" | head -1)
  "$SIM" run "$D/enclave.img" --dir "$SIM_DIR" --vsock-dir "$E/vsock$n" --cid 16 > "$E/enclave$n.out" 2> "$E/enclave$n.log" &
  evil_enclave=$!
  for _ in $(seq 1 200); do
    curl -sf "$evil_host_url/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$evil_enclave" 2>/dev/null || return 2
    sleep 0.1
  done
  return 3
}
stop_evil() {
  for p in $evil_enclave $evil_host; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  evil_enclave= evil_host=
}
forge() { AWS_SHARED_CREDENTIALS_FILE=$E/credentials AWS_REGION=us-east-1 "$FORGE" "$modelB" "$1" "$evil_url" "$evil_key" "$2" "$3"; }

# a. header and key context both claim A's digest, the content is B
expect 0 "operator forges a sealed B claiming A's digest" forge "$E/forged-a.sealed" "$digestA" "$digestA"
boot_evil 1 "$E/forged-a.sealed"; r=$?
[ $r = 2 ] && ok "the enclave refused to boot on the forged model" || bad "enclave boot on forged model: status $r"
grep -q "refusing a substituted model" "$E/enclave1.log" &&
  ok "its error names the cause (digest computed in the enclave differs)" || bad "enclave error: $(tail -2 "$E/enclave1.log")"
curl -sf "$evil_host_url/readyz" >/dev/null 2>&1 && bad "forged host became ready" || ok "the forged deployment never became ready"
stop_evil

# b. the header tells the truth (B), the key context claims A
expect 0 "operator forges a header/context mismatch" forge "$E/forged-b.sealed" "$digestB" "$digestA"
boot_evil 2 "$E/forged-b.sealed"; r=$?
[ $r = 2 ] && ok "the enclave refused a key context that differs from the header" || bad "boot status $r"
grep -q "differs from the sealed header's model digest" "$E/enclave2.log" &&
  ok "error names the encryption context" || bad "enclave error: $(tail -2 "$E/enclave2.log")"
stop_evil

# c. B sealed honestly under the operator's key: the enclave serves B, and says so
AWS_SHARED_CREDENTIALS_FILE=$E/credentials AWS_REGION=us-east-1 \
  "$CL" seal "$modelB" -o "$E/b.sealed" --kms "$evil_url" --key-id "$evil_key" >/dev/null
boot_evil 3 "$E/b.sealed"; r=$?
[ $r = 0 ] && ok "the enclave boots on a model the operator really has" || bad "boot status $r: $(tail -2 "$E/enclave3.log")"
expect 1 "a client pinning the owner's model refuses the operator's enclave" \
  "$CL" ask --host "$evil_host_url" --trust "$D/TRUST.json" -n 4 "hello"
expect_err "different model" "the refusal names the model digest"
# A consumer who pins the owner's key rather than one model digest is not fooled either.
"$CL" measure --sim-image "$D/enclave.img" --root "$D/sim-root.pem" --model-sha256 "$digestB" \
  --kms-key-arn "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["kms"]["key_arn"])' "$D/TRUST.json")" \
  -o "$E/TRUST-owner-key.json" 2>/dev/null
expect 1 "a client pinning the owner's key refuses an enclave keyed by the operator's service" \
  "$CL" ask --host "$evil_host_url" --trust "$E/TRUST-owner-key.json" -n 4 "hello"
expect_err "key service differs" "the refusal names the key service"
stop_evil

# d. nothing the host passes at run time changes the enclave's behaviour unmeasured
expect 2 "cloister-sim run refuses enclave arguments from the host" \
  "$SIM" run "$D/enclave.img" --dir "$SIM_DIR" --vsock-dir "$E/vsock1" --cid 16 -- --chat-template chatml
expect_err "part of the measured image" "the refusal says where arguments belong"
"$SIM" pack --app "$BUILD/tools/cloister-enclave/cloister-enclave.so" --name cloister-enclave --memory 2048 \
  -o "$E/args.img" -- --chat-template chatml >/dev/null
[ "$("$SIM" measure "$E/args.img" | head -1)" != "$("$SIM" measure "$D/enclave.img" | head -1)" ] &&
  ok "arguments packed into an image change its PCR0" || bad "PCR0 ignores the packed arguments"
finish
