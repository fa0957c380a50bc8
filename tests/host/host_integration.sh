#!/usr/bin/env bash
# The real cloister-host against tests/host/fake_enclave over UNIX-socket
# vsock, driven with curl: every route and error path, enclave death and
# restart, metrics, the boot services and the capture hook.
HOST=$1
FE=$2
. "$(dirname "$0")/../integration/lib.sh"
command -v curl >/dev/null || { echo "curl not found: skipped"; exit 77; }

d=$cl_tmp
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$d"
}
trap cleanup EXIT

export CLOISTER_VSOCK_DIR=$d/v
mkdir -m 700 "$d/v" "$d/cap"
head -c 1000000 /dev/urandom >"$d/model.sealed"
SECRET="wJalrXUtnFEMI/K7MDENG+bPxRfiCYSECRETKEY"
printf '{"access_key_id":"AKIAHOSTTEST","secret_access_key":"%s","region":"eu-west-1","session_token":"tok\\/en"}' \
  "$SECRET" >"$d/creds.json"
chmod 600 "$d/creds.json"

# wait_for FILE PATTERN: up to 5 s for PATTERN to show up in FILE
wait_for() {
  for _ in $(seq 1 100); do grep -qE "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  return 1
}

start_enclave() { # [STATE]
  "$FE" serve 16 "${1:-ready}" >"$d/fe.out" 2>>"$d/fe.err" &
  FE_PID=$!
  pids+=("$FE_PID")
  wait_for "$d/fe.out" serving || bad "fake enclave did not start"
  : >"$d/fe.out"
}

"$FE" tcp-echo >"$d/echo.port" &
pids+=($!)
wait_for "$d/echo.port" '^[0-9]+$' || bad "echo server did not start"
ECHO_PORT=$(cat "$d/echo.port")

# --- command line -----------------------------------------------------------
expect 0 "--help exits 0" "$HOST" --help
grep -q -- "--kms-credentials" "$cl_tmp/out" && ok "--help lists the options" || bad "--help text"
expect 2 "missing --listen is a usage error" "$HOST" --enclave-cid 16 --model "$d/model.sealed" --kms http://x \
  --kms-credentials "$d/creds.json"
expect_err "listen is required" "usage error names the missing option"
expect 2 "unknown option is a usage error" "$HOST" --bogus 1
expect 2 "bad --enclave-cid is a usage error" "$HOST" --enclave-cid x
common=(--listen 127.0.0.1:0 --enclave-cid 16 --model "$d/model.sealed")
cp "$d/creds.json" "$d/open.json"
chmod 640 "$d/open.json"
expect 1 "group-readable credentials are refused" "$HOST" "${common[@]}" --kms http://127.0.0.1:1 \
  --kms-credentials "$d/open.json"
expect_err "group and others must have no access" "refusal names the permission problem"
grep -q "$SECRET" "$cl_tmp/err" && bad "secret printed in an error" || ok "secret not in the error"
printf '{"access_key_id":"A","secret_access_key":"B","region":"r","extra":1}' >"$d/extra.json"
chmod 600 "$d/extra.json"
expect 1 "credentials with unknown members are refused" "$HOST" "${common[@]}" --kms http://127.0.0.1:1 \
  --kms-credentials "$d/extra.json"
expect 1 "a key-service URL with user info is refused" "$HOST" "${common[@]}" --kms http://u:p@127.0.0.1:1 \
  --kms-credentials "$d/creds.json"
expect 1 "a missing model is refused" "$HOST" --listen 127.0.0.1:0 --enclave-cid 16 --model "$d/nope" \
  --kms http://127.0.0.1:1 --kms-credentials "$d/creds.json"

# --- start ------------------------------------------------------------------
"$HOST" "${common[@]}" --vsock-dir "$d/v" --kms "http://127.0.0.1:$ECHO_PORT" --kms-credentials "$d/creds.json" \
  --timeout-ms 1000 --max-body 65536 --max-inflight 100000 --capture-dir "$d/cap" >"$d/host.out" 2>"$d/host.log" &
HOST_PID=$!
pids+=("$HOST_PID")
wait_for "$d/host.out" '^listening on ' || { bad "host did not start"; cat "$d/host.log"; finish; exit 1; }
PORT=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$d/host.out")
U="http://127.0.0.1:$PORT"
start_enclave

