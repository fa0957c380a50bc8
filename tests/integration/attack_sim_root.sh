#!/usr/bin/env bash
# Issue 9, break 3: "whoever holds the sim root can mint enclave identities".
# The operator runs `cloister-sim init` itself, so it holds a sim CA of its
# own, and with the project's signer forges a document carrying the pinned
# PCRs and its own RSA key. The key service trusts that second root too (as
# a deployment trusting the Nitro root and a sim root would). The key policy
# pins the owner's root (cloister:attestation-root-sha256): the forgery is
# refused by that condition, and a policy without the pin releases nothing
# while the key service trusts more than one root.
set -u
. "$(dirname "$0")/lib.sh"
B=${CLOISTER_BUILD_DIR:?}
CL=$B/src/cli/cloister KMS=$B/tools/cloister-kms/cloister-kms SIM=$B/tools/cloister-sim/cloister-sim
T=$B/tests/integration/kms_attack_tool
for b in "$CL" "$KMS" "$SIM" "$T"; do [ -x "$b" ] || { echo "skipped: $b not built"; exit 77; }; done
kpid=
trap '[ -n "$kpid" ] && kill "$kpid" 2>/dev/null; wait 2>/dev/null; rm -rf "$cl_tmp"' EXIT
W=$cl_tmp/w OWN=$cl_tmp/w/owner OPS=$cl_tmp/w/operator
mkdir -p "$W" && mkdir -m 700 "$OWN" "$OPS"
field() { sed -nE "s/^$1 (.*)$/\1/p" "$2"; }
jfield() { grep -o "\"$1\":\"[^\"]*\"" | head -1 | cut -d'"' -f4; }
jstr() { tr -d '\n' | sed 's/\\/\\\\/g; s/"/\\"/g'; }
creds() { ( umask 077; printf '{"access_key_id":"%s","secret_access_key":"%s","region":"us-east-1"}\n' \
      "$(field access_key_id "$1")" "$(field secret_access_key "$1")" > "${1%.txt}.json" ) }
kms_start() { # ROOT.pem...
  [ -n "$kpid" ] && { kill "$kpid"; wait "$kpid" 2>/dev/null; }
  local r=() ; for x in "$@"; do r+=(--trust-root "$x"); done
  "$KMS" serve "$OWN/kms" --listen 127.0.0.1:0 "${r[@]}" > "$W/kms.out" 2> "$W/kms.log" &
  kpid=$!
  for _ in $(seq 100); do grep -q 'listening on' "$W/kms.out" 2>/dev/null && break; sleep 0.1; done
  URL=http://$(grep -oE '127\.0\.0\.1:[0-9]+' "$W/kms.out" | head -1)
}

# the owner's sim CA (stands for the hardware PKI the owner trusts) and the operator's own
"$SIM" init "$OWN/sim" >/dev/null 2>&1 && "$SIM" root "$OWN/sim" > "$W/owner-root.pem" || { bad "owner sim"; finish; exit; }
"$SIM" init "$OPS/sim" >/dev/null 2>&1 && "$SIM" root "$OPS/sim" > "$W/operator-root.pem" || { bad "operator sim"; finish; exit; }
"$KMS" init "$OWN/kms" --account 111122223333 >/dev/null
"$KMS" user add owner --dir "$OWN/kms" > "$OWN/owner.txt"
"$KMS" user add operator --account 444455556666 --dir "$OWN/kms" > "$OPS/operator.txt"
OWNER_ARN=$(field arn "$OWN/owner.txt") OP_ARN=$(field arn "$OPS/operator.txt")
creds "$OWN/owner.txt"; creds "$OPS/operator.txt"

kms_start "$W/owner-root.pem" "$W/operator-root.pem"
FP=$(openssl x509 -in "$W/owner-root.pem" -outform DER | sha256sum | cut -d' ' -f1)
grep -q "trust root $W/owner-root.pem sha256 $FP" "$W/kms.log" && ok "serve prints each root's fingerprint" || bad "fingerprint line"

P0=$(printf 'a%.0s' $(seq 96)) P1=$(printf 'b%.0s' $(seq 96)) P2=$(printf 'c%.0s' $(seq 96)) DG=$(printf 'd%.0s' $(seq 64))
"$CL" kms policy --pcr0 "$P0" --pcr1 "$P1" --pcr2 "$P2" --model-digest "$DG" --root "$W/owner-root.pem" \
  --principal "$OP_ARN" --admin "$OWNER_ARN" > "$OWN/policy.json"
