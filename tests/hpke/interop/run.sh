#!/usr/bin/env bash
# ctest wrapper: skips (77) when node or the pinned npm packages are absent.
dir=$(cd "$(dirname "$0")" && pwd)
command -v node >/dev/null || { echo "skipped: node not installed"; exit 77; }
[ -d "$dir/node_modules/@hpke/core" ] || { echo "skipped: run scripts/install-deps (npm ci in $dir)"; exit 77; }
cd "$dir" && exec node interop.mjs "$1"
