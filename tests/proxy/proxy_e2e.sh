#!/usr/bin/env bash
# cloister proxy against the real deployment (scripts/stack.sh: cloister-kms, a KMS-sealed model,
# cloister-host, cloister-enclave under cloister-sim), driven by the official openai npm client
# (interop/openai.mjs): answers equal `cloister run`, streaming, errors; refusals when the
# attestation does not match TRUST.json (nothing reaches the host's OHTTP endpoint); bearer
# token, loopback-only listening, Host and Origin checks.
BUILD=$1
SRC=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$SRC/tests/proxy
. "$SRC/tests/integration/lib.sh"
. "$SRC/scripts/stack.sh"
command -v curl >/dev/null || { echo "curl not found: skipped"; exit 77; }
command -v node >/dev/null && [ -d "$HERE/interop/node_modules/openai" ] \
  || { echo "skipped: node or tests/proxy/interop/node_modules missing (run scripts/install-deps)"; exit 77; }
proxy_pids=()
trap 'for p in "${proxy_pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; stack_down; rm -rf "$cl_tmp"' EXIT
T=$cl_tmp

"$BUILD/src/cli/cloister" mkmodel --arch llama --shape tiny --type q8_0 -o "$T/model.gguf" >/dev/null 2>&1 \
  || { echo "mkmodel failed"; exit 1; }
stack_up "$BUILD" "$T/model.gguf" >"$T/stack.log" 2>&1 || { cat "$T/stack.log"; bad "stack did not come up"; finish; exit 1; }
ok "stack up: kms, host, enclave under cloister-sim"

# proxy_start NAME ARGS...: starts cloister proxy on a free loopback port; sets purl.
proxy_start() {
  local name=$1; shift
  "$CL" proxy --host "$host_url" --listen 127.0.0.1:0 "$@" >"$T/$name.out" 2>"$T/$name.log" &
  proxy_pids+=($!)
  stack_wait_for "$T/$name.out" '^listening on' 10 || return 1
  purl=$(sed -nE 's/^listening on (http:.*)$/\1/p' "$T/$name.out")
}
ohttp_count() { curl -s "$host_url/metrics" | grep -E '^cloister_host_requests_total\{route="ohttp"' | awk '{s+=$2} END {print s+0}'; }

Q="A patient has a fever and a cough. What should be checked first?"
run_answer() { "$CL" run "$D/model.gguf" --chat -p "$Q" -n 24 "$@" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["text"], end="")'; }
export Q WANT_GREEDY WANT_SEEDED MODEL_SHA256 PNG_B64 MAX_REQUEST=262144
WANT_GREEDY=$(run_answer --temp 0)
WANT_SEEDED=$(run_answer --temp 0.8 --seed 7)
[ -n "$WANT_GREEDY" ] && ok "cloister run on the plain model answered" || bad "cloister run gave nothing"
MODEL_SHA256=$(sha256sum "$D/model.gguf" | cut -d' ' -f1)
PNG_B64=$(python3 -c '
import base64, struct, zlib
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
raw = b"".join(b"\0" + bytes([(x * 16) & 255 for x in range(8)]) for _ in range(8))
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
print(base64.b64encode(png).decode())')

# 1. the openai client through the proxy
proxy_start main --trust "$D/TRUST.json" --max-request "$MAX_REQUEST" || { bad "proxy did not start"; finish; exit 1; }
ok "proxy up at $purl"
PROXY_URL=$purl MODE=main node "$HERE/interop/openai.mjs" >"$T/node.out" 2>&1; rc=$?
cat "$T/node.out"
[ "$rc" = 0 ] && ok "openai client: all checks" || bad "openai client (exit $rc)"
curl -s "$purl/v1/attestation" >"$T/att.json"
python3 - "$T/att.json" "$D/TRUST.json" <<'PY' && ok "/v1/attestation: ok, pinned and attested values, checks" || bad "/v1/attestation: $(head -c 400 "$T/att.json")"
import json, sys
a = json.load(open(sys.argv[1])); t = json.load(open(sys.argv[2]))
assert a["ok"] is True and a["failure"] is None and a["checked"] is True, a
assert a["attested"]["pcrs"]["0"] == t["pcrs"]["0"] and a["trust"]["pcrs"]["2"] == t["pcrs"]["2"]
assert a["attested"]["model_sha256"] == t["model_sha256"] == a["trust"]["model_sha256"]
for c in ("root", "signature", "nonce", "freshness", "pcr0", "pcr1", "pcr2", "model_sha256", "kms"):
    assert c in a["checks"], c
assert a["verifications"] >= 1
PY
# The proxy logs ids, sizes and timings: never the question or the answer.
grep -qF "fever" "$T/main.log" && bad "the question is in the proxy's log" || ok "the question is not in the proxy's log"
grep -qF "$WANT_GREEDY" "$T/main.log" && bad "the answer is in the proxy's log" || ok "the answer is not in the proxy's log"
grep -q '"event":"proxy_chat"' "$T/main.log" && ok "requests logged as JSON lines" || bad "no proxy_chat log lines"

# The enclave restarts with a new key: the proxy's clients attest again, and the request goes through.
n_before=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["verifications"])' "$T/att.json")
stack_enclave_stop
stack_enclave_start >>"$T/stack.log" 2>&1 && ok "enclave restarted (new OHTTP key)" || bad "enclave restart"
code=$(curl -s -o "$T/r" -w '%{http_code}' -H 'Content-Type: application/json' \
  -d '{"model":"cloister","messages":[{"role":"user","content":"hi"}],"max_tokens":2}' "$purl/v1/chat/completions")