grep -q "\"cloister:attestation-root-sha256\": \"$FP\"" "$OWN/policy.json" && ok "the generated policy pins the owner's root" || bad "no root pin"
KEY=$("$T" call "$URL" "$OWN/owner.json" CreateKey "{\"Policy\":\"$(jstr < "$OWN/policy.json")\"}" | jfield KeyId)
[ -n "$KEY" ] && ok "owner creates the model key" || { bad "CreateKey"; finish; exit; }
CTX="{\"cloister:model-sha256\":\"$DG\"}"
BLOB=$("$T" call "$URL" "$OWN/owner.json" GenerateDataKey "{\"KeyId\":\"$KEY\",\"KeySpec\":\"AES_256\",\"EncryptionContext\":$CTX}" | jfield CiphertextBlob)

# the operator's forgery: its own sim CA, the pinned PCRs, its own RSA key
mkdir "$OPS/forged" "$OWN/genuine"
expect 0 "operator forges a document with the pinned PCRs under its own sim root" \
  "$T" forge "$OPS/sim" "$OPS/forged" --pcr 0="$P0" --pcr 1="$P1" --pcr 2="$P2"
"$T" forge "$OWN/sim" "$OWN/genuine" --pcr 0="$P0" --pcr 1="$P1" --pcr 2="$P2" || bad "genuine document"
dec() { # KEY BLOB DOC.b64 -> Decrypt with a Recipient, the operator's credentials
  printf '{"CiphertextBlob":"%s","EncryptionContext":%s,"Recipient":{"KeyEncryptionAlgorithm":"RSAES_OAEP_SHA_256","AttestationDocument":"%s"}}' \
    "$2" "$CTX" "$(tr -d '\n' < "$3")" > "$W/body.json"
  "$T" call "$URL" "$OPS/operator.json" Decrypt "@$W/body.json"
}
expect 1 "Decrypt + Recipient with the forged document is refused" dec "$KEY" "$BLOB" "$OPS/forged/doc.b64"
expect_err 'AccessDeniedException.*explicit deny.*statement DenyDecryptUnlessAttestationRoot' \
  "  reason: the root-fingerprint condition (DenyDecryptUnlessAttestationRoot)"
expect 0 "the same PCRs under the owner's root are released (the root made the difference)" \
  dec "$KEY" "$BLOB" "$OWN/genuine/doc.b64"
grep -q CiphertextForRecipient "$cl_tmp/out" && ok "  released as CiphertextForRecipient only" || bad "no CiphertextForRecipient"

# a policy that does not pin a root (PCRs only, as before the fix)
NOPIN="{\"Version\":\"2012-10-17\",\"Statement\":[{\"Sid\":\"Owner\",\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"$OWNER_ARN\"},\"Action\":\"kms:*\",\"Resource\":\"*\"},{\"Sid\":\"ReleasePcrOnly\",\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"$OP_ARN\"},\"Action\":\"kms:Decrypt\",\"Resource\":\"*\",\"Condition\":{\"StringEqualsIgnoreCase\":{\"kms:RecipientAttestation:PCR0\":\"$P0\",\"kms:RecipientAttestation:PCR1\":\"$P1\",\"kms:RecipientAttestation:PCR2\":\"$P2\"}}},{\"Sid\":\"DenyOtherPcr0\",\"Effect\":\"Deny\",\"Principal\":\"*\",\"Action\":\"kms:Decrypt\",\"Resource\":\"*\",\"Condition\":{\"StringNotEqualsIgnoreCase\":{\"kms:RecipientAttestation:PCR0\":\"$P0\"}}}]}"
expect 0 "owner replaces the policy with one that pins PCRs but no root" \
  "$T" call "$URL" "$OWN/owner.json" PutKeyPolicy "{\"KeyId\":\"$KEY\",\"Policy\":\"$(printf '%s' "$NOPIN" | jstr)\"}"
expect 1 "two roots trusted: the forged document gets nothing from the unpinned policy" dec "$KEY" "$BLOB" "$OPS/forged/doc.b64"
expect_err 'AccessDeniedException.*statement ReleasePcrOnly does not pin cloister:attestation-root-sha256 \(2 roots trusted\)' \
  "  reason: the statement does not pin a root while 2 are trusted"
expect 1 "  nor does the genuine one: a multi-root key service needs the pin" dec "$KEY" "$BLOB" "$OWN/genuine/doc.b64"
expect_err 'does not pin cloister:attestation-root-sha256' "  reason: same"

# one root only (the owner's): the forgery does not even verify
kms_start "$W/owner-root.pem"
expect 1 "key service trusting only the owner's root refuses the forged document" dec "$KEY" "$BLOB" "$OPS/forged/doc.b64"
expect_err 'Recipient attestation document was refused' "  reason: not signed by a trusted root"
expect 0 "  and the unpinned policy still releases to the genuine one (one root: no ambiguity)" \
  dec "$KEY" "$BLOB" "$OWN/genuine/doc.b64"
finish
