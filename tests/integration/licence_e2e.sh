#!/usr/bin/env bash
# Issue 12 on the real stack (cloister-kms, cloister-host, cloister-enclave
# under cloister-sim), a licensed model with a 2 s lease:
#  - licensed consumer served; unlicensed, expired, over-quota and (after a
#    renewal) revoked consumers refused with the reason;
#  - metering: the key service's usage equals the tokens of the requests made;
#  - the credential never appears in host captures, logs or the key service's rows;
#  - the host dropping renewal traffic (key service frozen) -> the enclave stops at
#    lease end, reports why and wipes; key disabled -> stops within one lease;
#  - the host substituting the licence key in the renewal answer -> the enclave refuses to boot.
. "$(dirname "$0")/lib.sh"
SRC=$CLOISTER_SOURCE_DIR
BUILD=$CLOISTER_BUILD_DIR
set +u
. "$SRC/scripts/stack.sh"
set -u
command -v curl >/dev/null && command -v sqlite3 >/dev/null || { echo "skipped: curl or sqlite3 missing"; exit 77; }
T=$BUILD/tests/integration/kms_attack_tool
[ -x "$T" ] || { echo "skipped: kms_attack_tool not built"; exit 77; }
model=$cl_tmp/model.gguf
if [ -n "${CLOISTER_REFERENCE:-}" ] && [ -f "$CLOISTER_REFERENCE/models/tiny-llama-q8_0.gguf" ]; then
  cp "$CLOISTER_REFERENCE/models/tiny-llama-q8_0.gguf" "$model"
else
  "$BUILD/src/cli/cloister" mkmodel --arch llama --shape tiny --type q8_0 -o "$model" >/dev/null
fi
export STACK_CAPTURE=1 STACK_LICENCE=1 STACK_LICENCE_LEASE_S=2
export TMPDIR=$cl_tmp/tmp && mkdir -p "$TMPDIR"
if ! stack_up "$BUILD" "$model"; then bad "licensed stack came up"; tail -5 "$D/enclave.log"; stack_down; finish; exit 1; fi
trap 'kill -CONT "${stack_pids[0]}" 2>/dev/null; stack_down' EXIT
ok "licensed stack up: the enclave fetched its licence set at boot"
kms_pid=${stack_pids[0]}
owner() { AWS_SHARED_CREDENTIALS_FILE=$OWNER_DIR/owner.credentials AWS_REGION=us-east-1 "$CL" "$@"; }
grep -q 'licence_renewed' "$D/enclave.log" && ok "the enclave logs its renewals" || bad "no licence_renewed in the enclave log"
status() { curl -s "$host_url/readyz" -o /dev/null -w '%{http_code}'; }
ask() { local cred=$1; shift; "$CL" ask --host "$host_url" --trust "$D/TRUST.json" -n 8 --temp 0 ${cred:+--credential-file "$cred"} "$@"; }

# --- licences, issued while the enclave runs: they arrive with the next renewal
now=$(date +%s)
C=$cl_tmp/creds && mkdir -m 700 "$C"
owner kms licence create --kms "$kms_url" --key-id "$key" --id lic-ok --consumer "Clinic OK" --model-digest "$digest" \
  --credential-out "$C/ok.cred" >/dev/null 2>&1 && ok "owner issues lic-ok" || bad "create lic-ok"
owner kms licence create --kms "$kms_url" --key-id "$key" --id lic-quota --consumer "Clinic Q" --model-digest "$digest" \
  --credential-out "$C/quota.cred" --max-requests 1 --period-s 3600 >/dev/null 2>&1 || bad "create lic-quota"
owner kms licence create --kms "$kms_url" --key-id "$key" --id lic-old --consumer "Clinic Old" --model-digest "$digest" \
  --credential-out "$C/old.cred" --not-before $((now - 100)) --not-after $((now - 10)) >/dev/null 2>&1 || bad "create lic-old"
owner kms licence create --kms "$kms_url" --key-id "$key" --id lic-rev --consumer "Clinic Rev" --model-digest "$digest" \
  --credential-out "$C/rev.cred" >/dev/null 2>&1 || bad "create lic-rev"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$C/stranger.cred"
sleep 2.5

expect 0 "a licensed consumer is served" ask "$C/ok.cred" --json "The patient presents with"
cp "$cl_tmp/out" "$cl_tmp/ok1.json"
expect 1 "no credential: refused" ask "" "The patient presents with"
expect_err "401.*no consumer credential" "named: 401 no consumer credential"
expect 1 "an unknown credential: refused" ask "$C/stranger.cred" "The patient presents with"
expect_err "401.*matches no licence" "named: 401 credential matches no licence"
expect 1 "an expired licence: refused" ask "$C/old.cred" "The patient presents with"
expect_err "403.*licence expired" "named: 403 licence expired"
expect 0 "the quota licence's first request is served" ask "$C/quota.cred" --json "Hello"
cp "$cl_tmp/out" "$cl_tmp/q1.json"
expect 1 "its second request in the period: refused" ask "$C/quota.cred" "Hello"
expect_err "403.*quota" "named: 403 quota used up"
expect 0 "lic-rev is served before revocation" ask "$C/rev.cred" "Hello"
owner kms licence revoke --kms "$kms_url" --key-id "$key" --id lic-rev >/dev/null 2>&1 || bad "revoke"
sleep 2.5
expect 1 "after a renewal, the revoked licence is refused" ask "$C/rev.cred" "Hello"
expect_err "403.*licence revoked" "named: 403 licence revoked"
expect 0 "a second licensed request" ask "$C/ok.cred" --json "Describe a fever"
cp "$cl_tmp/out" "$cl_tmp/ok2.json"

