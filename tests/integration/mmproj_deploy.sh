#!/usr/bin/env bash
# Issue 10: the vision projector is model material. On the real stack
# (cloister-kms, cloister-host, cloister-enclave under cloister-sim):
#  - the owner seals it under the model's key; the host streams it; the
#    enclave digests what it decrypts and attests mmproj_sha256, and
#    `cloister measure --mmproj` pins it: a pinned client is served;
#  - TRUST.json pinning another projector refuses the enclave (naming
#    mmproj_sha256) before a byte of the question leaves;
#  - the operator withholds the projector (host without --mmproj): the
#    enclave boots text-only, attests no projector, and the pinned client
#    refuses it; whether a projector is streamed is in config_sha256;
#  - the operator hands in a projector sealed under another key of the owner's
#    (its policy would release it): the enclave refuses to boot, naming the key;
#  - the operator swaps the model and projector files: both are sealed
#    under the same key, but the digests follow the content, so the pinned
#    client refuses (mmproj_sha256 / model_sha256 differ).
# With the reference files (real projector): images through the secure path
# (`cloister ask --image`) answer exactly as `cloister run --image` on the
# plain files; a pattern planted in an image's pixels (stored uncompressed in
# the PNG) appears in no host capture, log or metric; malformed, oversized
# and excess images get clear 4xx errors; a text-only enclave refuses images.
. "$(dirname "$0")/lib.sh"
SRC=$CLOISTER_SOURCE_DIR
BUILD=$CLOISTER_BUILD_DIR
set +u
. "$SRC/scripts/stack.sh"
set -u
command -v curl >/dev/null || { echo "skipped: curl missing"; exit 77; }

model=$cl_tmp/model.gguf proj=$cl_tmp/mmproj.gguf
if [ -n "${CLOISTER_REFERENCE:-}" ] && [ -f "$CLOISTER_REFERENCE/models/mmproj-tiny-gemma3-f32.gguf" ]; then
  cp "$CLOISTER_REFERENCE/models/tiny-gemma3-q8_0.gguf" "$model"
  cp "$CLOISTER_REFERENCE/models/mmproj-tiny-gemma3-f32.gguf" "$proj"
else
  echo "note: CLOISTER_REFERENCE unset; using a generated model and a stand-in projector file"
  "$BUILD/src/cli/cloister" mkmodel --arch gemma3 --shape tiny --type q8_0 -o "$model" >/dev/null
  head -c 200000 /dev/urandom > "$proj"
fi
proj_sha=$(sha256sum "$proj" | cut -d' ' -f1)
export STACK_MMPROJ=$proj STACK_CAPTURE=1
export TMPDIR=$cl_tmp/tmp && mkdir -p "$TMPDIR"
if ! stack_up "$BUILD" "$model"; then bad "stack came up"; stack_down; finish; exit 1; fi
trap 'stack_down' EXIT
ok "key service, host (--mmproj) and enclave up"
ask() { "$CL" ask --host "$host_url" --trust "$1" -n 2 --temp 0 "The patient presents with"; }
env_owner() { AWS_SHARED_CREDENTIALS_FILE=$OWNER_DIR/owner.credentials AWS_REGION=us-east-1 "$@"; }

grep -q "\"mmproj_sha256\": \"$proj_sha\"" "$D/TRUST.json" && ok "cloister measure --mmproj pinned the projector's digest" \
  || bad "TRUST.json: $(cat "$D/TRUST.json")"
grep -q '"file":"projector"' "$D/enclave.log" && ok "the enclave decrypted the projector (logged as such, no bytes)" \
  || bad "no projector in the enclave log: $(tail -3 "$D/enclave.log")"
expect 0 "a client pinning the projector is served" ask "$D/TRUST.json"

