#!/usr/bin/env bash
# cloister-host with the real stack (cloister-kms, cloister-enclave under
# cloister-sim, cloister ask), with the capture hook on: the question and the
# answer never appear in anything the host or key service sends, receives or
# writes; the host serves again after the enclave is killed and restarted.
# Usage: host_e2e.sh CLOISTER CLOISTER-SIM CLOISTER-KMS CLOISTER-HOST ENCLAVE.so
CL=$1 SIM=$2 KMS=$3 HOST=$4 APP=$5
. "$(dirname "$0")/../integration/lib.sh"
command -v curl >/dev/null || { echo "curl not found: skipped"; exit 77; }
for b in "$CL" "$SIM" "$KMS" "$HOST" "$APP"; do [ -e "$b" ] || { echo "missing $b: skipped"; exit 77; }; done

D=$cl_tmp
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$D"
}
trap cleanup EXIT
wait_for() { # FILE PATTERN
  for _ in $(seq 1 200); do grep -qE "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  return 1
}
die() { bad "$*"; finish; exit 1; }

# --- model owner and key service (as scripts/demo) ---------------------------
"$CL" mkmodel --arch gemma3 --shape tiny --type q8_0 -o "$D/model.gguf" >/dev/null 2>&1 || die "mkmodel"
digest=$(sha256sum "$D/model.gguf" | cut -d' ' -f1)
"$SIM" init "$D/sim" >/dev/null 2>&1 && "$SIM" root "$D/sim" >"$D/sim-root.pem" || die "sim init"
"$SIM" pack --app "$APP" --name cloister-enclave --memory 2048 -o "$D/enclave.img" >/dev/null || die "sim pack"
"$SIM" measure "$D/enclave.img" --json >"$D/pcrs.json" || die "sim measure"
pcr() { sed -E "s/.*\"PCR$1\":\"([0-9a-f]+)\".*/\1/" "$D/pcrs.json"; }
"$KMS" init "$D/kms" >/dev/null || die "kms init"
"$KMS" user add owner --dir "$D/kms" >"$D/owner.txt"
"$KMS" user add operator --dir "$D/kms" >"$D/operator.txt"
field() { sed -nE "s/^$1 (.*)$/\1/p" "$2"; }
account=$(field arn "$D/owner.txt" | cut -d: -f5)
(
  umask 077
  printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' \
    "$(field access_key_id "$D/owner.txt")" "$(field secret_access_key "$D/owner.txt")" >"$D/owner.credentials"
  printf '{"access_key_id":"%s","secret_access_key":"%s","region":"us-east-1"}\n' \
    "$(field access_key_id "$D/operator.txt")" "$(field secret_access_key "$D/operator.txt")" >"$D/operator.json"
)
OP_SECRET=$(field secret_access_key "$D/operator.txt")
rm -f "$D/owner.txt" "$D/operator.txt"
"$KMS" serve "$D/kms" --listen 127.0.0.1:0 --trust-root "$D/sim-root.pem" >"$D/kms.out" 2>"$D/kms.log" &
pids+=($!)
wait_for "$D/kms.out" 'listening on' || die "kms did not start"
kms_url=http://$(grep -oE '127\.0\.0\.1:[0-9]+' "$D/kms.out" | head -1)
"$CL" kms policy --pcr0 "$(pcr 0)" --pcr1 "$(pcr 1)" --pcr2 "$(pcr 2)" --model-digest "$digest" --root "$D/sim-root.pem" \
  --principal "arn:aws:iam::$account:user/operator" --admin "arn:aws:iam::$account:user/owner" >"$D/policy.json"
key=$(AWS_SHARED_CREDENTIALS_FILE=$D/owner.credentials AWS_REGION=us-east-1 \
  "$CL" kms create-key --kms "$kms_url" --policy "$D/policy.json") || die "create-key"
AWS_SHARED_CREDENTIALS_FILE=$D/owner.credentials AWS_REGION=us-east-1 \
  "$CL" seal "$D/model.gguf" -o "$D/model.sealed" --kms "$kms_url" --key-id "$key" >/dev/null || die "seal"
rm -f "$D/model.gguf"

# --- operator: host with capture, enclave under the simulator ----------------
mkdir -m 700 "$D/vsock" "$D/cap"
"$HOST" --listen 127.0.0.1:0 --enclave-cid 16 --vsock-dir "$D/vsock" --model "$D/model.sealed" --kms "$kms_url" \
  --kms-credentials "$D/operator.json" --capture-dir "$D/cap" >"$D/host.out" 2>"$D/host.log" &
