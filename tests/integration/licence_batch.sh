#!/usr/bin/env bash
# Issue 12, batch jobs on the real stack (cloister-kms, cloister-host and
# its worker, cloister-enclave under cloister-sim), a licensed model with a
# 2 s lease:
#  - a job with a licensed credential (--credential-file, or CLOISTER_CREDENTIAL)
#    runs and its tokens are charged to the licence at the key service;
#  - jobs without a credential, with an unknown one and with a revoked licence
#    are answered with an error sealed for the consumer naming the reason, with
#    a receipt (status error, the code), and are not retried;
#  - the credential appears in no store row, queue message, object (in clear) or log;
#  - a bad credential file is named by `batch submit` before anything is queued;
#  - a job still queued when the lease ends is refused (PROTO_LICENCE_LEASE_ENDED)
#    before its key release and dead-lettered after --max-receives, not retried forever.
. "$(dirname "$0")/lib.sh"
SRC=$CLOISTER_SOURCE_DIR
BUILD=$CLOISTER_BUILD_DIR
set +u
. "$SRC/scripts/stack.sh"
set -u
command -v sqlite3 >/dev/null && command -v python3 >/dev/null || { echo "skipped: sqlite3 or python3 missing"; exit 77; }
model=$cl_tmp/model.gguf
if [ -n "${CLOISTER_REFERENCE:-}" ] && [ -f "$CLOISTER_REFERENCE/models/tiny-llama-q8_0.gguf" ]; then
  cp "$CLOISTER_REFERENCE/models/tiny-llama-q8_0.gguf" "$model"
else
  "$BUILD/src/cli/cloister" mkmodel --arch llama --shape tiny --type q8_0 -o "$model" >/dev/null
fi
export STACK_LICENCE=1 STACK_LICENCE_LEASE_S=2
export TMPDIR=$cl_tmp/tmp && mkdir -p "$TMPDIR"
wpid=
cleanup() { kill -CONT "${stack_pids[0]}" 2>/dev/null; [ -n "$wpid" ] && kill "$wpid" 2>/dev/null; [ -n "$wpid" ] && wait "$wpid" 2>/dev/null; stack_down; }
if ! stack_up "$BUILD" "$model"; then bad "licensed stack came up"; tail -5 "$D/enclave.log"; stack_down; finish; exit 1; fi
trap cleanup EXIT
ok "licensed stack up"
owner() { AWS_SHARED_CREDENTIALS_FILE=$OWNER_DIR/owner.credentials AWS_REGION=us-east-1 "$CL" "$@"; }

# licences: lic-b (served), lic-brev (revoked before its job)
C=$cl_tmp/creds && mkdir -m 700 "$C"
owner kms licence create --kms "$kms_url" --key-id "$key" --id lic-b --consumer "Clinic B" --model-digest "$digest" \
  --credential-out "$C/b.cred" >/dev/null 2>&1 && ok "owner issues lic-b" || bad "create lic-b"
owner kms licence create --kms "$kms_url" --key-id "$key" --id lic-brev --consumer "Clinic R" --model-digest "$digest" \
  --credential-out "$C/rev.cred" >/dev/null 2>&1 || bad "create lic-brev"
owner kms licence revoke --kms "$kms_url" --key-id "$key" --id lic-brev >/dev/null 2>&1 || bad "revoke lic-brev"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$C/stranger.cred"

