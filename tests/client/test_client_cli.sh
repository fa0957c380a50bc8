#!/usr/bin/env bash
# cloister measure / ask / chat end to end against the fake gateway of
# test_client (serve mode): exit codes, help, TRUST.json from every source,
# answers streamed and not, JSON output, refusals before anything is sent.
. "$(dirname "$0")/../integration/lib.sh"
CL=$1 FAKE=$2 SIM=$3 ENCLAVE_SO=$4
T=$cl_tmp
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT

# start_fake DIR [MODE]: runs a fake gateway, waits for DIR/url.
start_fake() {
  mkdir -p "$1"
  CL_FAKE_SIM_DIR=$T/sim CL_FAKE_MODE=${2:-0} CL_FAKE_MODEL=$MODEL "$FAKE" serve "$1" >"$1/log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do [ -s "$1/url" ] && return 0; sleep 0.05; done
  echo "fake gateway did not start"; cat "$1/log"; exit 1
}

# The sealed model: a minimal GGUF, sealed under a local key.
printf 'GGUF\003\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000' > "$T/m.gguf"
MODEL=$(sha256sum "$T/m.gguf" | cut -d' ' -f1)
"$CL" keygen -o "$T/k" >/dev/null 2>&1 && "$CL" seal "$T/m.gguf" -o "$T/m.sealed" --key-file "$T/k" >/dev/null 2>&1 \
  && ok "sealed a model" || bad "could not seal the test model"

start_fake "$T/g"
URL=$(cat "$T/g/url")

for cmd in measure ask chat; do
  expect 0 "$cmd --help" "$CL" "$cmd" --help
done
expect 2 "measure without a PCR source" "$CL" measure --root "$T/g/root.pem" --model "$T/m.sealed" -o "$T/t.json"
expect 2 "measure without -o" "$CL" measure --nitro-pcrs "$T/g/nitro.json" --root "$T/g/root.pem" --model "$T/m.sealed"
expect 2 "measure with a bad --pcr" "$CL" measure --pcr 0=abc --root "$T/g/root.pem" --model "$T/m.sealed" -o "$T/t.json"
expect 2 "measure needs PCR0-2" "$CL" measure --pcr 0=$(printf '%096d' 0) --root "$T/g/root.pem" --model "$T/m.sealed" -o "$T/t.json"
expect 2 "ask without --trust" "$CL" ask --host "$URL" "hi"
expect 2 "ask with an unknown option" "$CL" ask --host "$URL" --trust x --frob "hi"
expect 2 "ask with a bad --temp" "$CL" ask --host "$URL" --trust x --temp abc "hi"

# TRUST.json from nitro-cli output and the sealed header.
expect 0 "measure --nitro-pcrs" "$CL" measure --nitro-pcrs "$T/g/nitro.json" --root "$T/g/root.pem" \
  --model "$T/m.sealed" -o "$T/trust.json"
grep -q "\"model_sha256\": \"$MODEL\"" "$T/trust.json" && ok "model digest from the sealed header" || bad "model digest"
expect 1 "measure refuses to overwrite" "$CL" measure --nitro-pcrs "$T/g/nitro.json" --root "$T/g/root.pem" \
  --model "$T/m.sealed" -o "$T/trust.json"
echo '{"Measurements": {"HashAlgorithm": "Sha256", "PCR0": "00"}}' > "$T/bad-nitro.json"
expect 1 "measure rejects a non-SHA384 nitro file" "$CL" measure --nitro-pcrs "$T/bad-nitro.json" \
  --root "$T/g/root.pem" --model "$T/m.sealed" -o "$T/t2.json"
expect_err "Sha384" "the error names the hash algorithm"
# The same PCRs given with --pcr produce the same file.
P=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1]))["Measurements"]; print(" ".join("--pcr %d=%s" % (i, m["PCR%d" % i]) for i in range(3)))' "$T/g/nitro.json")
expect 0 "measure --pcr" "$CL" measure $P --root "$T/g/root.pem" --model-sha256 "$MODEL" -o "$T/trust2.json"
cmp -s "$T/trust.json" "$T/trust2.json" && ok "--pcr gives the same TRUST.json" || bad "--pcr TRUST.json differs"

# A cloister-sim image: PCRs as cloister-sim measures them.
if "$SIM" pack --app "$ENCLAVE_SO" --name t -o "$T/img" >/dev/null 2>&1; then
  expect 0 "measure --sim-image" "$CL" measure --sim-image "$T/img" --root "$T/g/root.pem" --model "$T/m.sealed" -o "$T/trust-sim.json"
  "$SIM" measure "$T/img" --json > "$T/sim-pcrs.json"
  python3 - "$T/sim-pcrs.json" "$T/trust-sim.json" <<'PY' && ok "sim image PCRs match cloister-sim measure" || bad "sim image PCRs differ"
import json, sys
s = json.load(open(sys.argv[1])); t = json.load(open(sys.argv[2]))
flat = json.dumps(s).lower()
assert all(t["pcrs"][str(i)] in flat for i in range(3)), (s, t["pcrs"])
PY
else
  bad "cloister-sim pack failed"
