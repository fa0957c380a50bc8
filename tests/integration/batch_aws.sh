#!/usr/bin/env bash
# Batch pipeline on the scale-out backends (issue 11) against third-party
# servers on loopback: s3rver (S3), fauxqs (SQS), dynalite (DynamoDB), with the
# AWS SDK for JavaScript v3 on the other side of each protocol:
#  - `cloister batch submit` writes encrypted job objects to s3:// and its own
#    messages to sqs://; the SDK uploads each object under the event prefix and
#    S3's event notification (s3rver's event, sent as the S3 event JSON into
#    SQS) starts the job; the worker + enclave run it into dynamodb://;
#  - the SDK reads the results table; `cloister batch result` fetches, verifies
#    and decrypts each result; `cloister audit verify` checks the receipts;
#  - a malformed message and a poison job land in QUEUE-dlq with error records;
#    a redelivered job is stored once (conditional PutItem);
#  - the job marker appears in no object, message or item (all dumped with the
#    SDK), nor in the worker's log;
#  - bad URLs, a missing table or queue, an unknown access key and an unreachable
#    service give clear errors naming the service, status and AWS error code.
. "$(dirname "$0")/lib.sh"
SRC=$CLOISTER_SOURCE_DIR
BUILD=$CLOISTER_BUILD_DIR
NODE_DIR=$SRC/tests/batch/interop
for m in s3rver fauxqs dynalite @aws-sdk/client-s3 @aws-sdk/client-sqs @aws-sdk/client-dynamodb; do
  [ -d "$NODE_DIR/node_modules/$m" ] || { echo "skipped: $m missing; run scripts/install-deps (npm ci in tests/batch/interop)"; exit 77; }
done
command -v node >/dev/null || { echo "skipped: node missing"; exit 77; }
command -v python3 >/dev/null || { echo "skipped: python3 missing"; exit 77; }
set +u
. "$SRC/scripts/stack.sh"
set -u

model=$cl_tmp/model.gguf
if [ -n "${CLOISTER_REFERENCE:-}" ] && [ -f "$CLOISTER_REFERENCE/models/tiny-llama-q8_0.gguf" ]; then
  cp "$CLOISTER_REFERENCE/models/tiny-llama-q8_0.gguf" "$model"
else
  echo "note: CLOISTER_REFERENCE unset; using a generated model"
  "$BUILD/src/cli/cloister" mkmodel --arch llama --shape tiny --type q8_0 -o "$model" >/dev/null
fi
export TMPDIR=$cl_tmp/tmp && mkdir -p "$TMPDIR"
bpids=()
srv_in=""
cleanup() {
  for p in "${bpids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${bpids[@]}"; do wait "$p" 2>/dev/null || true; done
  stack_down
}
if ! stack_up "$BUILD" "$model"; then bad "stack came up"; stack_down; finish; exit 1; fi
trap cleanup EXIT
ok "key service, host and enclave up"