# the consumer's job key, released only to the attested enclave
CONS=$D/consumer
mkdir -m 700 "$CONS"
"$KMS" user add consumer --dir "$KMS_DIR" > "$CONS/c.txt"
( umask 077; printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' \
    "$(stack_field access_key_id "$CONS/c.txt")" "$(stack_field secret_access_key "$CONS/c.txt")" > "$CONS/credentials" )
consumer_arn=$(stack_field arn "$CONS/c.txt"); rm -f "$CONS/c.txt"
pcr_args=(--pcr0 "$(stack_pcr 0 "$D/pcrs.json")" --pcr1 "$(stack_pcr 1 "$D/pcrs.json")" --pcr2 "$(stack_pcr 2 "$D/pcrs.json")")
pins=(--root "$D/sim-root.pem" --pcr "0=$(stack_pcr 0 "$D/pcrs.json")" --pcr "1=$(stack_pcr 1 "$D/pcrs.json")" --pcr "2=$(stack_pcr 2 "$D/pcrs.json")")
cons() { AWS_SHARED_CREDENTIALS_FILE=$CONS/credentials AWS_REGION=us-east-1 "$CL" "$@"; }
"$CL" kms policy "${pcr_args[@]}" --consumer clinic-b --root "$D/sim-root.pem" --principal "$operator_arn" \
  --admin "$consumer_arn" > "$CONS/policy.json" || bad "kms policy --consumer"
jkey=$(cons kms create-key --kms "$kms_url" --policy "$CONS/policy.json" --alias alias/jobs)
[ -n "$jkey" ] && ok "consumer's job key created" || { bad "create-key"; finish; exit 1; }
S=$D/store
mkdir -m 700 "$S"
Q=sqlite:$S/queue.db O=dir:$S/objects R=sqlite:$S/results.db
sub=(--kms "$kms_url" --key-id "$jkey" --consumer clinic-b --objects "$O" --queue "$Q" -n 8 --temp 0)
res() { cons batch result "$1" --results "$R" --objects "$O" --kms "$kms_url" "${pins[@]}" "${@:2}"; }
sleep 2.5   # the licences arrive with the next renewal

# bad credentials are named by the CLI before anything is queued
printf 'short' > "$C/short.cred"
expect 1 "a too-short credential file is refused" cons batch submit "${sub[@]}" --credential-file "$C/short.cred" "Hello"
expect_err "short.cred.*credential of 5 characters" "named: the file and the credential's length"
expect 1 "a missing credential file is refused" cons batch submit "${sub[@]}" --credential-file "$C/none.cred" "Hello"
expect_err "none.cred" "named: the file"
expect 0 "batch submit --help names --credential-file" "$CL" batch submit --help
grep -q -- "--credential-file" "$cl_tmp/out" && ok "help text" || bad "no --credential-file in the help"

ok_id=$(cons batch submit "${sub[@]}" --credential-file "$C/b.cred" "The patient presents with")
env_id=$(CLOISTER_CREDENTIAL=$(cat "$C/b.cred") cons batch submit "${sub[@]}" "Describe a fever")
none_id=$(cons batch submit "${sub[@]}" "The patient presents with")
str_id=$(cons batch submit "${sub[@]}" --credential-file "$C/stranger.cred" "Hello")
rev_id=$(cons batch submit "${sub[@]}" --credential-file "$C/rev.cred" "Hello")
for v in ok_id env_id none_id str_id rev_id; do [ ${#v} -gt 0 ] && [ "$(eval echo \${#$v})" = 32 ] || bad "submit $v"; done
ok "five jobs queued"
"$HOST" --worker --enclave-cid 16 --vsock-dir "$D/vsock" --queue "$Q" --objects "$O" --results "$R" --max-receives 2 \
  --retry-ms 100 --poll-ms 50 --visibility-ms 4000 2> "$D/worker.log" &
wpid=$!
expect 0 "all five jobs finished" "$CL" batch status --queue "$Q" --results "$R" --wait --timeout 60 \
  "$ok_id" "$env_id" "$none_id" "$str_id" "$rev_id"

expect 0 "a licensed job runs (--credential-file)" res "$ok_id" --json
cp "$cl_tmp/out" "$cl_tmp/ok.json"
expect 0 "a licensed job runs (CLOISTER_CREDENTIAL)" res "$env_id" --json
cp "$cl_tmp/out" "$cl_tmp/env.json"
expect 1 "a job without a credential is refused" res "$none_id"
expect_err "answered job $none_id with an error: licence: no consumer credential" "named: no consumer credential"
expect 1 "a job with an unknown credential is refused" res "$str_id"
expect_err "with an error: licence: consumer credential matches no licence" "named: credential matches no licence"
expect 1 "a job under a revoked licence is refused" res "$rev_id"
expect_err "with an error: licence: licence revoked" "named: licence revoked"
expect 0 "the refused job's receipt is listed" "$CL" batch status --queue "$Q" --results "$R" --json "$rev_id"
grep -q '"error"' "$cl_tmp/out" && ok "batch status: the refused job is an error (done, not retried)" || bad "status: $(head -c 300 "$cl_tmp/out")"
python3 - "$S/results.db" "$rev_id" <<'PY' > "$cl_tmp/rcpt.txt"
import sqlite3, sys, json
db = sqlite3.connect(sys.argv[1])
for t, in db.execute("select name from sqlite_master where type='table'"):
    cols = [c[1] for c in db.execute(f"pragma table_info({t})")]
    for row in db.execute(f"select * from {t}"):
        for v in row:
            if isinstance(v, bytes) and sys.argv[2].encode() in v and b"PROTO_LICENCE_REVOKED" in v:
                print("RECEIPT-NAMES-CODE")
PY
grep -q RECEIPT-NAMES-CODE "$cl_tmp/rcpt.txt" && ok "the refused job's signed receipt carries error PROTO_LICENCE_REVOKED" \
  || bad "no receipt naming PROTO_LICENCE_REVOKED"
grep -q '"event":"job_retry"' "$D/worker.log" && bad "a refused job was retried: $(grep job_retry "$D/worker.log" | head -2)" \
  || ok "no job was retried"
grep -q '"event":"licence_refused","kind":"batch"' "$D/enclave.log" && ok "the enclave logs the refusals (code only)" \
  || bad "no licence_refused log line for batch"

# metering: the two served jobs are charged to lic-b
sleep 2.5
owner kms usage --kms "$kms_url" --key-id "$key" --json > "$cl_tmp/usage.json" 2>"$cl_tmp/err" || bad "kms usage: $(cat "$cl_tmp/err")"
python3 - "$cl_tmp/usage.json" "$cl_tmp/ok.json" "$cl_tmp/env.json" > "$cl_tmp/meter.txt" <<'PY'
import json, sys
rows = {r["LicenceId"]: r for r in json.load(open(sys.argv[1]))["Usage"]}
p = c = 0
for f in sys.argv[2:]:
    x = json.load(open(f))["usage"]; p += x["prompt_tokens"]; c += x["completion_tokens"]
b = rows.get("lic-b")
got = b and (b["Requests"], b["PromptTokens"], b["CompletionTokens"])
print("lic-b", got, (2, p, c), "MATCH" if got == (2, p, c) and "lic-brev" not in rows or (got == (2, p, c) and rows["lic-brev"]["Requests"] == 0) else "DIFFER")
PY
grep -q MATCH "$cl_tmp/meter.txt" && ok "jobs charged like interactive requests ($(cat "$cl_tmp/meter.txt"))" \
  || bad "usage differs: $(cat "$cl_tmp/meter.txt")"

# the credential stays inside the job encryption
hits=""
for f in "$C"/b.cred "$C"/rev.cred "$C"/stranger.cred; do
  cred=$(tr -d '\n' < "$f")
  h=$(grep -rlaF -e "$cred" "$S" "$D/host.log" "$D/host.out" "$D/worker.log" "$D/kms.log" "$D/enclave.log" "$TMPDIR" 2>/dev/null || true)
  hits="$hits$h"
  for db in "$S"/*.db "$KMS_DIR/kms.db"; do sqlite3 "$db" .dump | grep -qF "$cred" && hits="$hits $db"; done
done
[ -z "$hits" ] && ok "no credential in store rows, queue messages, objects, logs or the key service's rows" \
  || bad "credential found in: $hits"

# a job waiting while the lease ends: refused before its key release, dead-lettered (not retried forever)
kill "$wpid"; wait "$wpid" 2>/dev/null; wpid=
late_id=$(cons batch submit "${sub[@]}" --credential-file "$C/b.cred" "Hello")
kms_pid=${stack_pids[0]}
kill -STOP "$kms_pid"
# wait for the enclave's own report of the lease's end (a /readyz probe can also fail for a moment on a loaded
# machine, and the key service must stay frozen until the lease has really ended)
for _ in $(seq 1 100); do grep -q '"event":"licence_lease_ended"' "$D/enclave.log" && break; sleep 0.1; done
kill -CONT "$kms_pid"
grep -q '"event":"licence_lease_ended"' "$D/enclave.log" && [ "$(curl -s "$host_url/readyz" -o /dev/null -w '%{http_code}')" != 200 ] \
  && ok "the key service frozen: the lease ended" || bad "the enclave still ready"
"$HOST" --worker --enclave-cid 16 --vsock-dir "$D/vsock" --queue "$Q" --objects "$O" --results "$R" --max-receives 2 \
  --retry-ms 100 --poll-ms 50 --visibility-ms 4000 2> "$D/worker2.log" &
wpid=$!
for _ in $(seq 1 100); do grep -q '"event":"job_dead_letter"' "$D/worker2.log" && break; sleep 0.1; done
expect 0 "batch status of the job that met the lease's end" "$CL" batch status --queue "$Q" --results "$R" "$late_id"
grep -q "$late_id dead (PROTO_LICENCE_LEASE_ENDED after 2 receives)" "$cl_tmp/out" \
  && ok "refused with PROTO_LICENCE_LEASE_ENDED and dead-lettered after 2 receives" || bad "late job: $(cat "$cl_tmp/out")"
finish
