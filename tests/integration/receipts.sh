#!/usr/bin/env bash
# Interactive receipts (issue 11, docs/receipts.md) through real processes:
# cloister-kms, cloister-host --receipts, cloister-enclave under cloister-sim.
#  - plain and streamed chat completions each get a receipt signed by the
#    attested audit key, stored by the host; `cloister audit verify` passes;
#  - `cloister ask --json` names the request id found in the store;
#  - the ciphertext digests in every receipt equal the bytes the host relayed
#    (its STACK_CAPTURE of the vsock traffic), and the receipt follows the answer;
#  - one chain per enclave boot mixes interactive and batch receipts;
#  - a store locked by someone else does not hold up the client; a full one
#    (file-size limit) costs no answer, and the failure is logged and counted;
#  - altered, deleted, inserted and reordered interactive receipts are named;
#  - no prompt marker or answer in the receipts store;
#  - without --receipts the host says at start that it discards them.
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
S=$cl_tmp/store
mkdir -m 700 "$S"
RDB=$S/results.db R=sqlite:$RDB
STACK_CAPTURE=1 STACK_HOST_ARGS="--receipts $R"
export STACK_CAPTURE STACK_HOST_ARGS
bpids=()
cleanup() {
  for p in "${bpids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${bpids[@]}"; do wait "$p" 2>/dev/null || true; done
  stack_down
}
if ! stack_up "$BUILD" "$model"; then bad "stack came up"; stack_down; finish; exit 1; fi
trap cleanup EXIT
ok "key service, host (--receipts) and enclave up"
grep -q '"event":"receipts_stored"' "$D/host.log" && ok "the host says at start that it stores receipts" || bad "no receipts_stored line in the host log"
pins=(--root "$D/sim-root.pem" --pcr "0=$(stack_pcr 0 "$D/pcrs.json")" --pcr "1=$(stack_pcr 1 "$D/pcrs.json")" --pcr "2=$(stack_pcr 2 "$D/pcrs.json")")
marker="PHI-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
ask() { "$CL" ask --host "$host_url" --trust "$D/TRUST.json" -n 8 --temp 0 --json "$@"; }
# waits until the store holds N receipts (the host writes them off the request path)
wait_receipts() {
  for _ in $(seq 1 200); do
    [ "$(sqlite3 "$RDB" "SELECT count(*) FROM receipts" 2>/dev/null)" -ge "$1" ] && return 0; sleep 0.1
  done; return 1
}

# 1. plain and streamed chat completions
: > "$cl_tmp/ids"
for i in 1 2 3 4; do
  a=()
  [ "$i" -gt 2 ] && a=(--stream)
  ask "${a[@]}" "Patient $marker-$i reports chest pain, case $i" > "$cl_tmp/a$i.json" 2> "$cl_tmp/a$i.err" \
    || bad "ask $i: $(head -c 300 "$cl_tmp/a$i.err")"
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["request_id"])' "$cl_tmp/a$i.json" >> "$cl_tmp/ids"
done
grep -cE '^chatcmpl-[0-9a-f]{24}$' "$cl_tmp/ids" | grep -qx 4 && ok "ask --json names the request id of 4 answers (2 plain, 2 streamed)" \
  || bad "request ids: $(cat "$cl_tmp/ids")"
wait_receipts 4 && ok "the host stored 4 receipts" || bad "receipts stored: $(sqlite3 "$RDB" "SELECT count(*) FROM receipts")"
expect 0 "audit verify: interactive receipts" "$CL" audit verify --results "$R" "${pins[@]}"
grep -q "^ok - 4 receipts in 1 chains" "$cl_tmp/out" && ok "4 receipts in one chain verify ($(cat "$cl_tmp/out"))" || bad "audit: $(cat "$cl_tmp/out")"
"$CL" audit show --results "$R" "${pins[@]}" --json > "$cl_tmp/show.json"
python3 - "$cl_tmp/show.json" "$cl_tmp/ids" "$cl_tmp" "$(sha256sum "$D/model.gguf" | cut -d' ' -f1)" <<'PY' && ok "each answer's request id has its receipt: interactive, ok, consumer '-', model digest, the answer's token counts" || bad "audit show does not match the answers"
import json, sys
recs = {r["request_id"]: r for r in json.load(open(sys.argv[1]))["receipts"] if r.get("kind") == "interactive"}
for i, rid in enumerate(open(sys.argv[2]).read().split(), 1):
    r, a = recs.get(rid), json.load(open(f"{sys.argv[3]}/a{i}.json"))
    if not r: sys.exit(f"no receipt for {rid}")
    want = (r["status"], r["consumer"], r["model_sha256"], r["verdict"], r["completion_tokens"], r["prompt_tokens"])
    got = ("ok", "-", sys.argv[4], "signature ok", a["usage"]["completion_tokens"], a["usage"]["prompt_tokens"])
    if want != got: sys.exit(f"{rid}: {want} != {got}")
