#!/usr/bin/env bash
# ctest wrapper: `cloister mkmodel` files read by @huggingface/gguf. Skips
# (77) when node or the pinned npm package is absent.
set -u
dir=$(cd "$(dirname "$0")" && pwd)
cl=$1
command -v node >/dev/null || { echo "skipped: node not installed"; exit 77; }
[ -d "$dir/node_modules/@huggingface/gguf" ] || { echo "skipped: run scripts/install-deps (npm ci in $dir)"; exit 77; }
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
args=()
for spec in "llama tiny q8_0" "llama tiny f16" "llama tiny q4_k" "gemma3 tiny q4_0" "gemma3 tiny q6_k" "gemma3 tiny f32"; do
  set -- $spec
  f=$t/$1-$3.gguf
  "$cl" mkmodel --arch "$1" --shape "$2" --type "$3" -o "$f" >/dev/null || { echo "not ok - mkmodel $spec"; exit 1; }
  # tensor count straight from the GGUF header (u64 after magic and version)
  n=$(od -An -t u8 -j 8 -N 8 "$f" | tr -d ' ')
  args+=("$f" "$1" "$n")
done
cd "$dir" && exec node interop.mjs "${args[@]}"