# the consumer, as in e2e_batch: its own principal and job key
CONS=$D/consumer
mkdir -m 700 "$CONS"
"$KMS" user add consumer --dir "$KMS_DIR" > "$CONS/c.txt"
cak=$(stack_field access_key_id "$CONS/c.txt"); csk=$(stack_field secret_access_key "$CONS/c.txt")
( umask 077; printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$cak" "$csk" > "$CONS/credentials" )
consumer_arn=$(stack_field arn "$CONS/c.txt"); rm -f "$CONS/c.txt"
pcr_args=(--pcr0 "$(stack_pcr 0 "$D/pcrs.json")" --pcr1 "$(stack_pcr 1 "$D/pcrs.json")" --pcr2 "$(stack_pcr 2 "$D/pcrs.json")")
pins=(--root "$D/sim-root.pem" --pcr "0=$(stack_pcr 0 "$D/pcrs.json")" --pcr "1=$(stack_pcr 1 "$D/pcrs.json")" --pcr "2=$(stack_pcr 2 "$D/pcrs.json")")
cons() { AWS_SHARED_CREDENTIALS_FILE=$CONS/credentials AWS_ACCESS_KEY_ID= AWS_REGION=us-east-1 "$CL" "$@"; }
"$CL" kms policy "${pcr_args[@]}" --consumer hospital-a --root "$D/sim-root.pem" --principal "$operator_arn" \
  --admin "$consumer_arn" > "$CONS/policy.json" || bad "kms policy --consumer"
jkey=$(cons kms create-key --kms "$kms_url" --policy "$CONS/policy.json" --alias alias/jobs)
[ -n "$jkey" ] && ok "consumer's job key created" || { bad "create-key"; finish; exit 1; }

# the AWS stand-ins; s3rver accepts only the access keys it is given (the
# operator's worker signs with its own, the consumer with the consumer's)
mkfifo "$cl_tmp/srv.in"
AWS_ACCESS_KEY_ID=operator AWS_SECRET_ACCESS_KEY=operator-secret S3_KEYS="operator:operator-secret,$cak:$csk" \
  S3_DIR=$cl_tmp/s3rver EXTRA_QUEUES=submitted EVENT_PREFIX=inbox/ \
  node "$NODE_DIR/servers.mjs" < "$cl_tmp/srv.in" > "$D/servers.out" 2> "$D/servers.log" &
bpids+=($!)
exec 7> "$cl_tmp/srv.in" # the servers run while this stays open
for _ in $(seq 1 300); do [ -s "$D/servers.out" ] && break; sleep 0.1; done
ep() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$D/servers.out" "$1"; }
S3E=$(ep s3 2>/dev/null); SQE=$(ep sqs 2>/dev/null); DDE=$(ep dynamodb 2>/dev/null)
[ -n "$S3E" ] && [ -n "$SQE" ] && [ -n "$DDE" ] && ok "s3rver, fauxqs, dynalite up (bucket, queues, table made by the SDK)" \
  || { bad "servers: $(head -c 600 "$D/servers.log")"; finish; exit 1; }
sdk() { AWS_ACCESS_KEY_ID=operator AWS_SECRET_ACCESS_KEY=operator-secret AWS_REGION=us-east-1 \
        S3_ENDPOINT=$S3E SQS_ENDPOINT=$SQE DDB_ENDPOINT=$DDE node "$NODE_DIR/sdk.mjs" "$@"; }
OUTBOX="s3://jobs/outbox?endpoint=$S3E" INBOX="s3://jobs/inbox?endpoint=$S3E"
Q="sqs://jobs?endpoint=$SQE" QSUB="sqs://submitted?endpoint=$SQE" R="dynamodb://results?endpoint=$DDE"
worker_env=(env AWS_ACCESS_KEY_ID=operator AWS_SECRET_ACCESS_KEY=operator-secret AWS_REGION=us-east-1)
marker="PHI-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"

# 1. bad URLs and services: clear errors before anything runs
expect 1 "unknown URL parameter refused" "$CL" batch status --queue "sqs://jobs?region=x" --results "$R"
expect_err "the only parameter is endpoint=URL" "the parameter is named"
expect 1 "endpoint with user info refused" "${worker_env[@]}" "$CL" batch status --queue "sqs://jobs?endpoint=http://u@127.0.0.1:1" --results "$R"
expect_err "no user info" "user info named"
expect 1 "bucket name checked" cons batch submit --kms "$kms_url" --key-id "$jkey" --consumer hospital-a \
  --objects "s3://Bad_Bucket?endpoint=$S3E" --queue "$QSUB" "hello"
expect_err "s3:// bucket: 3..63" "the bucket rule is named"
expect 1 "a missing table is named" "${worker_env[@]}" "$CL" batch status --queue "$Q" --results "dynamodb://nope?endpoint=$DDE"
expect_err "DynamoDB: table nope does not exist" "DynamoDB and the table named"
expect 1 "a missing queue is named" "${worker_env[@]}" "$CL" batch status --queue "sqs://nope?endpoint=$SQE" --results "$R"
expect_err "SQS: queue nope does not exist" "SQS and the queue named"
expect 1 "an unreachable service is a transient error" "${worker_env[@]}" "$CL" batch status --queue "sqs://jobs?endpoint=http://127.0.0.1:9" --results "$R"
expect_err "unreachable.*SQS GetQueueUrl" "unreachable SQS named as transient"

# 2. jobs: submit to s3:// + sqs://, then the SDK uploads them under the event prefix
python3 - "$marker" > "$cl_tmp/jobs.jsonl" <<'PY'
import json, sys
for i in range(3):
    print(json.dumps({"messages": [{"role": "user", "content": f"Patient {sys.argv[1]}-{i} reports fever and cough, case {i}"}],
                      "max_tokens": 12, "temperature": 0}))
PY
cons batch submit --kms "$kms_url" --key-id "$jkey" --consumer hospital-a --objects "$OUTBOX" --queue "$QSUB" \
  --jsonl "$cl_tmp/jobs.jsonl" > "$cl_tmp/ids" 2> "$cl_tmp/submit.err"
[ "$(sort -u "$cl_tmp/ids" | wc -l)" = 3 ] && ok "3 jobs submitted to s3:// and sqs://" || bad "submit: $(head -c 400 "$cl_tmp/submit.err")"
sdk messages submitted > "$cl_tmp/submitted"
python3 - "$cl_tmp/submitted" "$cl_tmp/ids" <<'PY' && ok "the SDK reads Cloister's 3 job messages from SQS" || bad "submitted queue: $(head -c 300 "$cl_tmp/submitted")"
import json, sys
msgs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ids = [l.strip() for l in open(sys.argv[2])]
sys.exit(0 if sorted(m["job_id"] for m in msgs) == sorted(ids) and all(m["object"] == m["job_id"] + ".job" for m in msgs) else 1)
PY
while read -r id; do sdk copy "outbox/$id.job" "inbox/$id.job" || bad "SDK upload of $id"; done < "$cl_tmp/ids"
ok "the SDK uploaded the 3 encrypted job objects under inbox/ (S3 events into SQS)"
# the hostile side: a message no worker can use, a test event, a poison job object
sdk send jobs 'this is not a job message'
sdk send jobs '{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-12-06T00:00:00Z","Bucket":"jobs"}'
head -c 300 /dev/urandom > "$cl_tmp/poison.job"
sdk put inbox/poison.job "$cl_tmp/poison.job"
sdk put inbox/notes.txt "$cl_tmp/poison.job" # not a job object: its event is dropped

# 3. the worker and the enclave run them into DynamoDB
"${worker_env[@]}" "$HOST" --worker --enclave-cid 16 --vsock-dir "$D/vsock" --queue "$Q" --objects "$INBOX" --results "$R" \
  --max-receives 1 --retry-ms 100 --poll-ms 50 --visibility-ms 4000 2> "$D/worker.log" &
wk=$!
bpids+=($wk)
st=""
for _ in $(seq 1 600); do
  st=$("${worker_env[@]}" "$CL" batch status --queue "$Q" --results "$R" --json 2>/dev/null)
  python3 -c 'import json,sys; s=json.loads(sys.argv[1]); sys.exit(0 if s["results"]>=3 and s["dead"]>=2 and s["queued"]+s["in_flight"]==0 else 1)' "$st" 2>/dev/null && break
  sleep 0.1
done
echo "status: $st"
python3 -c 'import json,sys; s=json.loads(sys.argv[1]); sys.exit(0 if s["results"]==3 and s["dead"]==2 else 1)' "$st" \
  && ok "3 results in DynamoDB, 2 dead letters, queue empty (batch status over sqs:// and dynamodb://)" || bad "pipeline did not finish: $st"
grep -q '"event":"queue_message_ignored"' "$D/worker.log" && ok "the S3 test event was dropped" || bad "no ignored message in the worker log"
sdk results > "$cl_tmp/results"
[ "$(grep -c '"status":"ok"' "$cl_tmp/results")" = 3 ] && ok "the SDK reads 3 ok results from the table" || bad "SDK results: $(cat "$cl_tmp/results")"
sdk messages jobs-dlq > "$cl_tmp/dlq"
grep -q '"error":"STORE_MESSAGE"' "$cl_tmp/dlq" && ok "the malformed message is in jobs-dlq with its error record" || bad "dlq: $(cat "$cl_tmp/dlq")"
grep -q '"job_id":"poison".*"error":"PROTO_' "$cl_tmp/dlq" && ok "the poison job is in jobs-dlq with its error record" || bad "dlq: $(cat "$cl_tmp/dlq")"
expect 0 "batch status names the poison job dead" "${worker_env[@]}" "$CL" batch status --queue "$Q" --results "$R" poison
grep -q "poison dead (PROTO_" "$cl_tmp/out" && ok "its error record through sqs:// dead_find" || bad "status poison: $(cat "$cl_tmp/out")"

# 4. the consumer fetches, verifies and decrypts each result; equal to cloister run
i=0; same=0
while read -r id; do
  want=$("$CL" run "$D/model.gguf" --chat -p "Patient $marker-$i reports fever and cough, case $i" -n 12 --temp 0 --json |
         python3 -c 'import json,sys; print(json.load(sys.stdin)["text"])')
  got=$(cons batch result "$id" --results "$R" --objects "$INBOX" --kms "$kms_url" "${pins[@]}" 2> "$cl_tmp/res.err")
  [ -n "$want" ] && [ "$want" = "$got" ] && same=$((same + 1)) || echo "    job $i: run='$want' batch='$got' $(head -c 300 "$cl_tmp/res.err")"
  i=$((i + 1))
done < "$cl_tmp/ids"
[ "$same" = 3 ] && ok "3 results fetched from DynamoDB + S3, receipts verified, equal to cloister run" || bad "$same of 3 results"
expect 0 "audit verify over dynamodb://" "${worker_env[@]}" "$CL" audit verify --results "$R" "${pins[@]}"
grep -q "^ok - 3 receipts in 1 chain" "$cl_tmp/out" && ok "receipts verify ($(cat "$cl_tmp/out"))" || bad "audit: $(cat "$cl_tmp/out")"

# s3rver knows the access keys it was given (it does not verify V4 signatures:
# the signer is checked against cloister-kms's verifier in test_sigv4/kms
# tests); a key it does not know is refused, and the refusal names the
# service, operation, status and AWS error code
expect 1 "an unknown access key is refused by S3" env AWS_SHARED_CREDENTIALS_FILE=/nonexistent AWS_ACCESS_KEY_ID=AKIDUNKNOWN \
  AWS_SECRET_ACCESS_KEY=whatever AWS_REGION=us-east-1 \
  "$CL" batch result "$(head -1 "$cl_tmp/ids")" --results "$R" --objects "$INBOX" --kms "$kms_url" "${pins[@]}"
expect_err "S3 GetObject: HTTP 403 InvalidAccessKeyId" "the refusal names S3, the operation, 403 and InvalidAccessKeyId"

# 5. redelivery: the same job again (Cloister's own message): stored once
first=$(head -1 "$cl_tmp/ids")
sdk send jobs "{\"job_id\":\"$first\",\"object\":\"$first.job\"}"
for _ in $(seq 1 300); do
  st=$("${worker_env[@]}" "$CL" batch status --queue "$Q" --results "$R" --json 2>/dev/null)
  python3 -c 'import json,sys; s=json.loads(sys.argv[1]); sys.exit(0 if s["receipts"]>=4 and s["queued"]+s["in_flight"]==0 else 1)' "$st" 2>/dev/null && break
  sleep 0.1
done
python3 -c 'import json,sys; s=json.loads(sys.argv[1]); sys.exit(0 if s["results"]==3 and s["receipts"]==4 else 1)' "$st" \
  && ok "a redelivered job is stored once (conditional PutItem), its receipt kept" || bad "after redelivery: $st"
grep -q '"event":"job_stored".*"first_result":0' "$D/worker.log" && ok "the worker logs the second answer as not stored" || bad "no first_result 0"
expect 0 "audit verify after the redelivery" "${worker_env[@]}" "$CL" audit verify --results "$R" "${pins[@]}"

# 6. kill -9 of the worker mid-job: SQS makes the message visible again after
# the visibility timeout; the next worker completes it (receive count 2), once
kill "$wk" 2>/dev/null; wait "$wk" 2>/dev/null
enc_tree=$(ptree "$stack_enclave_pid")
kill -STOP $enc_tree
echo '{"messages":[{"role":"user","content":"Patient '"$marker"'-crash: summarise"}],"max_tokens":8,"temperature":0}' > "$cl_tmp/crash.jsonl"
crash=$(cons batch submit --kms "$kms_url" --key-id "$jkey" --consumer hospital-a --objects "$OUTBOX" --queue "$QSUB" --jsonl "$cl_tmp/crash.jsonl")
sdk copy "outbox/$crash.job" "inbox/$crash.job"
wargs=(--queue "$Q" --objects "$INBOX" --results "$R" --max-receives 3 --retry-ms 100 --poll-ms 50 --visibility-ms 2000)
"${worker_env[@]}" "$HOST" --worker --enclave-cid 16 --vsock-dir "$D/vsock" "${wargs[@]}" 2> "$D/worker2.log" &
w2=$!
bpids+=($w2)
for _ in $(seq 1 600); do
  "${worker_env[@]}" "$CL" batch status --queue "$Q" --results "$R" --json 2>/dev/null | grep -q '"in_flight":1' && break; sleep 0.05
done
sleep 0.3
kill -9 $w2; wait $w2 2>/dev/null
kill -CONT $enc_tree
"${worker_env[@]}" "$HOST" --worker --enclave-cid 16 --vsock-dir "$D/vsock" "${wargs[@]}" 2> "$D/worker3.log" &
wk=$!
bpids+=($wk)
for _ in $(seq 1 300); do
  "${worker_env[@]}" "$CL" batch status --queue "$Q" --results "$R" "$crash" 2>/dev/null | grep -q "$crash done" && break; sleep 0.1
done
expect 0 "batch status after the worker's kill -9" "${worker_env[@]}" "$CL" batch status --queue "$Q" --results "$R" --json "$crash"
python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); sys.exit(0 if s["results"]==4 else 1)' "$cl_tmp/out" \
  && grep -q '"event":"job_stored".*"first_result":1,"receives":2' "$D/worker3.log" \
  && ok "worker killed -9 mid-job: SQS redelivered the message (receive count 2), the job is stored once" \
  || bad "after the kill: $(cat "$cl_tmp/out") $(grep job_stored "$D/worker3.log" | tail -1)"

# 7. secrecy: nothing readable in any object, message or item, nor in the log
sdk dump > "$cl_tmp/dump"
n_obj=$(grep -c '^object ' "$cl_tmp/dump"); n_msg=$(grep -c '^message ' "$cl_tmp/dump"); n_item=$(grep -c '^item ' "$cl_tmp/dump")
[ "$n_obj" -ge 8 ] && [ "$n_item" -ge 8 ] && ok "SDK dump: $n_obj objects, $n_msg messages, $n_item items" || bad "dump too small: $n_obj $n_msg $n_item"
grep -qaF "$marker" "$cl_tmp/dump" && bad "the marker is in the dump" || ok "marker absent from every object, message and item"
hits=$(grep -rlaF "$marker" "$D"/worker*.log "$cl_tmp/s3rver" "$D/servers.log" "$TMPDIR" 2>/dev/null || true)
[ -z "$hits" ] && ok "marker absent from the worker log, s3rver's files and temp files" || bad "marker found in: $hits"

kill "$wk" 2>/dev/null; wait "$wk" 2>/dev/null
exec 7>&-
finish
