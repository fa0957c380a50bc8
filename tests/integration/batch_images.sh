#!/usr/bin/env bash
# Batch image jobs (issue 11 with the vision projector): 5 chest X-ray jobs
# through a worker and an enclave with the projector; each result verifies,
# decrypts for the consumer and equals `cloister run --mmproj --image` on the
# plain files; no image byte pattern and no marker outside the enclave.
. "$(dirname "$0")/lib.sh"
SRC=$CLOISTER_SOURCE_DIR
BUILD=$CLOISTER_BUILD_DIR
set +u
. "$SRC/scripts/stack.sh"
set -u
command -v sqlite3 >/dev/null || { echo "skipped: sqlite3 missing"; exit 77; }
if [ -z "${CLOISTER_REFERENCE:-}" ] || [ -z "${CLOISTER_TESTDATA:-}" ] ||
   [ ! -f "$CLOISTER_REFERENCE/models/mmproj-tiny-gemma3-f32.gguf" ]; then
  echo "skipped: needs CLOISTER_REFERENCE (tiny gemma3 + projector) and CLOISTER_TESTDATA (X-rays)"; exit 77
fi
model=$cl_tmp/model.gguf proj=$cl_tmp/mmproj.gguf
cp "$CLOISTER_REFERENCE/models/tiny-gemma3-q8_0.gguf" "$model"
cp "$CLOISTER_REFERENCE/models/mmproj-tiny-gemma3-f32.gguf" "$proj"
export STACK_MMPROJ=$proj
# the host stores interactive receipts (docs/receipts.md) in the worker's results store: one chain, both kinds
S=$cl_tmp/store; mkdir -m 700 "$S"
R=sqlite:$S/results.db
export STACK_HOST_ARGS="--receipts $R"
export TMPDIR=$cl_tmp/tmp && mkdir -p "$TMPDIR"
wpid=
if ! stack_up "$BUILD" "$model"; then bad "stack came up"; stack_down; finish; exit 1; fi
trap '[ -n "$wpid" ] && kill -9 $wpid 2>/dev/null; stack_down' EXIT
ok "key service, host (--mmproj) and enclave up"