n_after=$(curl -s "$purl/v1/attestation" | python3 -c 'import json,sys; print(json.load(sys.stdin)["verifications"])')
[ "$code" = 200 ] && [ "$n_after" -gt "$n_before" ] && ok "after the key changed: re-attested ($n_before -> $n_after verifications) and answered" \
  || bad "after restart: $code $(head -c 200 "$T/r"), verifications $n_before -> $n_after"

# Requests from elsewhere: another Host (DNS rebinding) or another page's Origin.
code=$(curl -s -o "$T/r" -w '%{http_code}' -H 'Host: attacker.example:80' "$purl/v1/models")
[ "$code" = 403 ] && grep -q host_refused "$T/r" && ok "a foreign Host header is refused (403)" || bad "Host check: $code $(cat "$T/r")"
code=$(curl -s -o "$T/r" -w '%{http_code}' -H 'Origin: http://attacker.example' -H 'Content-Type: application/json' \
  -d '{"model":"cloister","messages":[{"role":"user","content":"hi"}]}' "$purl/v1/chat/completions")
[ "$code" = 403 ] && grep -q origin_refused "$T/r" && ok "a cross-origin POST is refused (403)" || bad "Origin check: $code $(cat "$T/r")"
code=$(curl -s -o "$T/r" -w '%{http_code}' -H 'Content-Type: application/json' -d '{"model":"cloister",' "$purl/v1/chat/completions")
[ "$code" = 400 ] && grep -q invalid_json "$T/r" && ok "malformed JSON: 400" || bad "malformed JSON: $code"
code=$(curl -s -o "$T/r" -w '%{http_code}' "$purl/v1/nope")
[ "$code" = 404 ] && grep -q '"error":{' "$T/r" && ok "unknown URL: 404 in OpenAI's shape" || bad "unknown URL: $code"

