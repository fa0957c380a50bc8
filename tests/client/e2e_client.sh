#!/usr/bin/env bash
# cloister ask / chat against the real deployment (scripts/stack.sh:
# cloister-kms, KMS-sealed model, cloister-host, cloister-enclave under
# cloister-sim): streamed and non-streamed answers agree, --json, a chat that
# survives an enclave restart (new key -> re-attestation), and refusals.
BUILD=$1
SRC=$(cd "$(dirname "$0")/../.." && pwd)
. "$SRC/tests/integration/lib.sh"
. "$SRC/scripts/stack.sh"
command -v curl >/dev/null || { echo "curl not found: skipped"; exit 77; }
trap 'stack_down; rm -rf "$cl_tmp"' EXIT
T=$cl_tmp

"$BUILD/src/cli/cloister" mkmodel --arch llama --shape tiny --type q8_0 -o "$T/model.gguf" >/dev/null 2>&1 \
  || { echo "mkmodel failed"; exit 1; }
stack_up "$BUILD" "$T/model.gguf" >"$T/stack.log" 2>&1 || { cat "$T/stack.log"; bad "stack did not come up"; finish; exit 1; }
ok "stack up: kms, host, enclave under cloister-sim"
Q="A patient has a fever and a cough. What should be checked first?"

expect 0 "ask" "$CL" ask --host "$host_url" --trust "$D/TRUST.json" -n 12 --temp 0 --seed 3 "$Q"
cp "$T/out" "$T/plain.txt"
[ -s "$T/plain.txt" ] && ok "an answer came back" || bad "empty answer"
expect_err "verified enclave" "measurements printed"
expect 0 "ask --stream" "$CL" ask --host "$host_url" --trust "$D/TRUST.json" -n 12 --temp 0 --seed 3 --stream "$Q"
cmp -s "$T/plain.txt" "$T/out" && ok "streamed answer equals the non-streamed one" \
  || bad "streamed differs: '$(cat "$T/out")' vs '$(cat "$T/plain.txt")'"
expect 0 "ask --json" "$CL" ask --host "$host_url" --trust "$D/TRUST.json" -n 12 --temp 0 --seed 3 --json "$Q"
python3 - "$T/out" "$T/plain.txt" <<'PY' && ok "--json answer and usage" || bad "--json: $(head -c 300 "$T/out")"
import json, sys
j = json.load(open(sys.argv[1])); plain = open(sys.argv[2]).read()
assert j["answer"] + "\n" == plain, (j["answer"], plain)
assert j["usage"]["completion_tokens"] >= 1 and j["attestation"]["debug"] is False
PY

# A chat that spans an enclave restart: the second turn goes to a new key.
mkfifo "$T/in"
"$CL" chat --host "$host_url" --trust "$D/TRUST.json" -n 6 --temp 0 <"$T/in" >"$T/chat.out" 2>"$T/chat.err" &
chat_pid=$!
exec 7>"$T/in"
echo "Hello there" >&7
for _ in $(seq 100); do [ "$(wc -l <"$T/chat.out")" -ge 1 ] && break; sleep 0.1; done
stack_enclave_stop
stack_enclave_start >>"$T/stack.log" 2>&1 && ok "enclave restarted" || bad "enclave restart"
echo "And then?" >&7
echo "/quit" >&7
exec 7>&-
wait "$chat_pid"; rc=$?
[ "$rc" = 0 ] && ok "chat exits 0" || { bad "chat exit $rc"; sed 's/^/    /' "$T/chat.err" | tail -5; }
[ "$(grep -c . "$T/chat.out")" = 2 ] && ok "chat answered both turns" || bad "chat output: $(cat "$T/chat.out")"
grep -q "re-attested" "$T/chat.err" && ok "chat re-attested after the key changed" || bad "no re-attestation: $(tail -3 "$T/chat.err")"
[ "$(grep -c '^verified enclave' "$T/chat.err")" = 2 ] && ok "both attestations shown" || bad "attestations shown"

# Refusals against the real enclave.
sed -E 's/("model_sha256": ")[0-9a-f]/\10/; s/("model_sha256": ")0([0-9a-f])/\11\2/' "$D/TRUST.json" >"$T/other-model.json"
cmp -s "$D/TRUST.json" "$T/other-model.json" && bad "TRUST.json not altered" || true
expect 1 "another model digest is refused" "$CL" ask --host "$host_url" --trust "$T/other-model.json" "$Q"
expect_err "different model" "the refusal names the model"
python3 - "$D/TRUST.json" "$T/other-pcr.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1])); p = t["pcrs"]["2"]
t["pcrs"]["2"] = ("0" if p[0] != "0" else "1") + p[1:]
json.dump(t, open(sys.argv[2], "w"))
PY
expect 1 "another enclave image (PCR2) is refused" "$CL" ask --host "$host_url" --trust "$T/other-pcr.json" "$Q"
expect_err "PCR value differs" "the refusal names the PCR"
finish