# --- metering: the key service's totals equal the enclave's token counts ----
sleep 2.5   # one more renewal carries the last report
owner kms usage --kms "$kms_url" --key-id "$key" --json > "$cl_tmp/usage.json" 2>"$cl_tmp/err" || bad "kms usage: $(cat "$cl_tmp/err")"
python3 - "$cl_tmp/usage.json" "$cl_tmp/ok1.json" "$cl_tmp/ok2.json" "$cl_tmp/q1.json" > "$cl_tmp/meter.txt" <<'PY'
import json, sys
u = json.load(open(sys.argv[1]))
rows = {r["LicenceId"]: r for r in u["Usage"]}
def tok(*fs):
    p = c = 0
    for f in fs:
        x = json.load(open(f))["usage"]; p += x["prompt_tokens"]; c += x["completion_tokens"]
    return p, c
ok = rows.get("lic-ok"); q = rows.get("lic-quota")
p, c = tok(sys.argv[2], sys.argv[3]); qp, qc = tok(sys.argv[4])
print("lic-ok", ok and (ok["Requests"], ok["PromptTokens"], ok["CompletionTokens"]), (2, p, c))
print("lic-quota", q and (q["Requests"], q["PromptTokens"], q["CompletionTokens"]), (1, qp, qc))
good = ok and (ok["Requests"], ok["PromptTokens"], ok["CompletionTokens"]) == (2, p, c) and \
       q and (q["Requests"], q["PromptTokens"], q["CompletionTokens"]) == (1, qp, qc) and ok["Consumer"] == "Clinic OK"
print("MATCH" if good else "DIFFER")
PY
grep -q MATCH "$cl_tmp/meter.txt" && ok "usage at the key service equals the requests and tokens served ($(head -1 "$cl_tmp/meter.txt"))" \
  || bad "usage differs: $(cat "$cl_tmp/meter.txt")"
grep -q '"Kind"' "$cl_tmp/usage.json" && bad "report events on an undisturbed chain: $(cat "$cl_tmp/usage.json")" \
  || ok "no gap, replay, reorder or alteration on an undisturbed chain"

# --- the credential stays inside the encryption ---------------------------------
hits=""
for f in "$C"/ok.cred "$C"/quota.cred "$C"/rev.cred; do
  cred=$(tr -d '\n' < "$f")
  h=$(grep -rlaF -e "$cred" "$D/capture" "$D/host.log" "$D/host.out" "$D/kms.log" "$D/enclave.log" "$TMPDIR" 2>/dev/null || true)
  hits="$hits$h"
  sqlite3 "$KMS_DIR/kms.db" .dump | grep -qF "$cred" && hits="$hits kms.db"
done
[ "$(cat "$D"/capture/* | wc -c)" -gt 1000 ] && ok "the host captured the traffic" || bad "empty capture"
[ -z "$hits" ] && ok "no credential in host captures, logs, temp files or the key service's rows" || bad "credential found in: $hits"