# 2. refusals: TRUST.json that does not match (another PCR2, another model digest)
python3 - "$D/TRUST.json" "$T/other-pcr.json" "$T/other-model.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1])); p = t["pcrs"]["2"]
t["pcrs"]["2"] = ("0" if p[0] != "0" else "1") + p[1:]
json.dump(t, open(sys.argv[2], "w"))
t = json.load(open(sys.argv[1])); m = t["model_sha256"]
t["model_sha256"] = ("0" if m[0] != "0" else "1") + m[1:]
json.dump(t, open(sys.argv[3], "w"))
PY
for case in "other-pcr:ATTEST_PCR|PCR" "other-model:NET_CLIENT_MODEL|model"; do
  name=${case%%:*} check=${case#*:}
  before=$(ohttp_count)
  proxy_start "$name" --trust "$T/$name.json" || { bad "$name proxy did not start"; continue; }
  PROXY_URL=$purl MODE=refused EXPECT_CHECK="$check" node "$HERE/interop/openai.mjs" 2>&1; rc=$?
  [ "$rc" = 0 ] && ok "$name: the openai client gets the refusal" || bad "$name: refusal checks (exit $rc)"
  curl -s "$purl/v1/attestation" >"$T/att-$name.json"
  python3 -c 'import json,sys,re; a=json.load(open(sys.argv[1])); assert a["ok"] is False and a["attested"] is None and re.search(sys.argv[2], a["failure"]["check"]+" "+a["failure"]["message"]), a' \
    "$T/att-$name.json" "$check" && ok "$name: /v1/attestation is red and names the check" || bad "$name: $(head -c 300 "$T/att-$name.json")"
  after=$(ohttp_count)
  [ "$before" = "$after" ] && ok "$name: nothing reached the host's OHTTP endpoint ($before -> $after)" \
    || bad "$name: OHTTP requests went out ($before -> $after)"
done

# No host at all: 503, and the panel's record says why.
proxy_start nohost --trust "$D/TRUST.json" --host http://127.0.0.1:1 --timeout 5 || bad "proxy (no host) did not start"
code=$(curl -s -o "$T/r" -w '%{http_code}' -H 'Content-Type: application/json' \
  -d '{"model":"cloister","messages":[{"role":"user","content":"hi"}]}' "$purl/v1/chat/completions")
[ "$code" = 503 ] && grep -q '"code":"net_client_http"' "$T/r" && ok "host unreachable: 503 net_client_http" || bad "no host: $code $(cat "$T/r")"
curl -s "$purl/v1/attestation" | grep -q '"ok":false.*"check":"NET_CLIENT_HTTP"' && ok "host unreachable: /v1/attestation not ok, says why" \
  || bad "no host: attestation record"

# 3. bearer token (file or environment, never argv) and loopback-only listening
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$T/token"
proxy_start token --trust "$D/TRUST.json" --token-file "$T/token" || bad "proxy with a token did not start"
PROXY_URL=$purl MODE=token TOKEN=$(cat "$T/token") node "$HERE/interop/openai.mjs" 2>&1 && ok "token checks" || bad "token checks"
CLOISTER_PROXY_TOKEN=$(cat "$T/token") proxy_start tokenenv --trust "$D/TRUST.json" || bad "proxy with an env token did not start"
code=$(curl -s -o /dev/null -w '%{http_code}' "$purl/v1/models")
code2=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(cat "$T/token")" "$purl/v1/models")
[ "$code" = 401 ] && [ "$code2" = 200 ] && ok "CLOISTER_PROXY_TOKEN: 401 without, 200 with" || bad "env token: $code $code2"
expect 2 "a non-loopback --listen without --allow-remote is refused" \
  "$CL" proxy --host "$host_url" --trust "$D/TRUST.json" --listen 0.0.0.0:0
expect_err "not a loopback address.*--allow-remote" "the refusal says why"
expect 2 "--allow-remote without a token is refused" \
  env -u CLOISTER_PROXY_TOKEN "$CL" proxy --host "$host_url" --trust "$D/TRUST.json" --listen 0.0.0.0:0 --allow-remote
expect_err "needs a bearer token" "the refusal asks for a token"
printf 'short\n' >"$T/short"
expect 1 "a short token file is refused" "$CL" proxy --host "$host_url" --trust "$D/TRUST.json" --token-file "$T/short"
expect_err "16-4096 bytes" "the refusal names the length"
expect 0 "--help" "$CL" proxy --help
grep -q "from openai import OpenAI" "$T/out" && grep -q 'import OpenAI from "openai"' "$T/out" \
  && ok "--help shows the Python and JavaScript clients" || bad "--help examples"
# The proxies stop cleanly on SIGTERM (under ASan/UBSan: with no report).
for p in "${proxy_pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
proxy_pids=()
if grep -lE "Sanitizer|runtime error" "$T"/*.log >/dev/null 2>&1; then bad "sanitizer report in: $(grep -lE "Sanitizer|runtime error" "$T"/*.log | tr '\n' ' ')"; grep -hE -A5 "Sanitizer|runtime error" "$T"/*.log | head -30; else ok "the proxies stopped without a sanitizer report"; fi
finish