fi
expect 1 "measure --sim-image rejects a non-image" "$CL" measure --sim-image "$T/m.gguf" --root "$T/g/root.pem" --model "$T/m.sealed" -o "$T/t3.json"

# A debug-mode enclave: zero PCRs pinned, accepted only through --debug.
start_fake "$T/dbg" 6
expect 1 "a debug enclave is refused by a normal TRUST.json" "$CL" ask --host "$(cat "$T/dbg/url")" --trust "$T/trust.json" "q"
expect_err "debug-mode enclave" "the refusal names debug mode"
expect 2 "--debug excludes an image" "$CL" measure --debug --sim-image "$T/img" --root "$T/g/root.pem" --model "$T/m.sealed" -o "$T/td.json"
expect 0 "measure --debug" "$CL" measure --debug --root "$T/g/root.pem" --model "$T/m.sealed" -o "$T/trust-debug.json"
grep -q '"allow_debug": true' "$T/trust-debug.json" && ok "--debug sets allow_debug" || bad "allow_debug missing"
expect 0 "ask a debug enclave with a --debug TRUST.json" "$CL" ask --host "$(cat "$T/dbg/url")" --trust "$T/trust-debug.json" "q"
expect_err "DEBUG MODE" "the debug mode is shown"

# Asking.
expect 0 "ask" "$CL" ask --host "$URL" --trust "$T/trust.json" -n 16 --temp 0 --seed 1 --system "Be brief." "What helps with a fever?"
grep -qx "Rest, fluids and paracetamol." "$T/out" && ok "ask prints the answer" || bad "ask answer: $(cat "$T/out")"
expect_err "verified enclave" "ask prints the verified measurements to stderr"
expect_err "model   $MODEL" "ask shows the attested model digest"
expect 0 "ask --stream" "$CL" ask --host "$URL" --trust "$T/trust.json" --stream "What helps with a fever?"
grep -qx "Rest, fluids and paracetamol." "$T/out" && ok "streamed answer" || bad "streamed answer: $(cat "$T/out")"
echo "What helps with a fever?" | { expect 0 "ask reads the question from stdin" "$CL" ask --host "$URL" --trust "$T/trust.json" -; }
grep -qx "Rest, fluids and paracetamol." "$T/out" && ok "stdin question answered" || bad "stdin answer"
expect 0 "ask --json" "$CL" ask --host "$URL" --trust "$T/trust.json" --json "What helps with a fever?"
python3 - "$T/out" "$MODEL" <<'PY' && ok "--json carries answer, usage and attestation" || bad "--json output: $(cat "$T/out")"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["answer"] == "Rest, fluids and paracetamol.", j
assert j["usage"]["total_tokens"] == 17 and j["finish_reason"] == "stop"
a = j["attestation"]
assert a["model_sha256"] == sys.argv[2] and len(a["pcrs"]["0"]) == 96 and a["debug"] is False
PY

# chat: two turns, then /quit.
printf 'Hello\nAnd for a cough?\n/quit\nignored\n' | { expect 0 "chat" "$CL" chat --host "$URL" --trust "$T/trust.json"; }
[ "$(grep -c 'Rest, fluids and paracetamol.' "$T/out")" = 2 ] && ok "chat answered two turns" || bad "chat output: $(cat "$T/out")"

# Refusals: the CLI fails and names the check.
start_fake "$T/pcr" 2
expect 1 "ask refuses a wrong PCR" "$CL" ask --host "$(cat "$T/pcr/url")" --trust "$T/trust.json" "q"
expect_err "PCR value differs" "the error names the PCR check"
expect_err "nothing was sent" "the error says nothing was sent"
start_fake "$T/model" 3
expect 1 "ask refuses another model" "$CL" ask --host "$(cat "$T/model/url")" --trust "$T/trust.json" "q"
expect_err "different model" "the error names the model check"
"$SIM" init "$T/other" >/dev/null 2>&1 && "$SIM" root "$T/other" > "$T/other.pem" 2>/dev/null
expect 0 "measure with another root" "$CL" measure --nitro-pcrs "$T/g/nitro.json" --root "$T/other.pem" \
  --model "$T/m.sealed" -o "$T/trust-other.json"
expect 1 "ask refuses an enclave under another root" "$CL" ask --host "$URL" --trust "$T/trust-other.json" "q"
expect_err "not the pinned root" "the error names the root check"
start_fake "$T/e429" 13
expect 1 "enclave error" "$CL" ask --host "$(cat "$T/e429/url")" --trust "$T/trust.json" "q"
expect_err "enclave answered 429 \(rate_limit\): too many sessions" "the enclave's error is shown"
expect 1 "no host listening" "$CL" ask --host http://127.0.0.1:1 --trust "$T/trust.json" "q"
expect_err "connection to the host failed" "connection error is named"
echo '{}' > "$T/empty-trust.json"
expect 1 "bad TRUST.json" "$CL" ask --host "$URL" --trust "$T/empty-trust.json" "q"
expect_err "root_pem: missing" "the TRUST.json error names the key"
finish