if [ -n "${CLOISTER_REFERENCE:-}" ] && [ -n "${CLOISTER_TESTDATA:-}" ]; then
  xray=$CLOISTER_TESTDATA/images/chest-xray/00000001_000.png
  q="Describe this image."
  "$CL" ask --host "$host_url" --trust "$D/TRUST.json" -n 8 --temp 0 --json --image "$xray" "$q" \
    > "$cl_tmp/img-ask.json" 2> "$cl_tmp/img-ask.err" && ok "cloister ask --image answered through the enclave" \
    || bad "ask --image: $(tail -2 "$cl_tmp/img-ask.err")"
  "$CL" run "$model" --mmproj "$proj" --image "$xray" --chat -p "$q" -n 8 --temp 0 --json > "$cl_tmp/img-run.json" \
    2> "$cl_tmp/img-run.err" || bad "run --image: $(tail -2 "$cl_tmp/img-run.err")"
  a=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["answer"])' "$cl_tmp/img-ask.json" 2>/dev/null)
  r=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["text"])' "$cl_tmp/img-run.json" 2>/dev/null)
  [ -n "$r" ] && [ "$a" = "$r" ] && ok "the enclave's answer with the image equals cloister run --image on the plain files" \
    || bad "answers differ: enclave '$a' vs run '$r'"
  # cloister chat: /image attaches the X-ray to the next message.
  printf '/image %s\n%s\n/quit\n' "$xray" "$q" | "$CL" chat --host "$host_url" --trust "$D/TRUST.json" -n 8 --temp 0 \
    > "$cl_tmp/img-chat.out" 2> "$cl_tmp/img-chat.err" && ok "cloister chat with /image answered" \
    || bad "chat /image: $(tail -2 "$cl_tmp/img-chat.err")"
  [ "$(head -1 "$cl_tmp/img-chat.out")" = "$r" ] && ok "... the same answer as cloister run --image" \
    || bad "chat answer '$(head -1 "$cl_tmp/img-chat.out")' vs run '$r'"
  printf '/image %s\n/quit\n' "$cl_tmp/nonexistent.png" | "$CL" chat --host "$host_url" --trust "$D/TRUST.json" \
    > /dev/null 2> "$cl_tmp/img-chat2.err"
  grep -q "image" "$cl_tmp/img-chat2.err" && ok "chat: a missing image file is reported and the chat goes on" \
    || bad "chat missing image: $(tail -1 "$cl_tmp/img-chat2.err")"
  # A PNG whose pixels spell a marker, stored without compression so the
  # bytes are literally in the file: the host must never see them.
  marker="CLOISTER-PIXEL-PHI-$RANDOM$RANDOM"
  python3 - "$cl_tmp/planted.png" "$marker" <<'PY'
import struct, sys, zlib
path, marker = sys.argv[1], sys.argv[2].encode()
w, h = 64, 64
rows = b''.join(b'\0' + (marker * 8)[:w] for _ in range(h))
def chunk(t, d): return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
png = b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 0, 0, 0, 0)) \
    + chunk(b'IDAT', zlib.compress(rows, 0)) + chunk(b'IEND', b'')
open(path, 'wb').write(png)
PY
  grep -qa "$marker" "$cl_tmp/planted.png" && ok "the planted pattern is in the PNG's bytes" || bad "pattern not planted"
  expect 0 "an image with a planted pixel pattern is answered" "$CL" ask --host "$host_url" --trust "$D/TRUST.json" -n 2 \
    --temp 0 --image "$cl_tmp/planted.png" "$q"
  b64=$(python3 -c 'import base64,sys; d=open(sys.argv[1],"rb").read(); print(base64.b64encode(d[40:100]).decode()[:40])' \
        "$cl_tmp/planted.png")
  if grep -rqa -e "$marker" -e "$b64" "$D/capture" "$D/host.log" "$D/kms.log" 2>/dev/null \
     || curl -s "$host_url/metrics" | grep -qa "$marker"; then
    bad "the image's bytes appear outside the enclave"
  else
    ok "the image's pixels (raw or base64) appear in no host capture ($(ls "$D/capture" | wc -l) files), log or metric"
  fi
  # Bad images: named by index, content not echoed.
  head -c 300 "$xray" > "$cl_tmp/truncated.png"
  expect 1 "a truncated PNG is refused" "$CL" ask --host "$host_url" --trust "$D/TRUST.json" -n 2 \
    --image "$cl_tmp/truncated.png" "$q"
  expect_err "image 1 could not be used" "... naming the image"
  python3 -c 'import struct,sys,zlib
def c(t,d): return struct.pack(">I",len(d))+t+d+struct.pack(">I",zlib.crc32(t+d)&0xffffffff)
open(sys.argv[1],"wb").write(b"\x89PNG\r\n\x1a\n"+c(b"IHDR",struct.pack(">IIBBBBB",100000,100000,8,0,0,0,0))+c(b"IDAT",zlib.compress(b"\0"*64))+c(b"IEND",b""))' \
    "$cl_tmp/bomb.png"
  expect 1 "a decompression bomb (100000 x 100000 PNG header) is refused" "$CL" ask --host "$host_url" \
    --trust "$D/TRUST.json" -n 2 --image "$cl_tmp/bomb.png" "$q"
  expect_err "image 1 could not be used: .*(dimension|limit)" "... by its dimensions, before any allocation"
  head -c $((9 << 20)) /dev/zero | { printf '\x89PNG\r\n\x1a\n'; cat; } > "$cl_tmp/huge.png"
  expect 1 "an image over max_image_bytes is refused" "$CL" ask --host "$host_url" --trust "$D/TRUST.json" -n 2 \
    --image "$cl_tmp/huge.png" "$q"
  grep -q "max_image_bytes" "$cl_tmp/err" && ok "... naming the limit" || bad "over max_image_bytes: $(tail -2 "$cl_tmp/err")"
  five=(); for _ in 1 2 3 4 5; do five+=(--image "$xray"); done
  expect 1 "five images (max_images 4) are refused" "$CL" ask --host "$host_url" --trust "$D/TRUST.json" -n 2 \
    "${five[@]}" "$q"
  expect_err "max_images" "... naming the limit"
  grep -q '"status":200' "$D/host.log" && ok "the host log has statuses and sizes only" || true
