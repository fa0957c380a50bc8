#!/usr/bin/env bash
# Batch pipeline end to end (issue 11) through real processes on the embedded
# default stores: cloister-kms, two cloister-host + cloister-enclave pairs
# (cloister-sim), two `cloister-host --worker`s and the consumer's CLI.
#  - 20 text jobs: each result decrypts for the consumer, equals `cloister run`
#    on the plain model (greedy), and carries a receipt that verifies; no job
#    is stored twice;
#  - kill -9 of a worker mid-job: the job is redelivered, completed once;
#  - a poison job lands in the dead-letter queue with an error record;
#  - a full disk (file-size limit) gives a clear error and no partial object;
#  - a random marker in every job appears nowhere outside the enclave;
#  - altered, deleted, inserted and reordered receipts are named by
#    `cloister audit verify`.
. "$(dirname "$0")/lib.sh"
SRC=$CLOISTER_SOURCE_DIR
BUILD=$CLOISTER_BUILD_DIR
set +u
. "$SRC/scripts/stack.sh"
set -u
command -v sqlite3 >/dev/null || { echo "skipped: sqlite3 missing"; exit 77; }
command -v python3 >/dev/null || { echo "skipped: python3 missing"; exit 77; }

model=$cl_tmp/model.gguf
if [ -n "${CLOISTER_REFERENCE:-}" ] && [ -f "$CLOISTER_REFERENCE/models/tiny-llama-q8_0.gguf" ]; then
  cp "$CLOISTER_REFERENCE/models/tiny-llama-q8_0.gguf" "$model"
else
  echo "note: CLOISTER_REFERENCE unset; using a generated model"
  "$BUILD/src/cli/cloister" mkmodel --arch llama --shape tiny --type q8_0 -o "$model" >/dev/null
fi
export TMPDIR=$cl_tmp/tmp && mkdir -p "$TMPDIR"
bpids=()
cleanup() {
  for p in "${bpids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${bpids[@]}"; do wait "$p" 2>/dev/null || true; done
  stack_down
}
if ! stack_up "$BUILD" "$model"; then bad "stack came up"; stack_down; finish; exit 1; fi
trap cleanup EXIT
ok "key service, host and enclave 1 up"

# a second host + enclave, in its own vsock directory
mkdir -m 700 "$D/vsock2"
"$HOST" --listen 127.0.0.1:0 --enclave-cid 16 --vsock-dir "$D/vsock2" --model "$D/model.sealed" \
  --kms "$kms_url" --kms-credentials "$OPERATOR_DIR/operator.json" > "$D/host2.out" 2> "$D/host2.log" &
bpids+=($!)
stack_wait_for "$D/host2.out" 'listening on' 10 || { bad "host 2"; finish; exit 1; }
host2_url=http://$(grep -oE '127\.0\.0\.1:[0-9]+' "$D/host2.out" | head -1)
"$SIM" run "$D/enclave.img" --dir "$SIM_DIR" --vsock-dir "$D/vsock2" --cid 16 > "$D/enclave2.out" 2> "$D/enclave2.log" &
enc2=$!
bpids+=($enc2)
for _ in $(seq 1 300); do curl -sf "$host2_url/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf "$host2_url/readyz" >/dev/null && ok "host and enclave 2 up" || { bad "enclave 2 not ready"; finish; exit 1; }

