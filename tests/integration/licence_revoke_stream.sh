#!/usr/bin/env bash
# Issue 12: revoking a licence while its consumer's answer streams ends that
# answer at the next renewal (a 2 s lease renews every ~0.7 s), not when the
# answer is done. The model is a generated 8-layer one, slow enough here that
# a 1024-token answer takes several seconds (its length is printed), so the
# renewal lands mid-answer on a machine twice as fast too. Another licence on
# the same enclave keeps being served: only the revoked consumer is cut.
. "$(dirname "$0")/lib.sh"
SRC=$CLOISTER_SOURCE_DIR
BUILD=$CLOISTER_BUILD_DIR
set +u
. "$SRC/scripts/stack.sh"
set -u
command -v python3 >/dev/null || { echo "skipped: python3 missing"; exit 77; }
if grep -q '^CL_SAN:BOOL=ON' "$BUILD/CMakeCache.txt" 2>/dev/null; then
  # the sanitizers slow generation ~7x: a 1024-token answer then outlasts the request timeout on a loaded
  # machine; the mid-answer check itself runs under them in test_licence_gateway (revoked mid-answer)
  echo "skipped: sanitizer build (timing of a real 2 s lease stack; see test_licence_gateway)"; exit 77
fi
[ -n "${CLOISTER_REFERENCE:-}" ] && [ -f "$CLOISTER_REFERENCE/models/tiny-llama-q8_0.gguf" ] \
  || { echo "skipped: CLOISTER_REFERENCE unset (the vocabulary of the generated model)"; exit 77; }
model=$cl_tmp/model.gguf
"$BUILD/src/cli/cloister" mkmodel --arch llama --shape "tiny,embd=1024,layers=8,heads=16,kv=16,hd=64,ff=2816,vocab=32000,ctx=2048" \
  --type q8_0 --vocab "$CLOISTER_REFERENCE/models/tiny-llama-q8_0.gguf" -o "$model" >/dev/null || { bad "mkmodel"; finish; exit 1; }
export STACK_LICENCE=1 STACK_LICENCE_LEASE_S=2
export TMPDIR=$cl_tmp/tmp && mkdir -p "$TMPDIR"
if ! stack_up "$BUILD" "$model"; then bad "licensed stack came up"; tail -5 "$D/enclave.log"; stack_down; finish; exit 1; fi
trap 'stack_down' EXIT
ok "licensed stack up"
owner() { AWS_SHARED_CREDENTIALS_FILE=$OWNER_DIR/owner.credentials AWS_REGION=us-east-1 "$CL" "$@"; }
C=$cl_tmp/creds && mkdir -m 700 "$C"
for l in a b; do
  owner kms licence create --kms "$kms_url" --key-id "$key" --id "lic-$l" --consumer "Clinic $l" --model-digest "$digest" \
    --credential-out "$C/$l.cred" >/dev/null 2>&1 && ok "owner issues lic-$l" || bad "create lic-$l"
done
sleep 2.5 # the next renewal brings both licences
ask() { "$CL" ask --host "$host_url" --trust "$D/TRUST.json" --credential-file "$C/$1.cred" -n "$2" --temp 0 --stream \
          "Write a very long and detailed discharge summary"; }

start=$(date +%s.%N)
ask a 1024 > "$cl_tmp/full.txt" 2> "$cl_tmp/full.err" && ok "lic-a: the whole answer, undisturbed ($(wc -c < "$cl_tmp/full.txt") bytes in $(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}') s)" \
  || bad "undisturbed stream: $(tail -2 "$cl_tmp/full.err")"

# lic-a again; as soon as its first piece arrives the owner revokes lic-a
python3 - "$cl_tmp" "$CL" "$kms_url" "$key" "$OWNER_DIR/owner.credentials" "$host_url" "$D/TRUST.json" "$C/a.cred" <<'PY' > "$cl_tmp/cut.log"
import os, subprocess, sys, time
tmp, cl, kms, key, owner, host, trust, cred = sys.argv[1:9]
err = open(os.path.join(tmp, "cut.err"), "wb")
p = subprocess.Popen([cl, "ask", "--host", host, "--trust", trust, "--credential-file", cred, "-n", "1024", "--temp", "0",
                      "--stream", "Write a very long and detailed discharge summary"], stdout=subprocess.PIPE, stderr=err, bufsize=0)
first = p.stdout.read(1)
t0 = time.time()
env = dict(os.environ, AWS_SHARED_CREDENTIALS_FILE=owner, AWS_REGION="us-east-1")
r = subprocess.run([cl, "kms", "licence", "revoke", "--kms", kms, "--key-id", key, "--id", "lic-a"], env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
rest = p.stdout.read()
rc = p.wait(timeout=120)
open(os.path.join(tmp, "cut.txt"), "wb").write(first + rest)
print("rc", rc, "revoke", r.returncode, "bytes", len(first + rest), "cut_after_s", round(time.time() - t0, 2))
PY
cat "$cl_tmp/cut.log"
full=$(wc -c < "$cl_tmp/full.txt"); cut=$(wc -c < "$cl_tmp/cut.txt")
grep -q ' revoke 0 ' "$cl_tmp/cut.log" && ok "the owner revoked lic-a mid-answer" || bad "revoke failed"
grep -q '^rc [1-9]' "$cl_tmp/cut.log" && ok "the streamed ask failed" || bad "the revoked stream ended well: $(cat "$cl_tmp/cut.log")"
[ "$cut" -lt "$full" ] && ok "the answer was cut before its completion ($cut of $full bytes, $(awk '{print $NF}' "$cl_tmp/cut.log") s after the revocation)" \
  || bad "not cut: $cut of $full bytes"
grep -q 'licence: licence revoked' "$cl_tmp/cut.err" && ok "the stream ends with the revocation, named inside the encryption" \
  || bad "error: $(tail -3 "$cl_tmp/cut.err")"
expect 1 "lic-a: the next request is refused" ask a 8
expect_err "403.*licence revoked" "named: 403 licence revoked"
expect 0 "lic-b, on the same enclave, is still served" ask b 8
finish
