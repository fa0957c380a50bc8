#!/usr/bin/env bash
# The seal/unseal/inspect/keygen commands end to end: round trips, exit codes,
# help, and that a failed unseal leaves no file behind.
. "$(dirname "$0")/lib.sh"
CL=$1
T=$cl_tmp

# A minimal GGUF v3 (no tensors, no metadata) so a fresh clone needs no test data.
printf 'GGUF\003\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000' > "$T/empty.gguf"
models=("$T/empty.gguf")
if [ -n "${CLOISTER_REFERENCE:-}" ]; then
  models+=("$CLOISTER_REFERENCE/models/tiny-llama-q8_0.gguf" "$CLOISTER_REFERENCE/models/tiny-gemma3-q4_0.gguf")
else
  echo "note: CLOISTER_REFERENCE unset; only the synthetic model is sealed"
fi

for cmd in keygen seal unseal inspect; do
  expect 0 "$cmd --help" "$CL" "$cmd" --help
  expect 0 "help $cmd" "$CL" help "$cmd"
done
expect 2 "no command is a usage error" "$CL"
expect 2 "unknown command is a usage error" "$CL" frobnicate
expect 2 "seal without key is a usage error" "$CL" seal "$T/empty.gguf" -o "$T/x.sealed"
expect 2 "unseal needs -o or --verify" "$CL" unseal "$T/x.sealed" --key-file "$T/k"

expect 0 "keygen" "$CL" keygen -o "$T/k"
[ "$(stat -c %a "$T/k")" = 600 ] && ok "key file is mode 600" || bad "key file mode $(stat -c %a "$T/k")"
expect 1 "keygen refuses to overwrite" "$CL" keygen -o "$T/k"
expect 0 "second key" "$CL" keygen -o "$T/k2"

expect 1 "seal refuses a non-GGUF input" "$CL" seal "$T/k" -o "$T/bad.sealed" --key-file "$T/k"
[ ! -e "$T/bad.sealed" ] && ok "no output for non-GGUF input" || bad "output left for non-GGUF input"

for m in "${models[@]}"; do
  n=$(basename "$m" .gguf)
  expect 0 "seal $n" "$CL" seal "$m" -o "$T/$n.sealed" --key-file "$T/k" --chunk-size 65536 -t 2
  expect 0 "inspect $n" "$CL" inspect "$T/$n.sealed"
  expect 0 "inspect --json $n" "$CL" inspect --json "$T/$n.sealed"
  grep -q "\"sha256\": \"$(sha256sum "$m" | cut -d' ' -f1)\"" "$T/out" && ok "inspect shows the model digest" || bad "digest missing from inspect"
  expect 0 "unseal --verify $n" "$CL" unseal "$T/$n.sealed" --key-file "$T/k" --verify
  expect 0 "unseal $n" "$CL" unseal "$T/$n.sealed" --key-file "$T/k" -o "$T/$n.out" -t 1
  cmp -s "$m" "$T/$n.out" && ok "round trip of $n is byte-identical" || bad "round trip of $n differs"
  expect 1 "unseal refuses to overwrite" "$CL" unseal "$T/$n.sealed" --key-file "$T/k" -o "$T/$n.out"
  expect 1 "wrong key is refused" "$CL" unseal "$T/$n.sealed" --key-file "$T/k2" -o "$T/$n.wrong"
  expect_err "wrong key" "wrong key is named"
  [ ! -e "$T/$n.wrong" ] && ok "no output with the wrong key" || bad "output left with the wrong key"
done

if [ ${#models[@]} -gt 1 ]; then
  m=${models[1]}; n=$(basename "$m" .gguf)
  size=$(stat -c %s "$T/$n.sealed")
  cp "$T/$n.sealed" "$T/flip.sealed"
  off=$((size / 2))
  # flip every bit of the byte (a fixed value would leave it unchanged 1 time in 256: the ciphertext is random)
  b=$(od -An -tu1 -j "$off" -N1 "$T/flip.sealed" | tr -d ' ')
  printf "\\$(printf '%03o' $((b ^ 255)))" | dd of="$T/flip.sealed" bs=1 seek=$off conv=notrunc status=none
  cmp -s "$T/$n.sealed" "$T/flip.sealed" && bad "the byte at $off did not change"
  expect 1 "flipped chunk byte is refused" "$CL" unseal "$T/flip.sealed" --key-file "$T/k" -o "$T/flip.out"
  expect_err "chunk [0-9]+ of [0-9]+" "the failing chunk is named"
  [ -z "$(ls "$T" | grep -E '^flip\.out')" ] && ok "no output or temp file after a bad chunk" || bad "left: $(ls "$T" | grep flip.out)"
  head -c $((size - 100)) "$T/$n.sealed" > "$T/trunc.sealed"
  expect 1 "truncated file is refused" "$CL" unseal "$T/trunc.sealed" --key-file "$T/k" --verify
  expect_err "truncated" "truncation is named"
  chmod 644 "$T/k"
  expect 1 "group-readable key file is refused" "$CL" unseal "$T/$n.sealed" --key-file "$T/k" --verify
  expect_err "chmod 600" "the fix is suggested"
  chmod 600 "$T/k"
fi
expect 1 "inspect refuses a non-sealed file" "$CL" inspect "$T/k"
expect_err "bad magic" "bad magic is named"
finish