# the consumer: its own principal, its own key, released only to the attested enclave
CONS=$D/consumer
mkdir -m 700 "$CONS"
"$KMS" user add consumer --dir "$KMS_DIR" > "$CONS/c.txt"
( umask 077; printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' \
    "$(stack_field access_key_id "$CONS/c.txt")" "$(stack_field secret_access_key "$CONS/c.txt")" > "$CONS/credentials" )
consumer_arn=$(stack_field arn "$CONS/c.txt"); rm -f "$CONS/c.txt"
pcr_args=(--pcr0 "$(stack_pcr 0 "$D/pcrs.json")" --pcr1 "$(stack_pcr 1 "$D/pcrs.json")" --pcr2 "$(stack_pcr 2 "$D/pcrs.json")")
pins=(--root "$D/sim-root.pem" --pcr "0=$(stack_pcr 0 "$D/pcrs.json")" --pcr "1=$(stack_pcr 1 "$D/pcrs.json")" --pcr "2=$(stack_pcr 2 "$D/pcrs.json")")
cons() { AWS_SHARED_CREDENTIALS_FILE=$CONS/credentials AWS_REGION=us-east-1 "$CL" "$@"; }
"$CL" kms policy "${pcr_args[@]}" --consumer hospital-a --root "$D/sim-root.pem" --principal "$operator_arn" \
  --admin "$consumer_arn" > "$CONS/policy.json" && ok "job-key policy made (kms policy --consumer)" || bad "kms policy --consumer"
jkey=$(cons kms create-key --kms "$kms_url" --policy "$CONS/policy.json" --alias alias/jobs)
[ -n "$jkey" ] && ok "consumer's job key created" || { bad "create-key"; finish; exit 1; }

S=$D/store
mkdir -m 700 "$S"
Q=sqlite:$S/queue.db O=dir:$S/objects R=sqlite:$S/results.db
sub=(--kms "$kms_url" --key-id "$jkey" --consumer hospital-a --objects "$O" --queue "$Q")
wargs=(--queue "$Q" --objects "$O" --results "$R" --max-receives 2 --retry-ms 100 --poll-ms 50 --visibility-ms 4000)
marker="PHI-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"

# 1. a worker killed mid-job: a long job, one worker, kill -9 while it holds the message
long=$(cons batch submit "${sub[@]}" -n 600 --temp 0 "Patient $marker-long: write a long discharge summary")
[ ${#long} = 32 ] && ok "long job submitted ($long)" || bad "submit: '$long'"
# the enclave is frozen while the worker hands it the job, so the job cannot
# finish (a fast machine decodes 600 tokens in 0.2 s) before the worker dies
enc1_tree=$(ptree "$stack_enclave_pid")
kill -STOP $enc1_tree
"$HOST" --worker --enclave-cid 16 --vsock-dir "$D/vsock" "${wargs[@]}" 2> "$D/worker1a.log" &
w1=$!
bpids+=($w1)
for _ in $(seq 1 100); do
  [ "$(sqlite3 "$S/queue.db" "SELECT count(*) FROM queue WHERE receives = 1" 2>/dev/null)" = 1 ] && break; sleep 0.05
done
sleep 0.3
kill -9 $w1; wait $w1 2>/dev/null
kill -CONT $enc1_tree
[ "$(sqlite3 "$S/results.db" "SELECT count(*) FROM results" 2>/dev/null || echo 0)" = 0 ] \
  && ok "worker killed -9 while the enclave ran its job" || bad "the long job finished before the kill"

# 2. 20 text jobs (one JSONL file) and a poison job
python3 - "$marker" > "$cl_tmp/jobs.jsonl" <<'PY'
import json, sys
for i in range(20):
    print(json.dumps({"messages": [{"role": "user", "content": f"Patient {sys.argv[1]}-{i} reports fever and cough, case {i}"}],
                      "max_tokens": 12, "temperature": 0}))
PY
cons batch submit "${sub[@]}" --jsonl "$cl_tmp/jobs.jsonl" > "$cl_tmp/ids" 2> "$cl_tmp/submit.err"
[ "$(sort -u "$cl_tmp/ids" | wc -l)" = 20 ] && ok "20 jobs submitted from JSONL" || bad "submit --jsonl: $(cat "$cl_tmp/submit.err")"
head -c 300 /dev/urandom > "$S/objects/poison.job"
sqlite3 "$S/queue.db" "INSERT INTO queue(job_id, object, visible_at, sent_at) VALUES('poison', 'poison.job', 0, 0)"

"$HOST" --worker --enclave-cid 16 --vsock-dir "$D/vsock" "${wargs[@]}" 2> "$D/worker1.log" &
wk1=$!
bpids+=($wk1)
"$HOST" --worker --enclave-cid 16 --vsock-dir "$D/vsock2" "${wargs[@]}" 2> "$D/worker2.log" &
wk2=$!
bpids+=($wk2)
for _ in $(seq 1 1200); do
  st=$("$CL" batch status --queue "$Q" --results "$R" --json 2>/dev/null)
  python3 -c 'import json,sys; s=json.loads(sys.argv[1]); sys.exit(0 if s["results"]>=21 and s["dead"]>=1 and s["queued"]+s["in_flight"]==0 else 1)' "$st" 2>/dev/null && break
  sleep 0.1
done
echo "status: $st"
python3 -c 'import json,sys; s=json.loads(sys.argv[1]); sys.exit(0 if s["results"]==21 and s["dead"]==1 else 1)' "$st" \
  && ok "21 results, 1 dead letter, queue empty" || bad "pipeline did not finish: $st"
[ "$(sqlite3 "$S/results.db" "SELECT count(DISTINCT job_id) FROM results")" = 21 ] && ok "no job stored twice" || bad "duplicate results"
expect 0 "batch status --wait --jobs: every submitted job finished" "$CL" batch status --queue "$Q" --results "$R" --jobs "$cl_tmp/ids" --wait --timeout 60
[ "$(grep -c ' done$' "$cl_tmp/out")" = 20 ] && ok "status lists the 20 jobs done" || bad "status: $(tail -3 "$cl_tmp/out")"
expect 1 "batch status --wait gives up after --timeout" "$CL" batch status --queue "$Q" --results "$R" --wait --timeout 1 never-submitted
expect_err "timeout: 0 of 1 jobs finished" "the timeout is named"
grep -q '"event":"job_stored".*"receives":2' "$D/worker1.log" "$D/worker2.log" \
  && ok "the killed worker's job was redelivered (receive count 2)" || bad "no redelivered job in the worker logs"
expect 0 "batch status names the long job done" "$CL" batch status --queue "$Q" --results "$R" "$long"
grep -q "$long done" "$cl_tmp/out" && ok "long job completed exactly once" || bad "long job: $(cat "$cl_tmp/out")"
expect 0 "batch status of the poison job" "$CL" batch status --queue "$Q" --results "$R" poison
grep -q "poison dead (PROTO_JOB_MALFORMED after 2 receives)" "$cl_tmp/out" \
  && ok "poison job in the dead-letter queue with its error record" || bad "poison: $(cat "$cl_tmp/out")"
grep -q '"event":"job_dead_letter"' "$D/worker1.log" "$D/worker2.log" && ok "dead letter logged" || bad "no dead-letter log line"
n1=$(grep -c '"event":"job_stored"' "$D/worker1.log"); n2=$(grep -c '"event":"job_stored"' "$D/worker2.log")
[ "$n1" -ge 1 ] && [ "$n2" -ge 1 ] && ok "both workers (two enclaves) ran jobs ($n1 + $n2)" || bad "workers ran $n1 and $n2 jobs"

# 3. every result: receipt verifies, decrypts for the consumer, equals cloister run
i=0; same=0; verified=0
while read -r id; do
  want=$("$CL" run "$D/model.gguf" --chat -p "Patient $marker-$i reports fever and cough, case $i" -n 12 --temp 0 --json |
         python3 -c 'import json,sys; print(json.load(sys.stdin)["text"])')
  got=$(cons batch result "$id" --results "$R" --objects "$O" --kms "$kms_url" "${pins[@]}" 2> "$cl_tmp/res.err") && verified=$((verified + 1))
  [ -n "$want" ] && [ "$want" = "$got" ] && same=$((same + 1)) || echo "    job $i: run='$want' batch='$got' $(head -c 300 "$cl_tmp/res.err")"
  i=$((i + 1))
done < "$cl_tmp/ids"
[ "$verified" = 20 ] && ok "20 results fetched, receipts verified, decrypted by the consumer" || bad "$verified of 20 results verified"
[ "$same" = 20 ] && ok "20 batch answers equal cloister run on the plain model (greedy)" || bad "$same of 20 answers equal"
cons batch result "$(head -1 "$cl_tmp/ids")" --results "$R" --objects "$O" --kms "$kms_url" "${pins[@]}" --json > "$cl_tmp/r.json"
python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); r=j["receipt"]; sys.exit(0 if j["object"]=="chat.completion" and r["status"]=="ok" and r["completion_tokens"]>0 and r["consumer"]=="hospital-a" else 1)' "$cl_tmp/r.json" \
  && ok "result --json: chat.completion with the receipt's fields" || bad "result --json: $(head -c 300 "$cl_tmp/r.json")"
longans=$(cons batch result "$long" --results "$R" --objects "$O" --kms "$kms_url" "${pins[@]}" 2>/dev/null)
[ ${#longans} -ge 40 ] && ok "long job's answer (${#longans} bytes)" || bad "long answer: '$longans'"
# the operator (no consumer credentials) cannot read a result; a wrong PCR pin is refused
expect 1 "without the consumer's credentials no job key" env AWS_SHARED_CREDENTIALS_FILE=/nonexistent AWS_ACCESS_KEY_ID= \
  "$CL" batch result "$(head -1 "$cl_tmp/ids")" --results "$R" --objects "$O" --kms "$kms_url" "${pins[@]}"
badpcr=(--root "$D/sim-root.pem" --pcr "0=$(printf '0%.0s' {1..96})")
expect 1 "a receipt from an enclave with other PCRs is refused" cons batch result "$(head -1 "$cl_tmp/ids")" --results "$R" --objects "$O" --kms "$kms_url" "${badpcr[@]}"
expect_err "PCR" "the PCR mismatch is named"

# 4. nothing readable outside the enclave
hits=$(grep -rlaF -e "$marker" -e "$longans" "$S" "$D"/*.log "$D/vsock" "$D/vsock2" "$TMPDIR" "$KMS_DIR" 2>/dev/null || true)
[ -z "$hits" ] && ok "marker and answer absent from objects, queue, results, WAL files, logs, temp files" || bad "plaintext found in: $hits"
for db in queue results; do
  sqlite3 "$S/$db.db" .dump > "$cl_tmp/$db.dump"
  grep -qaF -e "$marker" -e "$longans" "$cl_tmp/$db.dump" && bad "marker in the $db table dump" || ok "marker absent from every row of the $db database ($(wc -l < "$cl_tmp/$db.dump") lines)"
done

# 5. receipts: verify, then tamper with copies
expect 0 "audit verify: all receipts" "$CL" audit verify --results "$R" "${pins[@]}"
grep -q "^ok - 2[1-9] receipts in 2 chains" "$cl_tmp/out" && ok "receipts from both enclaves verify ($(cat "$cl_tmp/out"))" || bad "audit: $(cat "$cl_tmp/out")"
expect 0 "audit show lists the receipts" "$CL" audit show --results "$R" "${pins[@]}"
tamper() { # NAME PYTHON-SQL-STATEMENTS
  rm -f "$cl_tmp/$1.db"; sqlite3 "$S/results.db" ".backup '$cl_tmp/$1.db'"
  python3 - "$cl_tmp/$1.db" "$2" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
chain = db.execute("SELECT chain FROM receipts GROUP BY chain ORDER BY count(*) DESC LIMIT 1").fetchone()[0]
ids = [r[0] for r in db.execute("SELECT id FROM receipts WHERE chain = ? ORDER BY seq", (chain,))]
rc = lambda i: db.execute("SELECT receipt FROM receipts WHERE id = ?", (i,)).fetchone()[0]
exec(sys.argv[2])
db.commit()
PY
  expect 1 "audit verify detects: $1" "$CL" audit verify --results "sqlite:$cl_tmp/$1.db" "${pins[@]}"
}
tamper altered 'b = bytearray(rc(ids[2])); i = b.find(b"completion_tokens"); b[i + 19] = ord("9") if b[i + 19] != ord("9") else ord("8"); db.execute("UPDATE receipts SET receipt = ? WHERE id = ?", (bytes(b), ids[2]))'
grep -q "^altered: record .*signature" "$cl_tmp/out" && ok "altered receipt named" || bad "altered: $(cat "$cl_tmp/out")"
tamper deleted 'db.execute("DELETE FROM receipts WHERE id = ?", (ids[3],))'
grep -q "^deleted: .*seq 4\.\.4 of this enclave are missing" "$cl_tmp/out" && ok "deleted receipt named (seq 4)" || bad "deleted: $(cat "$cl_tmp/out")"
tamper reordered 'a, b = rc(ids[1]), rc(ids[4]); db.execute("UPDATE receipts SET receipt = ? WHERE id = ?", (b, ids[1])); db.execute("UPDATE receipts SET receipt = ? WHERE id = ?", (a, ids[4]))'
grep -q "^reordered: " "$cl_tmp/out" && ok "reordered receipts named" || bad "reordered: $(cat "$cl_tmp/out")"
tamper inserted 'db.execute("INSERT INTO receipts(chain, seq, job_id, receipt, at) SELECT chain, seq, job_id, receipt, at FROM receipts WHERE id = ?", (ids[2],))'
grep -q "^inserted: .*a second receipt with seq 3" "$cl_tmp/out" && ok "inserted (duplicated) receipt named" || bad "inserted: $(cat "$cl_tmp/out")"
tamper uncertified 'd = db.execute("SELECT doc FROM attestations WHERE chain = ?", (chain,)).fetchone()[0]; db.execute("UPDATE attestations SET doc = ? WHERE chain = ?", (d[:-1] + bytes([d[-1] ^ 1]), chain))'
grep -q "^inserted: .*no valid attestation certifies" "$cl_tmp/out" && ok "receipts whose audit key no valid attestation certifies are refused" || bad "uncertified: $(cat "$cl_tmp/out")"
tamper result 'j, d = db.execute("SELECT job_id, result FROM results LIMIT 1").fetchone(); db.execute("UPDATE results SET result = ? WHERE job_id = ?", (d[:-1] + bytes([d[-1] ^ 1]), j))'
grep -q "^altered: .*stored result differs" "$cl_tmp/out" && ok "altered result named" || bad "result: $(cat "$cl_tmp/out")"

# 6. a full disk (file-size limit) for the object store: clear error, nothing half-written
python3 -c 'import sys,zlib,struct
w=h=200; raw=b"".join(b"\0"+bytes((x*7+y*13)&255 for x in range(w*3)) for y in range(h))
def ch(t,d): return struct.pack(">I",len(d))+t+d+struct.pack(">I",zlib.crc32(t+d))
sys.stdout.buffer.write(b"\x89PNG\r\n\x1a\n"+ch(b"IHDR",struct.pack(">IIBBBBB",w,h,8,2,0,0,0))+ch(b"IDAT",zlib.compress(raw,0))+ch(b"IEND",b""))' > "$cl_tmp/scan.png"
before=$(ls -A "$S/objects" | wc -l)
( ulimit -f 64; cons batch submit "${sub[@]}" --image "$cl_tmp/scan.png" "Patient $marker: describe the scan" ) > "$cl_tmp/out" 2> "$cl_tmp/err"
rc=$?
[ "$rc" = 1 ] && ok "submit on a full disk fails (exit 1)" || bad "submit on a full disk: exit $rc"
expect_err "storage full" "the full disk is named (STORE_FULL)"
[ "$(ls -A "$S/objects" | wc -l)" = "$before" ] && ok "no partial object or temp file left" || bad "objects dir changed: $(ls -A "$S/objects" | head)"
expect 0 "an image job submits with room on the disk" cons batch submit "${sub[@]}" --image "$cl_tmp/scan.png" "Patient $marker: describe the scan"
img=$(cat "$cl_tmp/out")
expect 0 "the image job finishes" "$CL" batch status --queue "$Q" --results "$R" --wait --timeout 60 "$img"
# until the engine takes images, the enclave answers with an error sealed for the consumer (and a receipt)
grep -q "$img error" "$cl_tmp/out" && ok "image job answered (an error until images land), not dead-lettered" || bad "image job: $(cat "$cl_tmp/out")"
expect 1 "batch result names the enclave's error answer" cons batch result "$img" --results "$R" --objects "$O" --kms "$kms_url" "${pins[@]}"
expect_err "answered job $img with an error: " "the error answer is decrypted and shown"

# 7. the key service down for a while: jobs wait (no dead letter) and complete after it returns
wait_done() { # JOB... : until every job is done (60 s)
  for _ in $(seq 1 600); do
    "$CL" batch status --queue "$Q" --results "$R" "$@" > "$cl_tmp/st" 2>/dev/null
    [ "$(grep -c ' done$' "$cl_tmp/st")" = $# ] && return 0; sleep 0.1
  done; return 1
}
kill -STOP $wk1 $wk2
k1=$(cons batch submit "${sub[@]}" -n 8 --temp 0 "Patient $marker: kms outage job one")
k2=$(cons batch submit "${sub[@]}" -n 8 --temp 0 "Patient $marker: kms outage job two")
kms_pid=${stack_pids[0]}
kill "$kms_pid"; wait "$kms_pid" 2>/dev/null
kill -CONT $wk1 $wk2
sleep 3
"$CL" batch status --queue "$Q" --results "$R" "$k1" "$k2" > "$cl_tmp/st"
[ "$(grep -c ' pending$' "$cl_tmp/st")" = 2 ] && ok "key service down: both jobs wait (not dead-lettered)" || bad "during the outage: $(cat "$cl_tmp/st")"
grep -q '"event":"job_retry".*"transient":1' "$D/worker1.log" "$D/worker2.log" && ok "the outage is retried as transient" || bad "no transient retry logged"
"$KMS" serve "$KMS_DIR" --listen "${kms_url#http://}" --trust-root "$D/sim-root.pem" > "$D/kms2.out" 2> "$D/kms2.log" &
bpids+=($!)
stack_wait_for "$D/kms2.out" 'listening on' 10 || bad "key service restart"
wait_done "$k1" "$k2" && ok "both jobs complete after the key service returns" || bad "after the outage: $(cat "$cl_tmp/st")"

# 8. kill -9 of an enclave mid-job: the job is redelivered and completed once (by the other enclave)
kill -STOP $wk1
# enclave 2 is frozen before the job exists: worker 2 hands it the job and
# waits, and the job cannot finish before the kill on a fast machine
kill -STOP $(ptree $enc2)
k3=$(cons batch submit "${sub[@]}" -n 600 --temp 0 "Patient $marker: enclave crash job")
for _ in $(seq 1 200); do
  [ "$(sqlite3 "$S/queue.db" "SELECT receives FROM queue WHERE job_id = '$k3'" 2>/dev/null)" = 1 ] && break; sleep 0.05
done
sleep 0.3
kill -9 $enc2; wait $enc2 2>/dev/null
kill -CONT $wk1
wait_done "$k3" && ok "enclave killed mid-job: the job completed on the other enclave" || bad "after the enclave crash: $(cat "$cl_tmp/st")"
[ "$(sqlite3 "$S/results.db" "SELECT count(*) FROM results WHERE job_id = '$k3'")" = 1 ] && ok "stored exactly once" || bad "job stored more than once"
grep -q '"event":"job_retry".*"error":"NET_HOST_ENCLAVE_CLOSED"' "$D/worker2.log" && ok "worker 2 saw the enclave close mid-job and released the job" || bad "worker 2 log: $(grep job_retry "$D/worker2.log" | tail -2)"
expect 0 "audit verify after the crashes" "$CL" audit verify --results "$R" "${pins[@]}"

finish