# --- renewal cost ---------------------------------------------------------------
cost=$(grep -o '"event":"licence_renewed"[^}]*' "$D/enclave.log" | grep -o '"duration_us":[0-9]*' | cut -d: -f2 | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "# renewal cost (median of $(grep -c licence_renewed "$D/enclave.log") renewals): ${cost:-?} us"

# --- the host drops renewal traffic: the enclave stops at lease end ---------------
kill -STOP "$kms_pid"
t0=$(date +%s%N)
for _ in $(seq 1 80); do [ "$(status)" = 200 ] || break; sleep 0.1; done
t1=$(date +%s%N)
kill -CONT "$kms_pid"
ms=$(( (t1 - t0) / 1000000 ))
[ "$(status)" != 200 ] && [ "$ms" -le 4500 ] && ok "key service unreachable: the enclave stopped serving after $ms ms (lease 2 s)" \
  || bad "enclave still ready after $ms ms"
echo "# cut-off latency (renewal traffic dropped): $ms ms"
expect 1 "a licensed request after the lease ended: refused" ask "$C/ok.cred" "Hello"
expect_err "503.*lease ended" "named: 503 lease ended"
sleep 0.3
grep -q '"event":"licence_lease_ended"' "$D/enclave.log" && grep -q 'model and keys wiped' "$D/enclave.log" \
  && ok "the enclave reports the lease end and the wipe" || bad "no lease-end report: $(tail -3 "$D/enclave.log")"
grep -q '"event":"ohttp_keys_wiped"' "$D/enclave.log" && ok "the OHTTP private keys were wiped with the model" \
  || bad "no ohttp_keys_wiped in the enclave log"
# the key service frozen holds the renewal call: it times out below the lease, and is retried
grep 'licence lease ended without renewal' "$D/enclave.log" | tail -1 > "$cl_tmp/renew_fail.txt"
grep -qiE 'timeout|timed out' "$cl_tmp/renew_fail.txt" \
  && ok "a renewal call the host held timed out within the lease and was named ($(grep -c '"event":"licence_renewal_failed"' "$D/enclave.log") failed attempts)" \
  || bad "renewal failure: $(cat "$cl_tmp/renew_fail.txt")"

# --- key disabled: every running enclave stops within one lease ------------------
stack_enclave_stop
stack_enclave_start "$D/enclave.img" && ok "a fresh enclave boots (key enabled)" || bad "enclave restart"
expect 0 "served again after the restart" ask "$C/ok.cred" "Hello"
python3 -c "import configparser,json,sys; c=configparser.ConfigParser(); c.read(sys.argv[1]); d=c['default']; \
print(json.dumps({'access_key_id':d['aws_access_key_id'],'secret_access_key':d['aws_secret_access_key'],'region':'us-east-1'}))" \
  "$OWNER_DIR/owner.credentials" > "$OWNER_DIR/owner.json"
"$T" call "$kms_url" "$OWNER_DIR/owner.json" DisableKey "{\"KeyId\":\"$key\"}" >/dev/null && ok "owner disables the key" || bad "DisableKey"
t0=$(date +%s%N)
for _ in $(seq 1 80); do [ "$(status)" = 200 ] || break; sleep 0.1; done
t1=$(date +%s%N)
ms=$(( (t1 - t0) / 1000000 ))
[ "$(status)" != 200 ] && [ "$ms" -le 4500 ] && ok "key disabled: the enclave stopped serving after $ms ms (lease 2 s)" \
  || bad "enclave still ready $ms ms after DisableKey"
echo "# revocation latency (key disabled -> serving stopped): $ms ms"
expect 1 "a licensed request after the key was disabled: refused" ask "$C/ok.cred" "Hello"
expect_err "503.*lease ended" "named: 503 lease ended"
sleep 0.3
grep 'licence lease ended without renewal' "$D/enclave.log" | tail -1 | grep -q 'DisabledException' \
  && ok "the enclave's report names the reason (DisabledException)" || bad "reason: $(grep 'lease ended' "$D/enclave.log" | tail -2)"

# --- the host substituting the licence key: the enclave refuses to boot ------------
"$T" call "$kms_url" "$OWNER_DIR/owner.json" EnableKey "{\"KeyId\":\"$key\"}" >/dev/null || bad "EnableKey"
stack_enclave_stop
kill "$stack_host_pid" 2>/dev/null; wait "$stack_host_pid" 2>/dev/null
openssl ecparam -name secp384r1 -genkey -noout 2>/dev/null | openssl ec -pubout -outform DER -out "$cl_tmp/host-key.der" 2>/dev/null
python3 "$SRC/tests/integration/licence_mitm.py" "$kms_url" "$cl_tmp/host-key.der" > "$cl_tmp/mitm.out" 2> "$cl_tmp/mitm.log" &
mitm_pid=$!
stack_pids+=("$mitm_pid")
stack_wait_for "$cl_tmp/mitm.out" 'listening on' 20
mitm_url=http://$(grep -oE '127\.0\.0\.1:[0-9]+' "$cl_tmp/mitm.out" | head -1)
mkdir -m 700 "$D/vsock2"
"$HOST" --listen 127.0.0.1:0 --enclave-cid 16 --vsock-dir "$D/vsock2" --model "$D/model.sealed" --kms "$mitm_url" \
  --kms-credentials "$OPERATOR_DIR/operator.json" > "$D/host2.out" 2> "$D/host2.log" &
stack_pids+=($!)
stack_wait_for "$D/host2.out" 'listening on' 30
timeout 60 "$SIM" run "$D/enclave.img" --dir "$SIM_DIR" --vsock-dir "$D/vsock2" --cid 16 > "$D/enclave2.out" 2> "$D/enclave2.log"
rc=$?
grep -q 'substituted the licence key' "$cl_tmp/mitm.log" && ok "the host substituted its own licence key in the answer" \
  || bad "the substitution did not happen: $(cat "$cl_tmp/mitm.log")"
[ "$rc" != 0 ] && [ "$rc" != 124 ] && ok "the enclave refused to boot (exit $rc)" || bad "enclave exit $rc"
grep -q 'licence: .*licence key does not hash to the value pinned.*cloister:licence-key-sha256' "$D/enclave2.log" \
  && ok "the refusal names the pinned context entry" || bad "enclave said: $(grep -i licence "$D/enclave2.log" | tail -2)"
finish
