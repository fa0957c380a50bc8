#!/usr/bin/env bash
# Issue 9, break 2: "the default key policy lets the operator take the model
# key". The model owner (account 111122223333) and the operator (account
# 444455556666) share one cloister-kms; the owner's key policy comes from
# `cloister kms policy`. With only the operator's credentials, every path to
# the data key that skips the enclave is tried and must be refused, with the
# reason in the error. Then the key service's own safety checks.
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
jstr() { tr -d '\n' | sed 's/\\/\\\\/g; s/"/\\"/g'; }   # a JSON document as a JSON string's contents
creds() { # NAME.txt -> NAME.json (the host's credentials file shape)
  ( umask 077; printf '{"access_key_id":"%s","secret_access_key":"%s","region":"us-east-1"}\n' \
      "$(field access_key_id "$1")" "$(field secret_access_key "$1")" > "${1%.txt}.json" ) }

# --- the owner's side: sim CA, key service, policy, key, a sealed data key ---
"$SIM" init "$OWN/sim" >/dev/null 2>&1 && "$SIM" root "$OWN/sim" > "$W/sim-root.pem" || { bad "sim init"; finish; exit; }
"$KMS" init "$OWN/kms" --account 111122223333 >/dev/null
"$KMS" user add owner --dir "$OWN/kms" > "$OWN/owner.txt"
"$KMS" user add colleague --dir "$OWN/kms" > "$OWN/colleague.txt"            # another user of the owner's account
"$KMS" user add operator --account 444455556666 --dir "$OWN/kms" > "$OPS/operator.txt"
OWNER_ARN=$(field arn "$OWN/owner.txt") OP_ARN=$(field arn "$OPS/operator.txt")
creds "$OWN/owner.txt"; creds "$OWN/colleague.txt"; creds "$OPS/operator.txt"
printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' \
  "$(field access_key_id "$OWN/owner.txt")" "$(field secret_access_key "$OWN/owner.txt")" > "$OWN/owner.credentials"
chmod 600 "$OWN/owner.credentials"
[ "$OP_ARN" = arn:aws:iam::444455556666:user/operator ] && ok "operator principal lives in its own account" || bad "operator ARN $OP_ARN"

for f in "$OWN/kms"/kms.db*; do
  [ "$(stat -c %a "$f")" = 600 ] && ok "$(basename "$f") is 0600" || bad "$(basename "$f") mode $(stat -c %a "$f")"
done
chmod 640 "$OWN/kms/kms.db"
expect 1 "serve refuses a key store others may read" "$KMS" serve "$OWN/kms" --listen 127.0.0.1:0
expect_err 'kms.db mode 640' "the refusal names the file and its mode"
chmod 600 "$OWN/kms/kms.db"

"$KMS" serve "$OWN/kms" --listen 127.0.0.1:0 --trust-root "$W/sim-root.pem" > "$W/kms.out" 2> "$W/kms.log" &
kpid=$!
for _ in $(seq 100); do grep -q 'listening on' "$W/kms.out" 2>/dev/null && break; sleep 0.1; done
URL=http://$(grep -oE '127\.0\.0\.1:[0-9]+' "$W/kms.out" | head -1)
P=$(printf 'a%.0s' $(seq 96)) DG=$(printf 'd%.0s' $(seq 64))
"$CL" kms policy --pcr0 "$P" --pcr1 "$P" --pcr2 "$P" --model-digest "$DG" --root "$W/sim-root.pem" \
  --principal "$OP_ARN" --admin "$OWNER_ARN" > "$OWN/policy.json" && ok "owner generates the key policy" || bad "policy"
KEY=$(AWS_SHARED_CREDENTIALS_FILE=$OWN/owner.credentials AWS_REGION=us-east-1 \
      "$CL" kms create-key --kms "$URL" --policy "$OWN/policy.json" --alias alias/model)
