#!/usr/bin/env bash
# Images through cloister proxy: with the reference Gemma 3 model and its vision projector (sealed,
# streamed by the host, attested and pinned as mmproj_sha256), an OpenAI image_url data: URL part
# sent with the openai npm client is answered exactly as `cloister run --image` on the plain files,
# whole and streamed; /v1/attestation shows the attested projector digest. Skips without
# $CLOISTER_REFERENCE / $CLOISTER_TESTDATA.
BUILD=$1
SRC=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$SRC/tests/proxy
. "$SRC/tests/integration/lib.sh"
. "$SRC/scripts/stack.sh"
model_ref=${CLOISTER_REFERENCE:-}/models/tiny-gemma3-q8_0.gguf
proj_ref=${CLOISTER_REFERENCE:-}/models/mmproj-tiny-gemma3-f32.gguf
xray=${CLOISTER_TESTDATA:-}/images/chest-xray/00000001_000.png
[ -n "${CLOISTER_REFERENCE:-}" ] && [ -f "$model_ref" ] && [ -f "$proj_ref" ] && [ -n "${CLOISTER_TESTDATA:-}" ] && [ -f "$xray" ] \
  || { echo "skipped: needs \$CLOISTER_REFERENCE (tiny Gemma 3 + projector) and \$CLOISTER_TESTDATA (chest X-ray)"; exit 77; }
command -v node >/dev/null && [ -d "$HERE/interop/node_modules/openai" ] \
  || { echo "skipped: node or tests/proxy/interop/node_modules missing (run scripts/install-deps)"; exit 77; }
proxy_pid=
trap '[ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null; stack_down; rm -rf "$cl_tmp"' EXIT
T=$cl_tmp
cp "$model_ref" "$T/model.gguf"
cp "$proj_ref" "$T/mmproj.gguf"
export STACK_MMPROJ=$T/mmproj.gguf
stack_up "$BUILD" "$T/model.gguf" >"$T/stack.log" 2>&1 || { tail -20 "$T/stack.log"; bad "stack did not come up"; finish; exit 1; }
ok "stack up with the vision projector"
"$CL" proxy --host "$host_url" --trust "$D/TRUST.json" --listen 127.0.0.1:0 >"$T/proxy.out" 2>"$T/proxy.log" &
proxy_pid=$!
stack_wait_for "$T/proxy.out" '^listening on' 10 || { bad "proxy did not start"; finish; exit 1; }
purl=$(sed -nE 's/^listening on (http:.*)$/\1/p' "$T/proxy.out")
export Q="Describe this image." IMAGE_FILE=$xray
WANT_IMAGE=$("$CL" run "$D/model.gguf" --mmproj "$D/mmproj.gguf" --image "$xray" --chat -p "$Q" -n 8 --temp 0 --json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["text"], end="")')
export WANT_IMAGE
[ -n "$WANT_IMAGE" ] && ok "cloister run --image answered" || bad "cloister run --image gave nothing"
PROXY_URL=$purl MODE=image node "$HERE/interop/openai.mjs" 2>&1 && ok "openai client with an image part" || bad "image through the proxy"
proj_sha=$(sha256sum "$T/mmproj.gguf" | cut -d' ' -f1)
curl -s "$purl/v1/attestation" | python3 -c '
import json, sys
a = json.load(sys.stdin)
assert a["ok"] and a["attested"]["mmproj_sha256"] == sys.argv[1] == a["trust"]["mmproj_sha256"], a
assert "mmproj_sha256" in a["checks"]' "$proj_sha" && ok "/v1/attestation: the projector digest attested and pinned" \
  || bad "/v1/attestation: projector"
kill "$proxy_pid"; wait "$proxy_pid" 2>/dev/null; proxy_pid=
grep -qE "Sanitizer|runtime error" "$T/proxy.log" && bad "sanitizer report: $(grep -m3 -E 'Sanitizer|runtime error' "$T/proxy.log")" \
  || ok "the proxy stopped without a sanitizer report"
finish