PY

# 2. the digests are those of the ciphertext the host relayed, and the receipt came after the answer
python3 - "$D/capture" "$cl_tmp/show.json" <<'PY' > "$cl_tmp/cap.txt" 2>&1 && ok "request and response digests equal the host's captured ciphertext ($(cat "$cl_tmp/cap.txt"))" || bad "capture: $(cat "$cl_tmp/cap.txt")"
import glob, hashlib, json, re, struct, sys
def frames(b):
    o = 0
    while o + 8 <= len(b):
        t, n = b[o], struct.unpack(">I", b[o + 4:o + 8])[0]
        yield t, b[o + 8:o + 8 + n]; o += 8 + n
OHTTP_REQ, OHTTP_RES, CHUNK, END, RECEIPT = 3, 4, 5, 6, 14
recs = {r["request_id"]: r for r in json.load(open(sys.argv[2]))["receipts"]}
seen = chunked = 0
for out in sorted(glob.glob(sys.argv[1] + "/*-enclave-out.bin")):
    sent = list(frames(open(out, "rb").read()))
    if not sent or sent[0][0] != OHTTP_REQ: continue
    got = list(frames(open(out[:-8] + "-in.bin", "rb").read()))
    kinds = [t for t, _ in got]
    if RECEIPT not in kinds: continue
    if kinds.index(RECEIPT) != len(kinds) - 1 or not (OHTTP_RES in kinds or END in kinds):
        sys.exit(f"{out}: receipt not after the answer: {kinds}")
    resp = b"".join(p for t, p in got if t in (OHTTP_RES, CHUNK))
    chunked += CHUNK in kinds
    blob = got[-1][1]
    rlen = struct.unpack(">I", blob[:4])[0]
    m = re.search(rb'\{"v":1,"kind":"interactive".*?"duration_us":\d+\}', blob[4:4 + rlen])
    p = json.loads(m.group(0))
    if p["request_sha256"] != hashlib.sha256(sent[0][1]).hexdigest(): sys.exit(f"{out}: request digest differs")
    if p["response_sha256"] != hashlib.sha256(resp).hexdigest(): sys.exit(f"{out}: response digest differs")
    r = recs.get(p["request_id"])
    if not r or r["request_sha256"] != p["request_sha256"] or r["response_sha256"] != p["response_sha256"]:
        sys.exit(f"{out}: stored receipt differs from the relayed one")
    seen += 1
if seen != 4 or chunked != 2: sys.exit(f"{seen} receipts in the capture, {chunked} chunked (want 4, 2)")
print(f"{seen} exchanges, {chunked} chunked")
PY

