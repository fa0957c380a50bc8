#!/usr/bin/env bash
# The proxy's web page in a real browser: Debian's chromium, headless, driven by puppeteer-core
# (interop/browser.mjs) against cloister proxy -> cloister-host -> enclave (cloister-sim), and a
# second proxy whose TRUST.json pins another PCR2. Screenshots: BUILD/proxy-artifacts/*.png.
BUILD=$1
SRC=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$SRC/tests/proxy
. "$SRC/tests/integration/lib.sh"
. "$SRC/scripts/stack.sh"
CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
[ -n "$CHROMIUM" ] || { echo "skipped: chromium is not installed (scripts/install-deps installs it)"; exit 77; }
command -v node >/dev/null && [ -d "$HERE/interop/node_modules/puppeteer-core" ] \
  || { echo "skipped: node or tests/proxy/interop/node_modules missing (run scripts/install-deps)"; exit 77; }
proxy_pids=()
trap 'for p in "${proxy_pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; stack_down; rm -rf "$cl_tmp"' EXIT
T=$cl_tmp
ARTIFACTS=$(cd "$BUILD" && pwd)/proxy-artifacts
rm -rf "$ARTIFACTS"; mkdir -p "$ARTIFACTS"

"$BUILD/src/cli/cloister" mkmodel --arch llama --shape tiny --type q8_0 -o "$T/model.gguf" >/dev/null 2>&1 \
  || { echo "mkmodel failed"; exit 1; }
stack_up "$BUILD" "$T/model.gguf" >"$T/stack.log" 2>&1 || { cat "$T/stack.log"; bad "stack did not come up"; finish; exit 1; }
ok "stack up"
proxy_start() {
  local name=$1; shift
  "$CL" proxy --host "$host_url" --listen 127.0.0.1:0 "$@" >"$T/$name.out" 2>"$T/$name.log" &
  proxy_pids+=($!)
  stack_wait_for "$T/$name.out" '^listening on' 10 || return 1
  purl=$(sed -nE 's/^listening on (http:.*)$/\1/p' "$T/$name.out")
}
python3 - "$D/TRUST.json" "$T/other-pcr.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1])); p = t["pcrs"]["2"]
t["pcrs"]["2"] = ("0" if p[0] != "0" else "1") + p[1:]
json.dump(t, open(sys.argv[2], "w"))
PY
proxy_start good --trust "$D/TRUST.json" || { bad "proxy"; finish; exit 1; }
PROXY_URL=$purl
proxy_start bad --trust "$T/other-pcr.json" || { bad "proxy (other PCR)"; finish; exit 1; }
PROXY_BAD_URL=$purl
Q="A patient has a fever and a cough. What should be checked first?"
WANT_GREEDY=$("$CL" run "$D/model.gguf" --chat -p "$Q" -n 24 --temp 0 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["text"], end="")')
python3 -c '
import struct, sys, zlib
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
raw = b"".join(b"\0" + bytes([(x * y * 4) & 255 for x in range(32)]) for y in range(32))
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 32, 32, 8, 0, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))' "$T/xray.png"
export CHROMIUM ARTIFACTS PROXY_URL PROXY_BAD_URL Q WANT_GREEDY PNG_FILE=$T/xray.png BAD_CHECK="PCR"
export PCR0=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pcrs"]["0"])' "$D/TRUST.json")
export PCR2=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pcrs"]["2"])' "$D/TRUST.json")
export MODEL_SHA256=$(sha256sum "$D/model.gguf" | cut -d' ' -f1)
HOME=$T timeout 120 node "$HERE/interop/browser.mjs" 2>&1; rc=$?
[ "$rc" = 0 ] && ok "browser checks (screenshots in $ARTIFACTS)" || bad "browser checks (exit $rc)"
# The proxies stop cleanly on SIGTERM (under ASan/UBSan: with no report).
for p in "${proxy_pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
proxy_pids=()
if grep -lE "Sanitizer|runtime error" "$T"/*.log >/dev/null 2>&1; then bad "sanitizer report in: $(grep -lE "Sanitizer|runtime error" "$T"/*.log | tr '\n' ' ')"; grep -hE -A5 "Sanitizer|runtime error" "$T"/*.log | head -30; else ok "the proxies stopped without a sanitizer report"; fi
finish