fi

# Another projector pinned.
sed "s/$proj_sha/$(printf '%064d' 7)/" "$D/TRUST.json" > "$cl_tmp/other.json"
expect 1 "TRUST.json pinning another projector: refused" ask "$cl_tmp/other.json"
expect_err "mmproj_sha256 differs" "... naming mmproj_sha256"

# The operator withholds the projector.
stack_enclave_stop
kill "$stack_host_pid"; wait "$stack_host_pid" 2>/dev/null
"$HOST" --listen 127.0.0.1:0 --enclave-cid 16 --vsock-dir "$D/vsock" --model "$D/model.sealed" \
  --kms "$kms_url" --kms-credentials "$OPERATOR_DIR/operator.json" > "$D/host2.out" 2> "$D/host2.log" &
stack_host_pid=$!
stack_pids+=("$stack_host_pid")
stack_wait_for "$D/host2.out" 'listening on' 30 || bad "host without --mmproj up"
host_url=http://$(grep -oE '127\.0\.0\.1:[0-9]+' "$D/host2.out" | head -1)
stack_enclave_start "$D/enclave.img" && ok "the enclave boots text-only when the host withholds the projector" \
  || bad "enclave without projector"
expect 1 "... and the client pinning the projector refuses it" ask "$D/TRUST.json"
expect_err "loaded no vision projector" "... naming the missing projector"
"$CL" measure --sim-image "$D/enclave.img" --root "$D/sim-root.pem" --model "$D/model.sealed" -o "$cl_tmp/noproj.json" \
  2>/dev/null
expect 0 "a client that pins no projector is served text" ask "$cl_tmp/noproj.json"
if [ -n "${CLOISTER_TESTDATA:-}" ]; then
  expect 1 "a text-only enclave refuses an image" "$CL" ask --host "$host_url" --trust "$cl_tmp/noproj.json" -n 2 \
    --image "$CLOISTER_TESTDATA/images/chest-xray/00000001_000.png" "What is this?"
  expect_err "accepts no images" "... saying it has no projector"
fi

# The projector sealed under another key of the owner's, with a policy that releases it.
key2=$(env_owner "$CL" kms create-key --kms "$kms_url" --policy "$OWNER_DIR/policy.json")
env_owner "$CL" seal "$proj" -o "$cl_tmp/proj-key2.sealed" --kms "$kms_url" --key-id "$key2" >/dev/null \
  && ok "the projector sealed under a second key" || bad "seal under key2"
restart_host() { # MODEL PROJECTOR
  stack_enclave_stop
  kill "$stack_host_pid"; wait "$stack_host_pid" 2>/dev/null
  "$HOST" --listen 127.0.0.1:0 --enclave-cid 16 --vsock-dir "$D/vsock" --model "$1" --mmproj "$2" \
    --kms "$kms_url" --kms-credentials "$OPERATOR_DIR/operator.json" > "$D/host3.out" 2> "$D/host3.log" &
  stack_host_pid=$!
  stack_pids+=("$stack_host_pid")
  stack_wait_for "$D/host3.out" 'listening on' 30 || bad "host up"
  host_url=http://$(grep -oE '127\.0\.0\.1:[0-9]+' "$D/host3.out" | head -1)
  rm -f "$D/host3.out"
}
restart_host "$D/model.sealed" "$cl_tmp/proj-key2.sealed"
: > "$D/enclave.log"
stack_enclave_start "$D/enclave.img" 2>/dev/null && bad "the enclave served a projector under another key" \
  || ok "a projector under another key: the enclave does not come up"
grep -q "sealed under a different key than the model" "$D/enclave.log" && ok "... and says why" \
  || bad "enclave log: $(tail -2 "$D/enclave.log")"

# Model and projector swapped (same key): the digests follow the content.
restart_host "$D/mmproj.sealed" "$D/model.sealed"
: > "$D/enclave.log"
if stack_enclave_start "$D/enclave.img" 2>/dev/null; then
  expect 1 "model and projector swapped: the pinned client refuses" ask "$D/TRUST.json"
  expect_err "model_sha256 differs|mmproj_sha256 differs" "... naming a digest"
else
  ok "model and projector swapped: the enclave does not come up ($(grep -o '"error":"[A-Z_]*"' "$D/enclave.log" | tail -1))"
fi
finish