CONS=$D/consumer
mkdir -m 700 "$CONS"
"$KMS" user add consumer --dir "$KMS_DIR" > "$CONS/c.txt"
( umask 077; printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' \
    "$(stack_field access_key_id "$CONS/c.txt")" "$(stack_field secret_access_key "$CONS/c.txt")" > "$CONS/credentials" )
consumer_arn=$(stack_field arn "$CONS/c.txt"); rm -f "$CONS/c.txt"
cons() { AWS_SHARED_CREDENTIALS_FILE=$CONS/credentials AWS_REGION=us-east-1 "$CL" "$@"; }
"$CL" kms policy --pcr0 "$(stack_pcr 0 "$D/pcrs.json")" --pcr1 "$(stack_pcr 1 "$D/pcrs.json")" \
  --pcr2 "$(stack_pcr 2 "$D/pcrs.json")" --consumer radiology --root "$D/sim-root.pem" --principal "$operator_arn" \
  --admin "$consumer_arn" > "$CONS/policy.json"
jkey=$(cons kms create-key --kms "$kms_url" --policy "$CONS/policy.json" --alias alias/xray)
pins=(--root "$D/sim-root.pem" --pcr "0=$(stack_pcr 0 "$D/pcrs.json")" --pcr "1=$(stack_pcr 1 "$D/pcrs.json")")
Q=sqlite:$S/queue.db O=dir:$S/objects
marker="PHI-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
imgs=("$CLOISTER_TESTDATA"/images/chest-xray/*.png)
q="Describe this image."
: > "$cl_tmp/ids"
for i in 0 1 2 3 4; do
  img=${imgs[$((i % ${#imgs[@]}))]}
  cons batch submit --kms "$kms_url" --key-id "$jkey" --consumer radiology --objects "$O" --queue "$Q" -n 8 --temp 0 \
    --image "$img" "$q Case $marker-$i." >> "$cl_tmp/ids" || bad "submit image job $i"
done
[ "$(sort -u "$cl_tmp/ids" | wc -l)" = 5 ] && ok "5 image jobs submitted" || bad "ids: $(cat "$cl_tmp/ids")"
"$HOST" --worker --enclave-cid 16 --vsock-dir "$D/vsock" --queue "$Q" --objects "$O" --results "$R" --poll-ms 20 2> "$D/worker.log" &
wpid=$!
expect 0 "all 5 image jobs finish" "$CL" batch status --queue "$Q" --results "$R" --jobs "$cl_tmp/ids" --wait --timeout 240
[ "$(grep -c ' done$' "$cl_tmp/out")" = 5 ] && ok "5 image jobs done" || bad "status: $(cat "$cl_tmp/out")"
i=0; same=0
while read -r id; do
  img=${imgs[$((i % ${#imgs[@]}))]}
  want=$("$CL" run "$model" --mmproj "$proj" --image "$img" --chat -p "$q Case $marker-$i." -n 8 --temp 0 --json 2>/dev/null |
         python3 -c 'import json,sys; print(json.load(sys.stdin)["text"])' 2>/dev/null)
  got=$(cons batch result "$id" --results "$R" --objects "$O" --kms "$kms_url" "${pins[@]}" 2> "$cl_tmp/res.err")
  [ -n "$got" ] && [ "$want" = "$got" ] && same=$((same + 1)) || echo "    job $i: run='$want' batch='$got' $(head -c 300 "$cl_tmp/res.err")"
  i=$((i + 1))
done < "$cl_tmp/ids"
[ "$same" = 5 ] && ok "5 image answers verified, decrypted, equal to cloister run --mmproj --image" || bad "$same of 5 image answers equal"
# a pixel run of the X-ray (bytes from the middle of the file) and the marker appear nowhere outside the enclave
python3 -c 'import sys; d=open(sys.argv[1],"rb").read(); sys.stdout.buffer.write(d[len(d)//2:len(d)//2+24])' "${imgs[0]}" > "$cl_tmp/pattern"
hits=$(grep -rlaF -e "$marker" "$S" "$D"/*.log "$D/vsock" "$TMPDIR" 2>/dev/null; grep -rlaF -f <(od -An -tx1 "$cl_tmp/pattern" | tr -d ' \n'; echo) "$S" 2>/dev/null; \
       python3 - "$cl_tmp/pattern" "$S" <<'PY'
import os, sys
p = open(sys.argv[1], "rb").read()
for root, _, files in os.walk(sys.argv[2]):
    for f in files:
        if p in open(os.path.join(root, f), "rb").read():
            print(os.path.join(root, f))
PY
)
[ -z "$hits" ] && ok "marker and image bytes absent from objects, queue, results, logs, temp files" || bad "found in: $hits"
expect 0 "audit verify" "$CL" audit verify --results "$R" "${pins[@]}"

# receipts name the projector that read the images (batch and interactive), and only then
pdig=$(sha256sum "$proj" | cut -d' ' -f1)
"$CL" audit show --results "$R" "${pins[@]}" --json > "$cl_tmp/bshow.json"
python3 -c 'import json,sys; r=[x for x in json.load(open(sys.argv[1]))["receipts"] if x["kind"]=="batch"]; sys.exit(0 if len(r)==5 and all(x.get("projector_sha256")==sys.argv[2] for x in r) else 1)'   "$cl_tmp/bshow.json" "$pdig" && ok "the 5 image jobs' receipts carry the projector's digest" || bad "batch receipts: $(head -c 400 "$cl_tmp/bshow.json")"
"$CL" ask --host "$host_url" --trust "$D/TRUST.json" -n 6 --temp 0 --json --image "${imgs[0]}" "$q Case $marker-ask." > "$cl_tmp/ai.json" 2>"$cl_tmp/ai.err"   || bad "ask --image: $(head -c 300 "$cl_tmp/ai.err")"
"$CL" ask --host "$host_url" --trust "$D/TRUST.json" -n 6 --temp 0 --json "Case $marker-text." > "$cl_tmp/at.json" 2>/dev/null || bad "ask (text)"
for _ in $(seq 1 100); do [ "$(sqlite3 "$S/results.db" "SELECT count(*) FROM receipts" 2>/dev/null)" = 7 ] && break; sleep 0.1; done
"$CL" audit show --results "$R" "${pins[@]}" --json > "$cl_tmp/ishow.json"
python3 - "$cl_tmp/ishow.json" "$pdig" "$cl_tmp/ai.json" "$cl_tmp/at.json" <<'PY' && ok "interactive receipts: the image request names the projector, the text one does not" || bad "interactive receipts: $(head -c 600 "$cl_tmp/ishow.json")"
import json, sys
recs = {r["request_id"]: r for r in json.load(open(sys.argv[1]))["receipts"] if r["kind"] == "interactive"}
img, txt = (recs[json.load(open(p))["request_id"]] for p in sys.argv[3:5])
sys.exit(0 if img.get("projector_sha256") == sys.argv[2] and "projector_sha256" not in txt
         and img["verdict"] == txt["verdict"] == "signature ok" and img["status"] == "ok" else 1)
PY
expect 0 "audit verify: 5 batch and 2 interactive receipts, with and without images, one chain" "$CL" audit verify --results "$R" "${pins[@]}"
grep -q "^ok - 7 receipts in 1 chains" "$cl_tmp/out" && ok "one chain of 7" || bad "audit: $(cat "$cl_tmp/out")"
! grep -qaF "$marker" <(sqlite3 "$S/results.db" .dump) && ok "marker absent from the store after the interactive requests" || bad "marker in the store"
finish
