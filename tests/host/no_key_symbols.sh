#!/usr/bin/env bash
# cloister-host must not contain key-handling code: no sealing, HPKE, AEAD,
# key objects, key-service or OHTTP symbols may be linked into it.
set -u
bin=$1
command -v nm >/dev/null || { echo "nm not found: skipped"; exit 77; }
syms=$(nm "$bin" 2>&1) || { echo "nm failed on $bin: $syms"; exit 1; }
[ -n "$syms" ] || { echo "no symbols in $bin (stripped?)"; exit 1; }
# Sanity: the check sees the host's own code.
grep -qE ' [TtDdBbRr] cl_host_start$' <<<"$syms" || { echo "cl_host_start not found: nm output unusable"; exit 1; }
bad=$(grep -E ' (cl_seal_|cl_hpke_|cl_aead_|cl_pkey_|cl_kms_|cl_ohttp_)' <<<"$syms")
if [ -n "$bad" ]; then
  echo "cloister-host links key-handling code:"
  echo "$bad"
  exit 1
fi
echo "ok - no key-handling symbols in $(basename "$bin") ($(wc -l <<<"$syms") symbols checked)"
