#!/usr/bin/env bash
# End to end through real processes: cloister-kms, cloister-host, and
# cloister-enclave under cloister-sim. Checks what issue 6 asks for:
#  - the answer through the enclave equals `cloister run` on the plain GGUF;
#  - no plaintext (a marker in the prompt, the answer itself) in anything the
#    host or key service writes or sends;
#  - a changed image gets no key and is refused by the client;
#  - replayed and altered OHTTP requests, and another nonce, are rejected;
#  - the enclave killed mid-stream: clear client error, host stays up and
#    serves again after the enclave restarts.
. "$(dirname "$0")/lib.sh"
SRC=$CLOISTER_SOURCE_DIR
BUILD=$CLOISTER_BUILD_DIR
set +u
. "$SRC/scripts/stack.sh"
set -u
command -v curl >/dev/null || { echo "skipped: curl missing"; exit 77; }

model=$cl_tmp/model.gguf
if [ -n "${CLOISTER_REFERENCE:-}" ] && [ -f "$CLOISTER_REFERENCE/models/tiny-llama-q8_0.gguf" ]; then
  cp "$CLOISTER_REFERENCE/models/tiny-llama-q8_0.gguf" "$model"
else
  echo "note: CLOISTER_REFERENCE unset; using a generated model"
  "$BUILD/src/cli/cloister" mkmodel --arch llama --shape tiny --type q8_0 -o "$model" >/dev/null
fi
STACK_CAPTURE=1
export STACK_CAPTURE
export TMPDIR=$cl_tmp/tmp && mkdir -p "$TMPDIR"   # the host's and key service's temp files land here
if ! stack_up "$BUILD" "$model"; then bad "stack came up"; stack_down; finish; exit 1; fi
ok "key service, host and enclave up (key released to the attested enclave)"
# issue 9: the operator's directory holds its credentials and nothing of the owner's
[ "$(ls "$OPERATOR_DIR")" = operator.json ] && ok "operator's directory: only operator.json (no sim CA key, no owner credentials)" \
  || bad "operator's directory holds: $(ls "$OPERATOR_DIR" | tr '\n' ' ')"
grep -q '"Sid": "DenyDecryptUnlessAttestationRoot"' "$OWNER_DIR/policy.json" && grep -q ':444455556666:user/operator' "$OWNER_DIR/policy.json" \
  && ok "owner's key policy pins the sim root and names the operator of another account" || bad "stack policy"
trap 'stack_down' EXIT

# 1. same answer as cloister run on the plain model, greedy and sampled, streamed and not
q="The patient presents with"
for args in "--temp 0" "--temp 0.8 --seed 7"; do
  want=$("$CL" run "$D/model.gguf" --chat -p "$q" -n 24 $args --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["text"])')
  got=$("$CL" ask --host "$host_url" --trust "$D/TRUST.json" -n 24 $args --json "$q" 2>"$cl_tmp/err" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["answer"])')
  [ -n "$want" ] && [ "$want" = "$got" ] && ok "enclave answer equals cloister run ($args)" || bad "answer differs ($args): run='$want' enclave='$got'"
  got=$("$CL" ask --host "$host_url" --trust "$D/TRUST.json" -n 24 $args --stream "$q" 2>"$cl_tmp/err")
  [ "$want" = "$got" ] && ok "streamed answer equals cloister run ($args)" || bad "streamed answer differs ($args): '$got'"
done

# 2. no plaintext outside the enclave
marker="PHI-MARKER-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
answer=$("$CL" ask --host "$host_url" --trust "$D/TRUST.json" -n 24 --temp 0 --json \
         "Patient $marker has fever and cough; assess" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["answer"])')