[ -n "$KEY" ] && ok "owner creates the model key under it" || { bad "create-key"; finish; exit; }
CTX="{\"cloister:model-sha256\":\"$DG\"}"
BLOB=$("$T" call "$URL" "$OWN/owner.json" GenerateDataKey "{\"KeyId\":\"$KEY\",\"KeySpec\":\"AES_256\",\"EncryptionContext\":$CTX}" | jfield CiphertextBlob)
[ -n "$BLOB" ] && ok "owner seals: GenerateDataKey with the model digest context" || bad "GenerateDataKey"

# --- the operator, with its own credentials only -----------------------------
opcall() { expect 1 "$1" "$T" call "$URL" "$OPS/operator.json" "$2" "$3"; }
ALLOW_ALL='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}]}'
opcall "operator PutKeyPolicy (allow everything) is refused" PutKeyPolicy \
  "{\"KeyId\":\"$KEY\",\"Policy\":\"$(printf '%s' "$ALLOW_ALL" | jstr)\",\"BypassPolicyLockoutSafetyCheck\":true}"
expect_err 'AccessDeniedException.*kms:PutKeyPolicy.*explicit deny.*statement DenyReleasePrincipalKeyControl' \
  "  reason: explicit deny DenyReleasePrincipalKeyControl"
opcall "operator Decrypt without a Recipient is refused" Decrypt "{\"CiphertextBlob\":\"$BLOB\",\"EncryptionContext\":$CTX}"
expect_err 'AccessDeniedException.*kms:Decrypt.*explicit deny.*statement DenyDecryptUnlessAttested' \
  "  reason: explicit deny DenyDecryptUnlessAttestedPCR*"
opcall "operator CreateGrant to itself is refused" CreateGrant \
  "{\"KeyId\":\"$KEY\",\"GranteePrincipal\":\"$OP_ARN\",\"Operations\":[\"Decrypt\"]}"
expect_err 'AccessDeniedException.*kms:CreateGrant.*statement DenyReleasePrincipalKeyControl' \
  "  reason: explicit deny DenyReleasePrincipalKeyControl"
opcall "operator cannot create keys in the owner's account" CreateKey '{}'
expect_err 'AccessDeniedException.*kms:CreateKey: keys and aliases here belong to account 111122223333' "  reason: another account's key store"
opcall "operator cannot plant an alias there (for the owner to seal under)" CreateAlias \
  "{\"AliasName\":\"alias/model-v2\",\"TargetKeyId\":\"$KEY\"}"
expect_err 'AccessDeniedException.*kms:CreateAlias' "  reason: another account's aliases"
opcall "operator does not resolve the owner's aliases" DescribeKey '{"KeyId":"alias/model"}'
expect_err 'NotFoundException.*use the key ARN' "  reason: aliases are per account"
KEY2=$("$T" call "$URL" "$OWN/owner.json" CreateKey '{}' | jfield KeyId)
opcall "operator ReEncrypt of the model key to another key is refused" ReEncrypt \
  "{\"CiphertextBlob\":\"$BLOB\",\"SourceEncryptionContext\":$CTX,\"DestinationKeyId\":\"$KEY2\"}"
expect_err 'AccessDeniedException.*kms:ReEncryptFrom.*statement DenyReleasePrincipalKeyControl' \
  "  reason: explicit deny DenyReleasePrincipalKeyControl"
opcall "operator GenerateDataKey under the model key is refused" GenerateDataKey \
  "{\"KeyId\":\"$KEY\",\"KeySpec\":\"AES_256\",\"EncryptionContext\":$CTX}"
expect_err 'AccessDeniedException.*statement DenyReleasePrincipalKeyControl' "  reason: explicit deny"

# --- account principals: no longer "everyone in the account" -----------------
grep -q "\"AWS\":\"$OWNER_ARN\"" <("$T" call "$URL" "$OWN/owner.json" GetKeyPolicy "{\"KeyId\":\"$KEY2\"}" | sed 's/\\//g') \
  && ok "CreateKey's default policy names the creating principal" || bad "default policy principal"
expect 1 "a colleague in the owner's account cannot use a key created without a policy" \
  "$T" call "$URL" "$OWN/colleague.json" Encrypt "{\"KeyId\":\"$KEY2\",\"Plaintext\":\"aGk=\"}"
