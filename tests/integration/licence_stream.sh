#!/usr/bin/env bash
# Issue 12: a streamed answer is cut at the lease boundary. A licensed model
# with a 2 s lease; a long streamed answer (`cloister ask --stream`, -n 1024)
# starts; as soon as its first piece arrives the enclave (and the key service,
# so no renewal can answer) is frozen with SIGSTOP past the lease's end, then
# the enclave alone is resumed. Deterministic: whatever the machine's speed,
# the generation is held mid-answer across the boundary. The stream must end
# with the lease-ended error, before its completion, and the enclave wipes.
. "$(dirname "$0")/lib.sh"
SRC=$CLOISTER_SOURCE_DIR
BUILD=$CLOISTER_BUILD_DIR
set +u
. "$SRC/scripts/stack.sh"
set -u
command -v python3 >/dev/null || { echo "skipped: python3 missing"; exit 77; }
model=$cl_tmp/model.gguf
if [ -n "${CLOISTER_REFERENCE:-}" ] && [ -f "$CLOISTER_REFERENCE/models/tiny-llama-q8_0.gguf" ]; then
  cp "$CLOISTER_REFERENCE/models/tiny-llama-q8_0.gguf" "$model"
else
  "$BUILD/src/cli/cloister" mkmodel --arch llama --shape tiny --type q8_0 -o "$model" >/dev/null
fi
export STACK_LICENCE=1 STACK_LICENCE_LEASE_S=2
export TMPDIR=$cl_tmp/tmp && mkdir -p "$TMPDIR"
if ! stack_up "$BUILD" "$model"; then bad "licensed stack came up"; tail -5 "$D/enclave.log"; stack_down; finish; exit 1; fi
trap 'kill -CONT "${stack_pids[0]}" $(ptree "$stack_enclave_pid") 2>/dev/null; stack_down' EXIT
ok "licensed stack up"
owner() { AWS_SHARED_CREDENTIALS_FILE=$OWNER_DIR/owner.credentials AWS_REGION=us-east-1 "$CL" "$@"; }
C=$cl_tmp/creds && mkdir -m 700 "$C"
owner kms licence create --kms "$kms_url" --key-id "$key" --id lic-s --consumer "Clinic S" --model-digest "$digest" \
  --credential-out "$C/s.cred" >/dev/null 2>&1 && ok "owner issues lic-s" || bad "create lic-s"
sleep 2.5
ASK=("$CL" ask --host "$host_url" --trust "$D/TRUST.json" --credential-file "$C/s.cred" -n 1024 --temp 0 --stream
     "Write a very long and detailed discharge summary")
"${ASK[@]}" > "$cl_tmp/full.txt" 2> "$cl_tmp/full.err" && ok "the whole answer, undisturbed ($(wc -c < "$cl_tmp/full.txt") bytes)" \
  || bad "undisturbed stream: $(tail -2 "$cl_tmp/full.err")"

enc_tree=$(ptree "$stack_enclave_pid" | tr '\n' ' ')
python3 - "$cl_tmp" "${stack_pids[0]}" "$enc_tree" "${ASK[@]}" <<'PY' > "$cl_tmp/cut.log"
import os, signal, subprocess, sys, time
tmp, kms, enc, cmd = sys.argv[1], int(sys.argv[2]), [int(x) for x in sys.argv[3].split()], sys.argv[4:]
err = open(os.path.join(tmp, "cut.err"), "wb")
p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, bufsize=0)
first = p.stdout.read(1)
# the first piece is here: hold the enclave mid-answer, and the key service (no renewal answers)
for pid in [kms] + enc:
    os.kill(pid, signal.SIGSTOP)
held = time.time()
time.sleep(3.2)   # past the 2 s lease's end, whatever it was
for pid in enc:
    os.kill(pid, signal.SIGCONT)
rest = p.stdout.read()
rc = p.wait(timeout=60)
open(os.path.join(tmp, "cut.txt"), "wb").write(first + rest)
print("rc", rc, "bytes", len(first + rest), "held_s", round(time.time() - held, 1))
PY
cat "$cl_tmp/cut.log"
kill -CONT "${stack_pids[0]}"
full=$(wc -c < "$cl_tmp/full.txt"); cut=$(wc -c < "$cl_tmp/cut.txt")
grep -q '^rc [1-9]' "$cl_tmp/cut.log" && ok "the streamed ask failed (exit $(awk '{print $2}' "$cl_tmp/cut.log"))" \
  || bad "the cut stream ended well: $(cat "$cl_tmp/cut.log")"
[ "$cut" -lt "$full" ] && ok "the answer was cut before its completion ($cut of $full bytes)" || bad "not cut: $cut of $full bytes"
grep -q 'licence: licence lease ended' "$cl_tmp/cut.err" && ok "the stream ends with the lease-ended error, named: $(grep -o 'licence: licence lease ended[^)]*' "$cl_tmp/cut.err" | head -1)" \
  || bad "error: $(tail -3 "$cl_tmp/cut.err")"
sleep 0.5
grep -q '"event":"licence_lease_ended"' "$D/enclave.log" && grep -q '"event":"ohttp_keys_wiped"' "$D/enclave.log" \
  && ok "the enclave stopped, wiped the model and its OHTTP keys" || bad "no lease-end report: $(tail -3 "$D/enclave.log")"
finish
