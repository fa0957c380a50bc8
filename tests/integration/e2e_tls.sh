#!/usr/bin/env bash
# The key service over https: the enclave terminates TLS itself, so the
# bytes the host pipes between them are ciphertext (no KMS request or
# response visible in the host's capture), and the key is still released.
. "$(dirname "$0")/lib.sh"
set +u
. "$CLOISTER_SOURCE_DIR/scripts/stack.sh"
set -u
command -v openssl >/dev/null || { echo "skipped: openssl CLI missing"; exit 77; }
BUILD=$CLOISTER_BUILD_DIR
"$BUILD/src/cli/cloister" mkmodel --arch llama --shape tiny --type q8_0 -o "$cl_tmp/m.gguf" >/dev/null
STACK_CAPTURE=1 STACK_KMS_TLS=1
export STACK_CAPTURE STACK_KMS_TLS
if stack_up "$BUILD" "$cl_tmp/m.gguf"; then ok "https key service released the key to the enclave"; else bad "stack over https"; fi
trap 'stack_down' EXIT
case "$kms_url" in https://*) ok "key service URL is https" ;; *) bad "key service URL $kms_url" ;; esac
expect 0 "question answered" "$CL" ask --host "$host_url" --trust "$D/TRUST.json" -n 4 --temp 0 "hello"
kms_bytes=$(cat "$D"/capture/*-kms-* 2>/dev/null | wc -c)
[ "$kms_bytes" -gt 500 ] && ok "host piped $kms_bytes key-service bytes" || bad "no key-service traffic captured"
if cat "$D"/capture/*-kms-* "$D"/capture/*-kmsproxy-* 2>/dev/null | grep -qaE 'TrentService|CiphertextForRecipient|X-Amz-Target'; then
  bad "key-service plaintext visible to the host"
else
  ok "only TLS ciphertext crossed the host"
fi
finish