[ ${#answer} -ge 12 ] && ok "got an answer to look for (${#answer} bytes)" || bad "answer too short to search for: '$answer'"
curl -s "$host_url/metrics" > "$D/metrics.txt"
[ "$(cat "$D"/capture/* | wc -c)" -gt 1000 ] && ok "host capture recorded the traffic" || bad "host capture is empty"
hits=$(grep -rlaF -e "$marker" -e "$answer" "$D/capture" "$D/host.log" "$D/kms.log" "$KMS_DIR" "$D/metrics.txt" "$TMPDIR" "$D/vsock" "$D/enclave.log" 2>/dev/null || true)
[ -z "$hits" ] && ok "prompt marker and answer absent from host and key-service logs, metrics, SQLite, temp files and captured socket bytes" || bad "plaintext found in: $hits"
grep -qaF "$marker" <(sqlite3 "$KMS_DIR/kms.db" .dump 2>/dev/null) && bad "marker in the key-service database" || ok "marker absent from the key-service database dump"

# 3. replayed and altered OHTTP requests
req=$(ls "$D"/capture/*-http-in.bin | while read -r f; do grep -qa 'message/ohttp-req' "$f" && echo "$f"; done | tail -1)
if [ -n "$req" ]; then
  python3 - "$req" "$cl_tmp/body" <<'PY'
import sys
# a keep-alive connection holds several requests: take the OHTTP one's body
d, body = open(sys.argv[1], 'rb').read(), None
while d:
    i = d.index(b'\r\n\r\n')
    head = d[:i].decode('latin-1').lower()
    n = 0
    for line in head.split('\r\n'):
        if line.startswith('content-length:'):
            n = int(line.split(':')[1])
    if 'message/ohttp-req' in head:
        body = d[i + 4:i + 4 + n]
    d = d[i + 4 + n:]
open(sys.argv[2], 'wb').write(body)
PY
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: message/ohttp-req' --data-binary @"$cl_tmp/body" "$host_url/v1/ohttp")
  [ "$code" = 400 ] && ok "replayed OHTTP request rejected (HTTP $code)" || bad "replay answered HTTP $code"
  python3 -c "import sys; b=bytearray(open(sys.argv[1],'rb').read()); b[-5]^=1; open(sys.argv[1],'wb').write(b)" "$cl_tmp/body"
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: message/ohttp-req' --data-binary @"$cl_tmp/body" "$host_url/v1/ohttp")
  [ "$code" = 401 ] || [ "$code" = 400 ] && ok "altered OHTTP request rejected (HTTP $code)" || bad "altered request answered HTTP $code"
else
  bad "no OHTTP request found in the capture"
fi

# 4. an attestation carrying another nonce is rejected; the right one verifies
n1=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'); n2=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
curl -sf -o "$cl_tmp/doc.cbor" "$host_url/v1/attestation?nonce=$n1"
pcrs=(); for i in 0 1 2; do pcrs+=(--pcr "$i=$(stack_pcr $i "$D/pcrs.json")"); done
expect 0 "attestation verifies with its own nonce and the image's PCRs" "$CL" attest verify "$cl_tmp/doc.cbor" --root "$D/sim-root.pem" "${pcrs[@]}" --nonce "$n1" --max-age 120
expect 1 "attestation with another nonce is rejected" "$CL" attest verify "$cl_tmp/doc.cbor" --root "$D/sim-root.pem" "${pcrs[@]}" --nonce "$n2"
expect_err "nonce" "the nonce check is named"

# 5. enclave killed mid-stream
"$CL" ask --host "$host_url" --trust "$D/TRUST.json" -n 1000 --temp 0.9 --seed 1 --stream "Write a long discharge summary" > "$cl_tmp/long.out" 2> "$cl_tmp/long.err" &
askpid=$!
for _ in $(seq 1 500); do [ -s "$cl_tmp/long.out" ] && break; sleep 0.01; done
# freeze the enclave (and the sandboxed child cloister-sim runs it in) at once,
# so a fast machine cannot finish the answer before the kill
kill -STOP $(ptree "$stack_enclave_pid") 2>/dev/null
stack_enclave_stop
wait $askpid; rc=$?
[ "$rc" = 1 ] && ok "client fails when the enclave dies mid-stream" || bad "client exit $rc after the enclave died"
grep -qiE "truncat|closed|incomplete|final chunk|transfer" "$cl_tmp/long.err" && ok "the client names the broken stream" || bad "client error: $(head -c 300 "$cl_tmp/long.err")"
code=$(curl -s -o /dev/null -w '%{http_code}' "$host_url/healthz")
[ "$code" = 200 ] && ok "host stays up" || bad "host healthz $code"
code=$(curl -s -o /dev/null -w '%{http_code}' "$host_url/readyz")
[ "$code" = 503 ] && ok "host reports not ready while the enclave is down" || bad "readyz $code"
if stack_enclave_start; then
  ok "enclave restarted (fresh key release)"
  expect 0 "a new question is answered after the restart" "$CL" ask --host "$host_url" --trust "$D/TRUST.json" -n 8 --temp 0 "$q"
else
  bad "enclave restart"
fi

# 6. one byte changed in the enclave image: no key, and a client pinned to it refuses the real one
stack_enclave_stop
"$SIM" pack --app "$APP" --name cloister-enclavX --memory 2048 -o "$D/changed.img" >/dev/null
"$SIM" measure "$D/changed.img" --json > "$D/changed-pcrs.json"
[ "$(stack_pcr 0 "$D/changed-pcrs.json")" != "$(stack_pcr 0 "$D/pcrs.json")" ] && ok "one changed byte changes PCR0" || bad "PCR0 unchanged"
"$SIM" run "$D/changed.img" --dir "$SIM_DIR" --vsock-dir "$D/vsock" --cid 16 > "$cl_tmp/changed.out" 2> "$cl_tmp/changed.log"
grep -q "AccessDenied" "$cl_tmp/changed.log" && ok "the key service refuses the key to the changed image" || bad "changed image: $(tail -2 "$cl_tmp/changed.log")"
stack_enclave_start >/dev/null 2>&1 || true
"$CL" measure --sim-image "$D/changed.img" --root "$D/sim-root.pem" --model "$D/model.sealed" -o "$cl_tmp/other-trust.json" >/dev/null 2>&1
before=$(curl -s "$host_url/metrics" | grep -E '^cloister_host_requests_total\{route="ohttp"' | awk '{s+=$2} END {print s+0}')
expect 1 "a client pinned to other PCRs refuses the enclave" "$CL" ask --host "$host_url" --trust "$cl_tmp/other-trust.json" -n 4 "$q"
expect_err "PCR" "the PCR mismatch is named"
after=$(curl -s "$host_url/metrics" | grep -E '^cloister_host_requests_total\{route="ohttp"' | awk '{s+=$2} END {print s+0}')
[ "$before" = "$after" ] && ok "nothing was sent to the refused enclave" || bad "OHTTP requests went out ($before -> $after)"
finish