# req NAME ARGS...: curl into $d/NAME.body / NAME.hdr, prints the status code
req() {
  local n=$1; shift
  curl -s -o "$d/$n.body" -D "$d/$n.hdr" -w '%{http_code}' --max-time 10 "$@"
}
check() { # DESC WANT GOT
  if [ "$2" = "$3" ]; then ok "$1"; else bad "$1 (got $3, wanted $2)"; fi
}
metric() { # NAME-WITH-LABELS: value from a fresh /metrics scrape (0 when absent)
  curl -s "$U/metrics" >"$d/metrics.txt"
  local v
  v=$(awk -v n="$1" '$1 == n {print $2; exit}' "$d/metrics.txt")
  echo "${v:-0}"
}

# --- routes -----------------------------------------------------------------
check "GET /healthz is 200" 200 "$(req health "$U/healthz")"
check "/healthz says ok" ok "$(tr -d '\n' <"$d/health.body")"
check "GET /readyz is 200 when the enclave is ready" 200 "$(req ready "$U/readyz")"

before=$(metric 'cloister_host_requests_total{route="attestation",code="200"}')
NONCE=00112233445566778899AABBCCDDEEFF0123
check "attestation with a good nonce is 200" 200 "$(req att "$U/v1/attestation?nonce=$NONCE")"
grep -qi '^content-type: application/cbor' "$d/att.hdr" && ok "attestation is application/cbor" || bad "att ctype"
want=$(printf 'FAKE-ATTESTATION-DOC:' | od -An -tx1 | tr -d ' \n')$(tr 'A-F' 'a-f' <<<"$NONCE")
check "the enclave's document comes back unchanged (nonce relayed)" "$want" "$(od -An -tx1 "$d/att.body" | tr -d ' \n')"
after=$(metric 'cloister_host_requests_total{route="attestation",code="200"}')
check "metrics count the attestation request" $((before + 1)) "$after"
check "nonce of 15 bytes is 400" 400 "$(req n1 "$U/v1/attestation?nonce=$(printf '%030d' 0)")"
check "nonce of 65 bytes is 400" 400 "$(req n2 "$U/v1/attestation?nonce=$(printf '%0130d' 0)")"
check "non-hex nonce is 400" 400 "$(req n3 "$U/v1/attestation?nonce=zz112233445566778899aabbccddeeff")"
check "missing nonce is 400" 400 "$(req n4 "$U/v1/attestation")"
grep -q '^{"error":"nonce must be 16 to 64 bytes of hex"}$' "$d/n4.body" && ok "bad nonce error is fixed JSON" \
  || bad "bad nonce body: $(cat "$d/n4.body")"

check "POST message/ohttp-req is 200" 200 "$(req o1 -H 'Content-Type: message/ohttp-req' --data-binary 'CIPHERTEXT-1' "$U/v1/ohttp")"
grep -qi '^content-type: message/ohttp-res' "$d/o1.hdr" && ok "answer is message/ohttp-res" || bad "o1 ctype"
check "OHTTP answer relayed" "ENCRYPTED-RESPONSE:CIPHERTEXT-1" "$(cat "$d/o1.body")"
check "wrong content type is 400" 400 "$(req o2 -H 'Content-Type: application/json' --data-binary '{}' "$U/v1/ohttp")"
check "no content type is 400" 400 "$(req o3 -H 'Content-Type:' --data-binary 'x' "$U/v1/ohttp")"
check "empty body is 400" 400 "$(req o3b -H 'Content-Type: message/ohttp-req' --data-binary '' "$U/v1/ohttp")"
head -c 70000 /dev/zero >"$d/big"
check "body over --max-body is 413" 413 "$(req o4 -H 'Content-Type: message/ohttp-req' --data-binary @"$d/big" "$U/v1/ohttp")"
check "chunked upload over --max-body is 413" 413 "$(req o5 -H 'Content-Type: message/ohttp-req' \
  -H 'Transfer-Encoding: chunked' --data-binary @"$d/big" "$U/v1/ohttp")"
check "GET /v1/ohttp is 405" 405 "$(req o6 "$U/v1/ohttp")"
check "POST /healthz is 405" 405 "$(req o7 -X POST "$U/healthz")"
check "unknown path is 404" 404 "$(req o8 "$U/v1/nothing")"

