#!/usr/bin/env bash
# Issue 14: the enclave's memory is sized from the model when the image is
# packed, and an enclave packed too small (by mistake, or by an operator who
# wants it to fail half-way through a patient's request) is refused at boot,
# before the key release and the model stream, with the size it needs.
. "$(dirname "$0")/lib.sh"
SRC=$CLOISTER_SOURCE_DIR
BUILD=$CLOISTER_BUILD_DIR
set +u
. "$SRC/scripts/stack.sh"
set -u
command -v curl >/dev/null || { echo "skipped: curl missing"; exit 77; }
SIMB=$BUILD/tools/cloister-sim/cloister-sim
APPB=$BUILD/tools/cloister-enclave/cloister-enclave.so
model=$cl_tmp/m.gguf
"$BUILD/src/cli/cloister" mkmodel --arch gemma3 --shape tiny --type q8_0 -o "$model" >/dev/null

# --- packing
expect 0 "pack sizes the enclave from the model" "$SIMB" pack --app "$APPB" --name e --memory-for "$model" -o "$cl_tmp/a.img"
expect_err "enclave memory [0-9]+ MiB = model [0-9.]+ MiB \+ projector 0.0 MiB \+ one sequence of 6144 positions [0-9.]+ MiB \+ runtime 768 MiB" \
  "pack prints the figure and its parts"
need=$(sed -nE 's/.*enclave memory ([0-9]+) MiB.*/\1/p' "$cl_tmp/err")
seq_mib=$(sed -nE 's/.*one sequence of 6144 positions ([0-9.]+) MiB.*/\1/p' "$cl_tmp/err")
expect 0 "the sized image measures" "$SIMB" measure "$cl_tmp/a.img"
expect 2 "pack refuses a --memory below what the model needs" \
  "$SIMB" pack --app "$APPB" --name e --memory-for "$model" --memory 64 -o "$cl_tmp/b.img"
expect_err "pack: --memory 64 MiB is too small for .*: the enclave needs at least $need MiB" "the refusal names the size needed"
[ ! -e "$cl_tmp/b.img" ] && ok "no image written when refused" || bad "no image written when refused"
expect 0 "a larger --ctx (KV budget) needs more memory" \
  "$SIMB" pack --app "$APPB" --name e --memory-for "$model" --ctx 65536 -o "$cl_tmp/c.img"
need_big=$(sed -nE 's/.*enclave memory ([0-9]+) MiB.*/\1/p' "$cl_tmp/err")
[ "${need_big:-0}" -gt "$need" ] && ok "ctx 65536 needs $need_big MiB > $need MiB" || bad "ctx raises the need ($need_big vs $need)"
expect 0 "a projector adds its size" \
  "$SIMB" pack --app "$APPB" --name e --memory-for "$model" --projector "$model" -o "$cl_tmp/d.img"
expect_err "projector [1-9][0-9.]* MiB" "the projector is counted"
expect 1 "pack refuses to size from a file that is not a GGUF model" \
  "$SIMB" pack --app "$APPB" --name e --memory-for /etc/hostname -o "$cl_tmp/e.img"
expect_err "a plain GGUF model is needed" "the error says what it needs"
expect 2 "--projector alone is a usage error" \
  "$SIMB" pack --app "$APPB" --name e --projector "$model" -o "$cl_tmp/e.img"
expect 2 "--ctx 0 is a usage error" "$SIMB" pack --app "$APPB" --name e --memory-for "$model" --ctx 0 -o "$cl_tmp/e.img"

# --- boot: an image packed too small for the model itself
export TMPDIR=$cl_tmp/tmp && mkdir -p "$TMPDIR"
if grep -q '^CL_SAN:BOOL=ON' "$BUILD/CMakeCache.txt" 2>/dev/null; then
  # cloister-sim applies no memory limit under AddressSanitizer (its shadow memory needs the address space)
  ok "skipped the boot cases: sanitizer build, no memory limit in the sandbox"
  finish
  exit $?
fi
mbytes=$(stat -c %s "$model")
floor=$(( (mbytes + (768 << 20) + (1 << 20) - 1) >> 20 ))   # the model with the runtime
small=$(( floor - 40 ))
if STACK_ENCLAVE_MEMORY=$small stack_up "$BUILD" "$model" 2>"$cl_tmp/stack.err"; then
  bad "an enclave of $small MiB must not boot a model needing $floor MiB"
else
  grep -qE "enclave memory $small MiB is too small for a [0-9]+ MiB model: the model with the runtime needs at least $floor MiB" "$D/enclave.log" &&
    ok "the enclave refuses at boot, naming the $floor MiB it needs" || bad "refusal message (log: $(tail -c 400 "$D/enclave.log"))"
  grep -q '"model_decrypted"' "$D/enclave.log" && bad "refused before decrypting the model" || ok "refused before the model was decrypted"
fi
stack_down

# --- boot: enough for the model, not for the longest request the enclave accepts
full=$(( need - 16 ))   # pack's figure without its slack
tight=$(( full - 1 ))
if [ "$tight" -gt "$floor" ]; then
  if STACK_ENCLAVE_MEMORY=$tight stack_up "$BUILD" "$model" 2>"$cl_tmp/stack.err"; then
    bad "an enclave of $tight MiB must not serve requests needing $full MiB (sequence $seq_mib MiB)"
  else
    grep -qE "enclave memory $tight MiB is too small for a [0-9]+ MiB model: serving the longest request needs at least [0-9]+ MiB" "$D/enclave.log" &&
      ok "the enclave refuses before serving: the longest request would not fit" || bad "refusal message (log: $(tail -c 400 "$D/enclave.log"))"
  fi
  stack_down
else
  ok "skipped the KV-budget boot case: the sequence ($seq_mib MiB) is within rounding"
fi

# --- the stack's default: sized from the model, boots and answers
if stack_up "$BUILD" "$model" 2>"$cl_tmp/stack.err"; then
  grep -q "enclave memory $need MiB" "$cl_tmp/stack.err" && ok "stack.sh packs with the model's figure ($need MiB)" || bad "stack figure ($(head -c 300 "$cl_tmp/stack.err"))"
  expect 0 "the sized enclave answers" "$CL" ask --host "$host_url" --trust "$D/TRUST.json" -n 4 --temp 0 "hello"
else
  bad "stack with the sized enclave came up ($(tail -c 300 "$cl_tmp/stack.err"))"
fi
stack_down
finish