# 3. one chain shared with batch jobs: a job between interactive requests
CONS=$D/consumer
mkdir -m 700 "$CONS"
"$KMS" user add consumer --dir "$KMS_DIR" > "$CONS/c.txt"
( umask 077; printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' \
    "$(stack_field access_key_id "$CONS/c.txt")" "$(stack_field secret_access_key "$CONS/c.txt")" > "$CONS/credentials" )
consumer_arn=$(stack_field arn "$CONS/c.txt"); rm -f "$CONS/c.txt"
cons() { AWS_SHARED_CREDENTIALS_FILE=$CONS/credentials AWS_REGION=us-east-1 "$CL" "$@"; }
"$CL" kms policy --pcr0 "$(stack_pcr 0 "$D/pcrs.json")" --pcr1 "$(stack_pcr 1 "$D/pcrs.json")" --pcr2 "$(stack_pcr 2 "$D/pcrs.json")" \
  --consumer hospital-a --root "$D/sim-root.pem" --principal "$operator_arn" --admin "$consumer_arn" > "$CONS/policy.json"
jkey=$(cons kms create-key --kms "$kms_url" --policy "$CONS/policy.json" --alias alias/jobs)
Q=sqlite:$S/queue.db O=dir:$S/objects
job=$(cons batch submit --kms "$kms_url" --key-id "$jkey" --consumer hospital-a --objects "$O" --queue "$Q" -n 6 --temp 0 \
      "Patient $marker-batch: summarise")
"$HOST" --worker --enclave-cid 16 --vsock-dir "$D/vsock" --queue "$Q" --objects "$O" --results "$R" --poll-ms 50 \
  2> "$D/worker.log" &
bpids+=($!)
"$CL" batch status --queue "$Q" --results "$R" --wait --timeout 60 "$job" > "$cl_tmp/st" 2>&1 \
  && ok "a batch job ran on the same enclave" || bad "batch job: $(cat "$cl_tmp/st")"
ask "Patient $marker-5 after the batch job" > "$cl_tmp/a5.json" 2>/dev/null || bad "ask 5"
wait_receipts 6 || bad "6 receipts"
expect 0 "audit verify: a chain mixing interactive and batch receipts" "$CL" audit verify --results "$R" "${pins[@]}"
grep -q "^ok - 6 receipts in 1 chains" "$cl_tmp/out" && ok "6 receipts (5 interactive, 1 batch) in one chain" || bad "mixed chain: $(cat "$cl_tmp/out")"
"$CL" audit show --results "$R" "${pins[@]}" --json > "$cl_tmp/show.json"
python3 -c 'import json,sys; k=[(r["seq"],r["kind"]) for r in json.load(open(sys.argv[1]))["receipts"]]; sys.exit(0 if k==[(1,"interactive"),(2,"interactive"),(3,"interactive"),(4,"interactive"),(5,"batch"),(6,"interactive")] else k)' \
  "$cl_tmp/show.json" && ok "seq 1-4 interactive, 5 batch, 6 interactive" || bad "chain order: $(head -c 400 "$cl_tmp/show.json")"

# 4. the store held by someone else: the client still gets its answer at once
python3 -c 'import sqlite3,sys,time; db=sqlite3.connect(sys.argv[1], isolation_level=None); db.execute("BEGIN EXCLUSIVE"); print("locked", flush=True); time.sleep(8)' "$RDB" > "$cl_tmp/lock.out" &
lockp=$!
bpids+=($lockp)
stack_wait_for "$cl_tmp/lock.out" locked 10 || bad "store lock"
t0=$(date +%s%N)
ask "Patient $marker-6 while the store is locked" > "$cl_tmp/a6.json" 2>/dev/null && ok "answered while the receipts store was locked" || bad "ask 6"
t1=$(date +%s%N)
kill -0 $lockp 2>/dev/null && ok "the answer came before the store was free ($(( (t1 - t0) / 1000000 )) ms)" || bad "the client waited for the store"
wait $lockp 2>/dev/null
wait_receipts 7 && ok "the receipt was stored once the lock went" || bad "receipt after the lock"
expect 0 "audit verify after the lock" "$CL" audit verify --results "$R" "${pins[@]}"
curl -s "$host_url/metrics" > "$cl_tmp/metrics"
grep -q 'cloister_host_receipts_total{result="stored"} 6' "$cl_tmp/metrics" && ok "metrics: 6 interactive receipts stored" \
  || bad "metrics: $(grep receipts_total "$cl_tmp/metrics" | tr '\n' ' ')"

# 5. nothing readable in the store
sqlite3 "$RDB" .dump > "$cl_tmp/dump"
answer=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["answer"])' "$cl_tmp/a1.json")
hits=$(grep -rlaF -e "$marker" "$S" "$cl_tmp/dump" "$D/host.log" "$D/worker.log" 2>/dev/null || true)
[ -z "$hits" ] && ok "prompt marker absent from the receipts store (file, WAL, dump) and the host's logs" || bad "marker found in: $hits"
[ ${#answer} -ge 8 ] && ! grep -qaF "$answer" "$cl_tmp/dump" && ok "the answer is not in the store" || bad "answer '$answer' in the store dump"

# 6. tampering with interactive receipts (copies of the store)
tamper() { # NAME PYTHON
  rm -f "$cl_tmp/$1.db"; sqlite3 "$RDB" ".backup '$cl_tmp/$1.db'"
  python3 - "$cl_tmp/$1.db" "$2" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
ids = [r[0] for r in db.execute("SELECT id FROM receipts WHERE job_id LIKE 'chatcmpl-%' ORDER BY seq")]
rc = lambda i: db.execute("SELECT receipt FROM receipts WHERE id = ?", (i,)).fetchone()[0]
exec(sys.argv[2])
db.commit()
PY
  expect 1 "audit verify detects: $1 interactive receipt" "$CL" audit verify --results "sqlite:$cl_tmp/$1.db" "${pins[@]}"
}
tamper altered 'b = bytearray(rc(ids[1])); i = b.find(b"completion_tokens"); b[i + 19] = ord("9") if b[i + 19] != ord("9") else ord("8"); db.execute("UPDATE receipts SET receipt = ? WHERE id = ?", (bytes(b), ids[1]))'
grep -qE "^altered: record .*request chatcmpl-[0-9a-f]+\): .*signature" "$cl_tmp/out" && ok "altered receipt named by its request id" || bad "altered: $(cat "$cl_tmp/out")"
tamper deleted 'db.execute("DELETE FROM receipts WHERE id = ?", (ids[2],))'
grep -q "^deleted: .*request chatcmpl-.*seq 3\.\.3 of this enclave are missing" "$cl_tmp/out" && ok "deleted receipt named (seq 3)" || bad "deleted: $(cat "$cl_tmp/out")"
tamper reordered 'a, b = rc(ids[0]), rc(ids[3]); db.execute("UPDATE receipts SET receipt = ? WHERE id = ?", (b, ids[0])); db.execute("UPDATE receipts SET receipt = ? WHERE id = ?", (a, ids[3]))'
grep -q "^reordered: .*request chatcmpl-" "$cl_tmp/out" && ok "reordered receipts named" || bad "reordered: $(cat "$cl_tmp/out")"
tamper inserted 'db.execute("INSERT INTO receipts(chain, seq, job_id, receipt, at) SELECT chain, seq, job_id, receipt, at FROM receipts WHERE id = ?", (ids[1],))'
grep -q "^inserted: .*request chatcmpl-.*a second receipt with seq 2" "$cl_tmp/out" && ok "inserted (duplicated) receipt named" || bad "inserted: $(cat "$cl_tmp/out")"
tamper forged 'b = bytearray(rc(ids[0])); b[-1] ^= 1; db.execute("INSERT INTO receipts(chain, seq, job_id, receipt, at) SELECT chain, 99, job_id, ?, at FROM receipts WHERE id = ?", (bytes(b), ids[0]))'
grep -q "^altered: .*request chatcmpl-.*signature does not verify" "$cl_tmp/out" && ok "a forged receipt (bad signature) is named" || bad "forged: $(cat "$cl_tmp/out")"

# 7. options and a host without --receipts
expect 2 "--receipts needs sqlite:PATH" "$HOST" --receipts /tmp/x.db
expect_err "receipts must be sqlite:PATH" "the bad --receipts value is named"
"$HOST" --help | grep -q -- "--receipts sqlite:PATH" && ok "cloister-host --help describes --receipts" || bad "--help lacks --receipts"
"$CL" audit --help | grep -q "request_id" && ok "cloister audit --help explains interactive receipts" || bad "audit --help"
mkdir -m 700 "$D/vsock3" "$D/vsock4" "$S/small"
"$HOST" --listen 127.0.0.1:0 --enclave-cid 16 --vsock-dir "$D/vsock3" --model "$D/model.sealed" \
  --kms "$kms_url" --kms-credentials "$OPERATOR_DIR/operator.json" > "$D/host3.out" 2> "$D/host3.log" &
bpids+=($!)
stack_wait_for "$D/host3.out" 'listening on' 10 >/dev/null 2>&1
grep -q '"event":"receipts_discarded"' "$D/host3.log" && ok "without --receipts the host says at start that receipts are discarded" \
  || bad "host 3 log: $(head -c 300 "$D/host3.log")"

# 8. a store that cannot take the writes (file-size limit): answers still come, failures are logged and counted
( ulimit -f 40; trap "" XFSZ; exec "$HOST" --listen 127.0.0.1:0 --enclave-cid 16 --vsock-dir "$D/vsock4" --model "$D/model.sealed" \
  --kms "$kms_url" --kms-credentials "$OPERATOR_DIR/operator.json" --receipts "sqlite:$S/small/r.db" ) > "$D/host4.out" 2> "$D/host4.log" &
bpids+=($!)
stack_wait_for "$D/host4.out" 'listening on' 10 >/dev/null 2>&1
host4_url=http://$(grep -oE '127\.0\.0\.1:[0-9]+' "$D/host4.out" | head -1)
"$SIM" run "$D/enclave.img" --dir "$SIM_DIR" --vsock-dir "$D/vsock4" --cid 16 > "$D/enclave4.out" 2> "$D/enclave4.log" &
bpids+=($!)
for _ in $(seq 1 300); do curl -sf "$host4_url/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
answered=0
for i in 1 2 3 4 5 6; do
  "$CL" ask --host "$host4_url" --trust "$D/TRUST.json" -n 4 --temp 0 "question $i" > /dev/null 2>&1 && answered=$((answered + 1))
done
[ "$answered" = 6 ] && ok "6 answers through a host whose receipts store is full" || bad "$answered of 6 answered"
for _ in $(seq 1 50); do grep -q '"event":"receipt_store_failed"' "$D/host4.log" && break; sleep 0.1; done
grep -q '"event":"receipt_store_failed".*STORE_FULL' "$D/host4.log" && ok "the failed write is logged with its reason (STORE_FULL)" \
  || bad "host 4 log: $(grep -i receipt "$D/host4.log" | tail -3)"
curl -s "$host4_url/metrics" | grep -E 'cloister_host_receipts_total\{result="failed"\} [1-9]' >/dev/null \
  && ok "metrics count the failed receipts" || bad "metrics: $(curl -s "$host4_url/metrics" | grep receipts_total | tr '\n' ' ')"

finish