check "chunked OHTTP is 200" 200 "$(req c1 -N -H 'Content-Type: message/ohttp-chunked-req' --data-binary 'MARKER-REQ-7f3a' "$U/v1/ohttp")"
grep -qi '^transfer-encoding: chunked' "$d/c1.hdr" && ok "chunked answer uses chunked transfer" || bad "c1 TE"
grep -qi '^content-type: message/ohttp-chunked-res' "$d/c1.hdr" && ok "chunked answer content type" || bad "c1 ctype"
check "all chunks forwarded in order" "chunk-0;chunk-1;chunk-2;chunk-3;chunk-4;" "$(cat "$d/c1.body")"

check "enclave ERROR frame maps to its status (429)" 429 "$(req e1 -H 'Content-Type: message/ohttp-req' --data-binary 'ERR' "$U/v1/ohttp")"
check "ERROR frame body names the code" '{"error":"enclave error","code":"PROTO_LIMIT"}' "$(cat "$d/e1.body")"
check "malformed enclave frame is 502" 502 "$(req e2 -H 'Content-Type: message/ohttp-req' --data-binary 'JUNK' "$U/v1/ohttp")"
t0=$(date +%s%N)
check "enclave timeout is 504" 504 "$(req e3 -H 'Content-Type: message/ohttp-req' --data-binary 'SLOW' "$U/v1/ohttp")"
ms=$((($(date +%s%N) - t0) / 1000000))
[ "$ms" -ge 900 ] && [ "$ms" -lt 2900 ] && ok "timeout honours --timeout-ms ($ms ms)" || bad "timeout took $ms ms"

# Bodies in flight are bounded: one slow request holds 60004 bytes, a second
# 60000-byte body would pass the 100000-byte budget.
{ printf 'SLOW'; head -c 60000 /dev/zero; } >"$d/slow60k"
head -c 60000 /dev/zero >"$d/b60k"
req busy1 -H 'Content-Type: message/ohttp-req' --data-binary @"$d/slow60k" "$U/v1/ohttp" >"$d/busy1.code" &
bp=$!
sleep 0.3
check "bodies over the in-flight budget get 503" 503 "$(req busy2 -H 'Content-Type: message/ohttp-req' --data-binary @"$d/b60k" "$U/v1/ohttp")"
wait "$bp"
check "the request holding the budget still completes (504 from the slow enclave)" 504 "$(cat "$d/busy1.code")"
check "budget released afterwards" 200 "$(req busy3 -H 'Content-Type: message/ohttp-req' --data-binary @"$d/b60k" "$U/v1/ohttp")"
check "busy rejections counted" 1 "$(metric cloister_host_busy_rejects_total)"

# --- enclave death mid-stream, restart --------------------------------------
aborts0=$(metric cloister_host_stream_aborts_total)
curl -s -N -o "$d/die.body" --max-time 10 -H 'Content-Type: message/ohttp-chunked-req' --data-binary 'DIE' "$U/v1/ohttp"
rc=$?
[ "$rc" != 0 ] && ok "client sees an incomplete chunked body (curl exit $rc)" || bad "mid-stream death looked complete"
check "chunks before the death were forwarded" "chunk-0;chunk-1;" "$(cat "$d/die.body")"
wait "$FE_PID" 2>/dev/null
check "stream abort counted" $((aborts0 + 1)) "$(metric cloister_host_stream_aborts_total)"
check "host stays up (healthz 200)" 200 "$(req h2 "$U/healthz")"
fails0=$(metric cloister_host_enclave_connect_failures_total)
check "enclave down: OHTTP is 502" 502 "$(req d1 -H 'Content-Type: message/ohttp-req' --data-binary 'x' "$U/v1/ohttp")"
check "enclave down: attestation is 502" 502 "$(req d2 "$U/v1/attestation?nonce=$NONCE")"
check "enclave down: readyz is 503" 503 "$(req d3 "$U/readyz")"
check "connection failures counted" $((fails0 + 3)) "$(metric cloister_host_enclave_connect_failures_total)"
check "enclave state gauge reads not ready" 0 "$(metric cloister_host_enclave_ready)"
start_enclave loading
check "enclave loading: readyz is 503" 503 "$(req l1 "$U/readyz")"
check "enclave state gauge: not_ready" 1 "$(metric 'cloister_host_enclave_state{state="not_ready"}')"
kill "$FE_PID"; wait "$FE_PID" 2>/dev/null
start_enclave
check "after restart: readyz is 200" 200 "$(req r1 "$U/readyz")"
check "enclave state gauge reads ready" 1 "$(metric cloister_host_enclave_ready)"
check "after restart: chunked OHTTP works" "chunk-0;chunk-1;chunk-2;chunk-3;chunk-4;" \
  "$(curl -s -N --max-time 10 -H 'Content-Type: message/ohttp-chunked-req' --data-binary 'again' "$U/v1/ohttp")"

