#!/usr/bin/env bash
# Issue 12, key-service side: licence records at cloister-kms, managed only by
# the key's administrator (the owner). The operator (release principal), a
# colleague of the owner's account the policy does not name, and a consumer
# are refused with the reason; the owner creates, lists, shows and revokes;
# the credential is written 0600 and the key service stores only its SHA-256;
# a renewal without an attested Recipient is refused.
set -u
. "$(dirname "$0")/lib.sh"
B=${CLOISTER_BUILD_DIR:?}
CL=$B/src/cli/cloister KMS=$B/tools/cloister-kms/cloister-kms SIM=$B/tools/cloister-sim/cloister-sim
T=$B/tests/integration/kms_attack_tool
for b in "$CL" "$KMS" "$SIM" "$T"; do [ -x "$b" ] || { echo "skipped: $b not built"; exit 77; }; done
command -v sqlite3 >/dev/null || { echo "skipped: no sqlite3"; exit 77; }
kpid=
trap '[ -n "$kpid" ] && kill "$kpid" 2>/dev/null; wait 2>/dev/null; rm -rf "$cl_tmp"' EXIT
W=$cl_tmp/w OWN=$cl_tmp/w/owner OPS=$cl_tmp/w/operator CON=$cl_tmp/w/consumer
mkdir -p "$W" && mkdir -m 700 "$OWN" "$OPS" "$CON"
field() { sed -nE "s/^$1 (.*)$/\1/p" "$2"; }
creds() { # NAME.txt -> NAME.json and NAME.credentials
  ( umask 077; printf '{"access_key_id":"%s","secret_access_key":"%s","region":"us-east-1"}\n' \
      "$(field access_key_id "$1")" "$(field secret_access_key "$1")" > "${1%.txt}.json"
    printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' \
      "$(field access_key_id "$1")" "$(field secret_access_key "$1")" > "${1%.txt}.credentials" ) }

"$SIM" init "$OWN/sim" >/dev/null 2>&1 && "$SIM" root "$OWN/sim" > "$W/sim-root.pem" || { bad "sim init"; finish; exit; }
"$KMS" init "$OWN/kms" --account 111122223333 >/dev/null
"$KMS" user add owner --dir "$OWN/kms" > "$OWN/owner.txt"
"$KMS" user add colleague --dir "$OWN/kms" > "$OWN/colleague.txt"
"$KMS" user add operator --account 444455556666 --dir "$OWN/kms" > "$OPS/operator.txt"
"$KMS" user add consumer --account 777788889999 --dir "$OWN/kms" > "$CON/consumer.txt"
OWNER_ARN=$(field arn "$OWN/owner.txt") OP_ARN=$(field arn "$OPS/operator.txt")
for f in "$OWN/owner.txt" "$OWN/colleague.txt" "$OPS/operator.txt" "$CON/consumer.txt"; do creds "$f"; done
"$KMS" serve "$OWN/kms" --listen 127.0.0.1:0 --trust-root "$W/sim-root.pem" > "$W/kms.out" 2> "$W/kms.log" &
kpid=$!
for _ in $(seq 100); do grep -q 'listening on' "$W/kms.out" 2>/dev/null && break; sleep 0.1; done
URL=http://$(grep -oE '127\.0\.0\.1:[0-9]+' "$W/kms.out" | head -1)
P=$(printf 'a%.0s' $(seq 96)) DG=$(printf 'd%.0s' $(seq 64))
"$CL" kms policy --pcr0 "$P" --pcr1 "$P" --pcr2 "$P" --model-digest "$DG" --root "$W/sim-root.pem" \
  --principal "$OP_ARN" --admin "$OWNER_ARN" > "$OWN/policy.json"
as() { local who=$1; shift; AWS_SHARED_CREDENTIALS_FILE=$who AWS_REGION=us-east-1 "$@"; }
KEY=$(as "$OWN/owner.credentials" "$CL" kms create-key --kms "$URL" --policy "$OWN/policy.json")
[ -n "$KEY" ] && ok "owner creates the model key" || { bad "create-key"; finish; exit; }

# --- usage errors and --help ------------------------------------------------
expect 0 "kms licence --help" "$CL" kms licence --help
expect 0 "kms licence create --help" "$CL" kms licence create --help
expect 0 "kms usage --help" "$CL" kms usage --help
expect 2 "unknown licence subcommand" "$CL" kms licence frobnicate --kms "$URL" --key-id "$KEY"
expect_err "unknown subcommand 'frobnicate'" "the error names the subcommand"
expect 2 "create without a credential" as "$OWN/owner.credentials" "$CL" kms licence create --kms "$URL" --key-id "$KEY" \
  --id lic-a --consumer "Clinic A" --model-digest "$DG"
expect_err "credential-out FILE or --credential-sha256" "the error names the two ways to give one"
expect 2 "create with a bad model digest" as "$OWN/owner.credentials" "$CL" kms licence create --kms "$URL" --key-id "$KEY" \
  --id lic-a --consumer "Clinic A" --model-digest abc --credential-out "$CON/a.cred"
expect 2 "seal --licence-key-sha256 with a bad value" "$CL" seal /dev/null -o "$W/x.sealed" --kms "$URL" --key-id "$KEY" \
  --licence-key-sha256 XYZ
expect_err "licence-key-sha256 must be 64" "the seal error names the option"

# --- the licence key -------------------------------------------------------
LK=$(as "$OWN/owner.credentials" "$CL" kms licence key --kms "$URL" --key-id "$KEY" --lease-s 2 --out "$W/licence-key.der" 2>"$cl_tmp/err")
[ "${#LK}" = 64 ] && ok "owner gets the licence key's SHA-256 ($LK)" || bad "licence key: $LK $(cat "$cl_tmp/err")"
[ "$(sha256sum "$W/licence-key.der" | cut -d' ' -f1)" = "$LK" ] && ok "the written DER hashes to the printed value" || bad "DER hash"
as "$OWN/owner.credentials" "$CL" kms licence key --kms "$URL" --key-id "$KEY" --json > "$W/lk.json"
grep -q '"LeaseSeconds":2' "$W/lk.json" && ok "the lease is owner-configurable (2 s)" || bad "lease $(cat "$W/lk.json")"

# --- who may manage licences -------------------------------------------------
for who in "operator:$OPS/operator" "colleague:$OWN/colleague" "consumer:$CON/consumer"; do
  n=${who%%:*} f=${who#*:}
  expect 1 "the $n cannot create a licence" as "$f.credentials" "$CL" kms licence create --kms "$URL" --key-id "$KEY" \
    --id "lic-$n" --consumer "$n" --model-digest "$DG" --credential-sha256 "$DG"
  expect_err "AccessDeniedException.*(managed only by the key's administrator|managed by the key's administrator)" \
    "the $n's refusal names the rule"
  expect 1 "the $n cannot list licences" as "$f.credentials" "$CL" kms licence list --kms "$URL" --key-id "$KEY"
  expect 1 "the $n cannot read usage" as "$f.credentials" "$CL" kms usage --kms "$URL" --key-id "$KEY"
  expect 1 "the $n cannot export the licence key or change the lease" as "$f.credentials" "$CL" kms licence key \
    --kms "$URL" --key-id "$KEY" --lease-s 86400
done
expect 1 "the operator cannot revoke a licence" as "$OPS/operator.credentials" "$CL" kms licence revoke --kms "$URL" \
  --key-id "$KEY" --id lic-a
expect_err "AccessDeniedException" "refused as AccessDenied"

# --- the owner --------------------------------------------------------------
expect 0 "owner creates a licence with a generated credential" as "$OWN/owner.credentials" "$CL" kms licence create \
  --kms "$URL" --key-id "$KEY" --id lic-a --consumer "Clinic A" --model-digest "$DG" --credential-out "$CON/a.cred" \
  --max-requests 10 --max-tokens 1000 --period-s 3600
[ "$(stat -c %a "$CON/a.cred")" = 600 ] && ok "the credential file is 0600" || bad "mode $(stat -c %a "$CON/a.cred")"
CRED=$(tr -d '\n' < "$CON/a.cred")
[ "${#CRED}" = 64 ] && ok "the credential is 32 random bytes (64 hex)" || bad "credential length ${#CRED}"
expect 1 "an existing credential file is not overwritten" as "$OWN/owner.credentials" "$CL" kms licence create \
  --kms "$URL" --key-id "$KEY" --id lic-b --consumer "Clinic B" --model-digest "$DG" --credential-out "$CON/a.cred"
expect_err "already exists" "the refusal says why"
expect 1 "a second licence with the same id is refused" as "$OWN/owner.credentials" "$CL" kms licence create \
  --kms "$URL" --key-id "$KEY" --id lic-a --consumer "Clinic A" --model-digest "$DG" --credential-sha256 "$DG"
expect_err "AlreadyExistsException.*lic-a already exists" "named AlreadyExists"
[ -e "$CON/a.cred" ] && ok "a refused create leaves the earlier credential" || bad "credential removed"
CH=$(printf '%s' "$CRED" | sha256sum | cut -d' ' -f1)
expect 0 "owner shows the licence" as "$OWN/owner.credentials" "$CL" kms licence show --kms "$URL" --key-id "$KEY" --id lic-a --json
grep -q "\"CredentialSha256\":\"$CH\"" "$cl_tmp/out" && ok "the licence holds the credential's SHA-256" || bad "show: $(cat "$cl_tmp/out")"
grep -q '"Serial":1' "$cl_tmp/out" && grep -q '"Revoked":false' "$cl_tmp/out" && ok "serial 1, not revoked" || bad "serial"
expect 0 "owner lists the licences" as "$OWN/owner.credentials" "$CL" kms licence list --kms "$URL" --key-id "$KEY"
grep -q "lic-a.*Clinic A.*active" "$cl_tmp/out" && ok "list shows lic-a active" || bad "list: $(cat "$cl_tmp/out")"
expect 0 "owner revokes" as "$OWN/owner.credentials" "$CL" kms licence revoke --kms "$URL" --key-id "$KEY" --id lic-a --json
grep -q '"Serial":2' "$cl_tmp/out" && grep -q '"Revoked":true' "$cl_tmp/out" && ok "revocation raises the serial" || bad "revoke: $(cat "$cl_tmp/out")"
expect 1 "show of an unknown licence" as "$OWN/owner.credentials" "$CL" kms licence show --kms "$URL" --key-id "$KEY" --id nope
expect_err "NotFoundException.*licence nope is not found" "named NotFound"
expect 0 "owner reads usage (none yet)" as "$OWN/owner.credentials" "$CL" kms usage --kms "$URL" --key-id "$KEY" --json
grep -q '"Usage":\[\]' "$cl_tmp/out" && ok "no usage reported yet" || bad "usage: $(cat "$cl_tmp/out")"

# --- renewal needs an attested Recipient --------------------------------------
expect 1 "a renewal without Recipient is refused" "$T" call "$URL" "$OPS/operator.json" CloisterRenewLicence \
  "{\"CiphertextBlob\":\"AAAA\",\"Nonce\":\"$DG\"}"
expect_err "requires a Recipient attestation document" "the refusal names the missing attestation"

# --- nothing secret at rest ---------------------------------------------------
DB=$OWN/kms/kms.db
if sqlite3 "$DB" .dump | grep -q "$CRED"; then bad "the credential is in the key service's database"; else ok "the credential is not in the database in clear"; fi
grep -q "$CRED" "$W/kms.log" "$W/kms.out" && bad "the credential is in the key service's logs" || ok "nor in its logs"
sqlite3 "$DB" "SELECT count(*) FROM licence_keys WHERE instr(priv_wrapped, 'PRIVATE') > 0" | grep -qx 0 \
  && ok "the licence-signing key is stored wrapped" || bad "licence key stored in clear"
"$KMS" audit "$OWN/kms" > "$W/audit.txt"
grep -q "CloisterCreateLicence.*deny" "$W/audit.txt" && grep -q "CloisterCreateLicence.*allow" "$W/audit.txt" \
  && ok "licence actions are audited (allow and deny)" || bad "audit: $(grep Cloister "$W/audit.txt" | head -3)"
finish
