#!/usr/bin/env bash
# cloister proxy in front of a licensed model (issue 12; scripts/stack.sh with STACK_LICENCE=1),
# driven by the official openai npm client (interop/openai.mjs):
#  - --credential-file with a licensed credential: served, whole and streamed;
#  - no credential: 401 authentication_error naming "no consumer credential";
#  - CLOISTER_CREDENTIAL matching no licence: 401 naming "matches no licence";
#  - a malformed credential file is refused at start; the credential is in no log.
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
export STACK_LICENCE=1 STACK_LICENCE_LEASE_S=2
stack_up "$BUILD" "$T/model.gguf" >"$T/stack.log" 2>&1 || { cat "$T/stack.log"; bad "licensed stack did not come up"; finish; exit 1; }
ok "licensed stack up"
owner() { AWS_SHARED_CREDENTIALS_FILE=$OWNER_DIR/owner.credentials AWS_REGION=us-east-1 "$CL" "$@"; }
C=$T/creds && mkdir -m 700 "$C"
owner kms licence create --kms "$kms_url" --key-id "$key" --id lic-proxy --consumer "Clinic P" --model-digest "$digest" \
  --credential-out "$C/ok.cred" >/dev/null 2>&1 && ok "owner issues lic-proxy" || bad "create lic-proxy"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$C/stranger.cred"
sleep 2.5   # the licence arrives with the next renewal

proxy_start() {
  local name=$1; shift
  "$CL" proxy --host "$host_url" --trust "$D/TRUST.json" --listen 127.0.0.1:0 "$@" >"$T/$name.out" 2>"$T/$name.log" &
  proxy_pids+=($!)
  stack_wait_for "$T/$name.out" '^listening on' 10 || return 1
  purl=$(sed -nE 's/^listening on (http:.*)$/\1/p' "$T/$name.out")
}
export Q="A patient has a fever and a cough."

printf 'tooshort' > "$C/short.cred"
expect 1 "a malformed credential file: the proxy does not start" "$CL" proxy --host "$host_url" --trust "$D/TRUST.json" \
  --listen 127.0.0.1:0 --credential-file "$C/short.cred"
expect_err "short.cred.*credential of 8 characters" "named: the file and the length"
expect 0 "proxy --help names --credential-file" "$CL" proxy --help
grep -q -- "--credential-file" "$T/out" && ok "help text" || bad "no --credential-file in the help"

proxy_start lic --credential-file "$C/ok.cred" || { bad "licensed proxy did not start"; finish; exit 1; }
PROXY_URL=$purl MODE=licensed node "$HERE/interop/openai.mjs" >"$T/node1.out" 2>&1; rc=$?
cat "$T/node1.out"
[ "$rc" = 0 ] && ok "openai client through a licensed proxy: served" || bad "licensed (exit $rc)"

proxy_start none || { bad "proxy without a credential did not start"; finish; exit 1; }
PROXY_URL=$purl MODE=unlicensed EXPECT_REASON="the enclave answered 401: licence: no consumer credential" \
  node "$HERE/interop/openai.mjs" >"$T/node2.out" 2>&1; rc=$?
cat "$T/node2.out"
[ "$rc" = 0 ] && ok "openai client without a credential: refused with the reason" || bad "no credential (exit $rc)"

CLOISTER_CREDENTIAL=$(cat "$C/stranger.cred") proxy_start stranger || { bad "proxy (stranger) did not start"; finish; exit 1; }
PROXY_URL=$purl MODE=unlicensed EXPECT_REASON="licence: consumer credential matches no licence" \
  node "$HERE/interop/openai.mjs" >"$T/node3.out" 2>&1; rc=$?
cat "$T/node3.out"
[ "$rc" = 0 ] && ok "CLOISTER_CREDENTIAL matching no licence: refused with the reason" || bad "stranger (exit $rc)"

hits=""
for f in "$C/ok.cred" "$C/stranger.cred"; do
  cred=$(tr -d '\n' < "$f")
  h=$(grep -rlaF -e "$cred" "$T"/*.log "$D/host.log" "$D/host.out" "$D/enclave.log" "$D/kms.log" 2>/dev/null || true)
  hits="$hits$h"
done
[ -z "$hits" ] && ok "the credential is in no proxy, host, enclave or key-service log" || bad "credential found in: $hits"
finish