HOST_PID=$!
pids+=($HOST_PID)
wait_for "$D/host.out" 'listening on' || die "host did not start"
U=http://$(grep -oE '127\.0\.0\.1:[0-9]+' "$D/host.out" | head -1)
start_enclave() {
  "$SIM" run "$D/enclave.img" --dir "$D/sim" --vsock-dir "$D/vsock" --cid 16 >>"$D/enclave.out" 2>>"$D/enclave.log" &
  SIM_PID=$!
  pids+=($SIM_PID)
  for _ in $(seq 1 300); do
    curl -sf "$U/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$SIM_PID" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
start_enclave && ok "enclave booted through the host (boot config, model stream, key-service pipe)" \
  || die "enclave not ready: $(tail -3 "$D/enclave.log")"
"$CL" measure --sim-image "$D/enclave.img" --root "$D/sim-root.pem" --model "$D/model.sealed" -o "$D/TRUST.json" \
  >/dev/null 2>&1 || die "measure"

# --- consumer ---------------------------------------------------------------
MARK=QzMarkerAsk7d2e9
ask() { "$CL" ask --host "$U" --trust "$D/TRUST.json" -n 24 --temp 0 "$@"; }
echo "Patient $MARK reports chest pain. What should be ruled out first?" >"$D/q1"
ask - <"$D/q1" >"$D/a1" 2>"$D/a1.err" && ok "ask through the host" || bad "ask: $(tail -2 "$D/a1.err")"
echo "Is $MARK-stream a symptom of anaemia?" >"$D/q2"
ask --stream - <"$D/q2" >"$D/a2" 2>"$D/a2.err" && ok "ask --stream through the host (chunked OHTTP)" \
  || bad "ask --stream: $(tail -2 "$D/a2.err")"
grep -q '"route":"ohttp","status":200' "$D/host.log" && ok "host logged the OHTTP exchanges" || bad "no ohttp log line"

# --- enclave killed mid-stream, host stays up, enclave restarted -------------
echo "Tell me everything about $MARK-long." >"$D/q3"
"$CL" ask --host "$U" --trust "$D/TRUST.json" -n 2000 --temp 0.8 --stream - <"$D/q3" >"$D/a3" 2>"$D/a3.err" &
ASK_PID=$!
for _ in $(seq 1 200); do [ -s "$D/a3" ] && break; sleep 0.01; done
kill -9 "$SIM_PID"
wait "$ASK_PID"
rc=$?
wait "$SIM_PID" 2>/dev/null
if [ -s "$D/a3" ] && [ "$rc" = 1 ]; then
  ok "enclave killed mid-stream: client fails after $(wc -c <"$D/a3") bytes ($(tail -1 "$D/a3.err" | cut -c1-90))"
elif [ "$rc" = 0 ]; then
  ok "answer finished before the kill landed (mid-stream death covered by host_integration)"
else
  bad "mid-stream kill: exit $rc, $(wc -c <"$D/a3") bytes, $(tail -1 "$D/a3.err")"
fi
check_code() { # DESC WANT URL
  local got
  got=$(curl -s -o /dev/null -w '%{http_code}' "$3")
  [ "$got" = "$2" ] && ok "$1" || bad "$1 (got $got)"
}
check_code "enclave gone: host healthz still 200" 200 "$U/healthz"
check_code "enclave gone: readyz 503" 503 "$U/readyz"
echo "Does $MARK-down matter?" | ask - >/dev/null 2>"$D/a3b.err" && bad "ask succeeded without an enclave" \
  || ok "ask fails cleanly without an enclave ($(tail -1 "$D/a3b.err" | cut -c1-80))"
start_enclave && ok "restarted enclave booted again through the same host" \
  || die "restart: $(tail -3 "$D/enclave.log")"
echo "After restart, $MARK-again: any advice?" >"$D/q4"
ask - <"$D/q4" >"$D/a4" 2>"$D/a4.err" && ok "ask works after the restart (new key, re-attested)" \
  || bad "ask after restart: $(tail -2 "$D/a4.err")"

# --- nothing readable outside the enclave -----------------------------------
curl -s "$U/metrics" >"$D/metrics.txt"
kill -TERM "$HOST_PID"
wait "$HOST_PID"
sleep 0.1
for k in http enclave model kmsproxy kms; do
  n=$(ls "$D/cap" | grep -c -- "-$k-")
  [ "$n" -gt 0 ] && ok "capture files for $k traffic ($n)" || bad "no capture for $k"
done
n=0
for f in "$D"/cap/*-model-out.bin; do cmp -s "$f" "$D/model.sealed" && n=$((n + 1)); done
check() { [ "$2" = "$3" ] && ok "$1" || bad "$1 (got $3, wanted $2)"; }
check "each boot streamed the whole sealed model (captured)" 2 "$n"
# The answers' text (when long enough to be a meaningful marker) is a second marker.
markers=("$MARK")
for a in "$D/a1" "$D/a2" "$D/a4"; do
  s=$(tr -d '\n' <"$a" | cut -c1-24)
  [ "${#s}" -ge 16 ] && markers+=("$s")
done
[ "${#markers[@]}" -ge 2 ] && ok "answers give ${#markers[@]}-1 extra markers" || bad "answers too short to use"
# Positive control: the search does see plaintext the host legitimately handles.
grep -rlaqF -- "POST /v1/ohttp" "$D/cap" && ok "capture search finds the HTTP request line" || bad "capture search is blind"
places=("$D/cap" "$D/host.log" "$D/host.out" "$D/metrics.txt" "$D/kms.log" "$D/kms.out" "$D/kms")
for m in "${markers[@]}"; do
  hits=$(grep -rlaF -- "$m" "${places[@]}" 2>/dev/null)
  [ -z "$hits" ] && ok "'$m' appears nowhere the host or key service sent, received or wrote" \
    || bad "'$m' found in: $hits"
done
hits=$(grep -laF -- "$OP_SECRET" "$D/host.log" "$D/host.out" "$D/metrics.txt")
[ -z "$hits" ] && ok "operator secret not in host logs or metrics" || bad "operator secret in $hits"
finish