expect_err 'AccessDeniedException.*no resource-based policy allows' "  reason: no statement allows"
ACCT_POL="{\"Version\":\"2012-10-17\",\"Statement\":[{\"Sid\":\"Owner\",\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"$OWNER_ARN\"},\"Action\":\"kms:*\",\"Resource\":\"*\"},{\"Sid\":\"OperatorAccount\",\"Effect\":\"Allow\",\"Principal\":{\"AWS\":[\"arn:aws:iam::444455556666:root\",\"444455556666\"]},\"Action\":\"kms:*\",\"Resource\":\"*\"}]}"
expect 0 "owner names the operator's account root in a policy" \
  "$T" call "$URL" "$OWN/owner.json" PutKeyPolicy "{\"KeyId\":\"$KEY2\",\"Policy\":\"$(printf '%s' "$ACCT_POL" | jstr)\"}"
opcall "...which does not make the operator principal an administrator" PutKeyPolicy \
  "{\"KeyId\":\"$KEY2\",\"Policy\":\"$(printf '%s' "$ALLOW_ALL" | jstr)\"}"
expect_err 'AccessDeniedException.*no resource-based policy allows' "  reason: the account root names no user"

# --- the key service's own checks on PutKeyPolicy ----------------------------
LOCK="{\"Version\":\"2012-10-17\",\"Statement\":[{\"Sid\":\"UseOnly\",\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"$OWNER_ARN\"},\"Action\":\"kms:Encrypt\",\"Resource\":\"*\"}]}"
expect 1 "owner's policy that would lock the owner out is refused" \
  "$T" call "$URL" "$OWN/owner.json" PutKeyPolicy "{\"KeyId\":\"$KEY2\",\"Policy\":\"$(printf '%s' "$LOCK" | jstr)\"}"
expect_err 'MalformedPolicyDocumentException.*lockout safety check' "  reason: lockout safety check"
OOPS="{\"Version\":\"2012-10-17\",\"Statement\":[{\"Sid\":\"Owner\",\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"$OWNER_ARN\"},\"Action\":\"kms:*\",\"Resource\":\"*\"},{\"Sid\":\"Release\",\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"$OP_ARN\"},\"Action\":\"kms:Decrypt\",\"Resource\":\"*\",\"Condition\":{\"StringEqualsIgnoreCase\":{\"kms:RecipientAttestation:PCR0\":\"$P\"}}},{\"Sid\":\"Oops\",\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"$OP_ARN\"},\"Action\":\"kms:Decrypt\",\"Resource\":\"*\"}]}"
expect 1 "a policy letting the release principal Decrypt unattested is refused" \
  "$T" call "$URL" "$OWN/owner.json" PutKeyPolicy "{\"KeyId\":\"$KEY\",\"Policy\":\"$(printf '%s' "$OOPS" | jstr)\"}"
expect_err "MalformedPolicyDocumentException.*release principal $OP_ARN perform kms:Decrypt without an attestation document \(statement Oops\)" \
  "  reason: names the principal, the action and the statement"
opcall "...so the operator still cannot Decrypt" Decrypt "{\"CiphertextBlob\":\"$BLOB\",\"EncryptionContext\":$CTX}"
expect 0 "the owner can force it explicitly (CloisterAllowUnattestedRelease)" \
  "$T" call "$URL" "$OWN/owner.json" PutKeyPolicy \
  "{\"KeyId\":\"$KEY\",\"Policy\":\"$(printf '%s' "$OOPS" | jstr)\",\"CloisterAllowUnattestedRelease\":true}"
expect 0 "  (and then the operator can decrypt: the check is what stood in the way)" \
  "$T" call "$URL" "$OPS/operator.json" Decrypt "{\"CiphertextBlob\":\"$BLOB\",\"EncryptionContext\":$CTX}"

# --- the audit trail names each refusal --------------------------------------
"$KMS" audit "$OWN/kms" --json > "$W/audit.json" 2>/dev/null
n=$(grep -c "\"principal\":\"$OP_ARN\".*\"decision\":\"deny\"" "$W/audit.json")
[ "$n" -ge 6 ] && ok "audit: $n operator requests denied, each with its statement" || bad "audit: $n operator denials"
finish