# --- boot services ----------------------------------------------------------
"$FE" boot >"$d/boot.json" 2>"$d/boot.err" && ok "boot config served" || bad "boot config: $(cat "$d/boot.err")"
grep -q "\"endpoint\":\"http://127.0.0.1:$ECHO_PORT\"" "$d/boot.json" && ok "boot config carries the endpoint" || bad "endpoint"
grep -q "\"secret_access_key\":\"$SECRET\"" "$d/boot.json" && ok "boot config carries the credentials" || bad "creds"
grep -q '"session_token":"tok/en"' "$d/boot.json" && ok "session token decoded and re-encoded" || bad "session token"
grep -q '"max_request_bytes":65536' "$d/boot.json" && grep -q '"request_timeout_ms":1000' "$d/boot.json" \
  && ok "boot config carries the limits" || bad "limits: $(cat "$d/boot.json")"
"$FE" fetch-model "$d/m1" && cmp -s "$d/m1" "$d/model.sealed" && ok "model stream equals the file" || bad "model 1"
"$FE" fetch-model "$d/m2" && cmp -s "$d/m2" "$d/model.sealed" && ok "model served again (enclave restart)" || bad "model 2"
check "model bytes counted" 2000000 "$(metric cloister_host_model_bytes_total)"
"$FE" kms-roundtrip 300000 >/dev/null && ok "key-service pipe echoes 300000 bytes" || bad "kms pipe 1"
"$FE" kms-roundtrip 1000 >/dev/null && ok "key-service pipe serves a second connection" || bad "kms pipe 2"
sleep 0.2
check "key-service bytes counted" 301000 "$(metric 'cloister_host_kms_proxy_bytes_total{direction="to_kms"}')"

# --- capture hook -----------------------------------------------------------
sleep 0.2
cnt() { ls "$d/cap" | grep -c -- "$1"; }
[ "$(cnt -http-in.bin)" -ge 20 ] && ok "HTTP connections captured ($(cnt -http-in.bin))" || bad "http captures"
grep -lq "MARKER-REQ-7f3a" "$d"/cap/*-http-in.bin && ok "captured HTTP bytes hold the request" || bad "http capture content"
grep -lq "MARKER-REQ-7f3a" "$d"/cap/*-enclave-out.bin && ok "captured enclave bytes hold the forwarded request" \
  || bad "enclave capture content"
grep -lq "ENCRYPTED-RESPONSE:CIPHERTEXT-1" "$d"/cap/*-enclave-in.bin && ok "captured enclave answers" || bad "enclave in"
n=0; for f in "$d"/cap/*-model-out.bin; do cmp -s "$f" "$d/model.sealed" && n=$((n + 1)); done
check "both model streams captured byte for byte" 2 "$n"
big=$(for f in "$d"/cap/*-kmsproxy-in.bin "$d"/cap/*-kms-out.bin; do stat -c %s "$f"; done | grep -c '^300000$')
check "key-service pipe captured on both sockets" 2 "$big"

# --- logs -------------------------------------------------------------------
grep -vq '^{"ts":' "$d/host.log" && bad "non-JSON log line: $(grep -v '^{"ts":' "$d/host.log" | head -1)" \
  || ok "logs are JSON lines"
grep -q '"event":"http_request".*"request_id":"[0-9a-f]\{32\}".*"route":"ohttp".*"status":200' "$d/host.log" \
  && ok "request lines carry id, route and status" || bad "request log fields"
for s in "$SECRET" AKIAHOSTTEST MARKER-REQ-7f3a CIPHERTEXT ENCRYPTED-RESPONSE chunk-; do
  grep -q -- "$s" "$d/host.log" && bad "log contains '$s'" || ok "log free of '$s'"
done
grep -q MARKER "$d/metrics.txt" && bad "metrics contain payload" || ok "metrics free of payload"

kill -TERM "$HOST_PID"
wait "$HOST_PID"
check "host exits 0 on SIGTERM" 0 "$?"
finish
