#!/usr/bin/env bash
# Continuous batching through the real stack (scripts/stack.sh: key service,
# KMS-sealed model, host, enclave under cloister-sim): four different
# questions asked at the same time (two streamed) get exactly the answers
# they get one at a time, and the enclave sized its engine for max_sessions
# sequences within its memory, here with F16 key/value caches. Loopback only, bounded (tiny model, 24 tokens).
. "$(dirname "$0")/lib.sh"
set +u
. "$CLOISTER_SOURCE_DIR/scripts/stack.sh"
set -u
command -v curl >/dev/null || { echo "curl not found: skipped"; exit 77; }
BUILD=$CLOISTER_BUILD_DIR
"$BUILD/src/cli/cloister" mkmodel --arch llama --shape tiny --type q8_0 -o "$cl_tmp/m.gguf" >/dev/null \
  || { bad "mkmodel"; finish; exit 1; }
# with F16 key/value caches (cloister-host --kv-cache f16, attested as kv_cache_bits=16);
# test_engine covers F32 and F16 alike
export STACK_HOST_ARGS="--kv-cache f16"
if stack_up "$BUILD" "$cl_tmp/m.gguf" >"$cl_tmp/stack.log" 2>&1; then ok "stack up"; else cat "$cl_tmp/stack.log"; bad "stack up"; finish; exit 1; fi
trap 'stack_down' EXIT
Q=("Hi" "What should be checked first in a patient with a fever and a cough?" "2+2=" \
   "List three colours, then three animals, then three numbers, one per line.")
ask() { timeout 60 "$CL" ask --host "$host_url" --trust "$D/TRUST.json" -n 24 --temp 0 --seed 5 "$@"; }
for i in 0 1 2 3; do
  ask "${Q[$i]}" >"$cl_tmp/alone$i" 2>"$cl_tmp/alone$i.err" || bad "question $i alone: $(tail -1 "$cl_tmp/alone$i.err")"
done
[ -s "$cl_tmp/alone1" ] && ok "answered one at a time" || bad "empty answer alone"
pids=()
for i in 0 1 2 3; do
  if [ $((i % 2)) = 1 ]; then s=--stream; else s=; fi
  # shellcheck disable=SC2086 # $s is empty or one option
  ask $s "${Q[$i]}" >"$cl_tmp/conc$i" 2>"$cl_tmp/conc$i.err" &
  pids+=($!)
done
fails=0
for i in 0 1 2 3; do wait "${pids[$i]}" || { fails=$((fails + 1)); echo "# question $i: $(tail -1 "$cl_tmp/conc$i.err")"; }; done
[ "$fails" = 0 ] && ok "four concurrent questions all answered" || bad "$fails of 4 concurrent questions failed"
same=0
for i in 0 1 2 3; do cmp -s "$cl_tmp/alone$i" "$cl_tmp/conc$i" && same=$((same + 1)); done
[ "$same" = 4 ] && ok "each concurrent answer equals the same question asked alone" \
  || bad "$same of 4 concurrent answers equal the answers alone"
grep -q '"event":"engine_sized","max_seqs":4,.*"kv_cache_bits":16,' "$D/enclave.log" \
  && ok "engine sized for max_sessions (4) sequences with F16 caches" || bad "no engine_sized line with max_seqs 4, kv_cache_bits 16"
grep -E '"event":"engine_sized".*"kv_budget_bytes":[0-9]+' "$D/enclave.log" | grep -vq 18446744073709551615 \
  && ok "the KV budget is bounded by the enclave's memory" || bad "KV budget unbounded"
n_ok=$(grep -c '"event":"generation".*"error":"OK"' "$D/enclave.log")
[ "$n_ok" = 8 ] && ok "eight generations, none failed" || bad "$n_ok of 8 generations OK"
finish
