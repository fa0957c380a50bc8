# Brings up a whole Cloister deployment on this machine (sourced by
# scripts/demo and the end-to-end tests): cloister-kms, a key whose policy
# names the enclave image's PCRs and the model digest, the model sealed under
# it, cloister-host, and cloister-enclave under cloister-sim.
#
#   stack_up BUILD_DIR MODEL.gguf   sets D, CL, SIM, KMS, HOST, kms_url, host_url,
#                                   OWNER_DIR, OPERATOR_DIR, SIM_DIR, KMS_DIR
#
# Roles, as a deployment that claims anything against the operator has them:
#   $OWNER_DIR (account 111122223333): the model owner's key service (kms/), its
#     admin credentials, the key policy, and the cloister-sim CA (sim/): the sim
#     root stands for the hardware vendor's PKI that the owner's policy trusts, so
#     it is held on the owner's side and cloister-sim runs from there (as Nitro's
#     hypervisor does, out of the operator's reach);
#   $OPERATOR_DIR (account 444455556666): only the operator principal's
#     credentials; the host gets those, the sealed model and nothing else.
#   $D: what is public anyway (sealed model, image, sim root certificate, logs).
#   stack_enclave_start / stack_enclave_stop
#   stack_down                      stops everything, removes $D unless STACK_KEEP=1
# STACK_CAPTURE=1 makes the host record every byte it moves (in $D/capture).
# STACK_ENCLAVE_ARGS="..." are packed into the image as cloister-enclave's arguments (measured in PCR0),
# e.g. --replay-window 4.
# STACK_ENCLAVE_MEMORY (MiB) sets the enclave image's memory; by default `cloister-sim pack --memory-for`
# sizes it from the model (model + one sequence's KV and scratch + runtime) and prints the figure.
# STACK_HOST_ARGS adds options to cloister-host (its pid is $stack_host_pid).
# STACK_MMPROJ=FILE.gguf adds a vision projector: in the key policy, sealed under the model's key
# ($D/mmproj.sealed), streamed by the host (--mmproj) and pinned in TRUST.json.
# STACK_LICENCE=1 seals a licensed model (the key's licence key pinned in the context; lease
# STACK_LICENCE_LEASE_S seconds); the enclave then serves only consumers with a licence.
# STACK_KMS_TLS=1 serves the key service over https with a fresh self-signed
# certificate: the enclave then terminates TLS itself (the host pipes ciphertext).

stack_pids=()
stack_enclave_pid=

stack_wait_for() { # FILE PATTERN SECONDS
  for _ in $(seq 1 $(( $3 * 10 ))); do grep -qE "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "stack: timed out waiting for '$2' in $1" >&2; tail -5 "$1" >&2; return 1
}

stack_field() { sed -nE "s/^$1 (.*)$/\1/p" "$2"; }
stack_pcr() { sed -E "s/.*\"PCR$1\":\"([0-9a-f]+)\".*/\1/" "$2"; }

stack_up() {
  local build=$1 model=$2
  build=$(cd "$build" && pwd)
  CL=$build/src/cli/cloister
  SIM=$build/tools/cloister-sim/cloister-sim
  KMS=$build/tools/cloister-kms/cloister-kms
  HOST=$build/tools/cloister-host/cloister-host
  APP=$build/tools/cloister-enclave/cloister-enclave.so
  for b in "$CL" "$SIM" "$KMS" "$HOST" "$APP"; do [ -e "$b" ] || { echo "stack: missing $b (run make)" >&2; return 1; }; done
  D=$(mktemp -d /tmp/cloister-stack.XXXXXX)
  cp "$model" "$D/model.gguf"
  digest=$(sha256sum "$D/model.gguf" | cut -d' ' -f1)
  local mm_digest=() mm_host=() mm_trust=()
  if [ -n "${STACK_MMPROJ:-}" ]; then
    cp "$STACK_MMPROJ" "$D/mmproj.gguf"
    mm_digest=(--model-digest "$(sha256sum "$D/mmproj.gguf" | cut -d' ' -f1)")
    mm_host=(--mmproj "$D/mmproj.sealed")
    mm_trust=(--mmproj "$D/mmproj.sealed")
  fi

  OWNER_DIR=$D/owner OPERATOR_DIR=$D/operator
  mkdir -m 700 "$OWNER_DIR" "$OPERATOR_DIR"
  SIM_DIR=$OWNER_DIR/sim KMS_DIR=$OWNER_DIR/kms
  local owner_acct=111122223333 operator_acct=444455556666
  "$SIM" init "$SIM_DIR" >/dev/null 2>&1
  "$SIM" root "$SIM_DIR" > "$D/sim-root.pem"
  # STACK_ENCLAVE_ARGS are packed into the image (measured in PCR0).
  local eargs=()
  [ -n "${STACK_ENCLAVE_ARGS:-}" ] && read -r -a eargs <<< "$STACK_ENCLAVE_ARGS"
  # the enclave's memory is sized from the model (plus KV budget and runtime) unless given
  local memargs=(--memory-for "$D/model.gguf")
  [ -n "${STACK_MMPROJ:-}" ] && memargs+=(--projector "$D/mmproj.gguf")
  [ -n "${STACK_ENCLAVE_MEMORY:-}" ] && memargs=(--memory "$STACK_ENCLAVE_MEMORY")
  "$SIM" pack --app "$APP" --name cloister-enclave "${memargs[@]}" -o "$D/enclave.img" ${eargs[@]+-- "${eargs[@]}"} >/dev/null
  "$SIM" measure "$D/enclave.img" --json > "$D/pcrs.json"

  "$KMS" init "$KMS_DIR" --account "$owner_acct" >/dev/null
  "$KMS" user add owner --dir "$KMS_DIR" > "$OWNER_DIR/owner.txt"
  "$KMS" user add operator --account "$operator_acct" --dir "$KMS_DIR" > "$OPERATOR_DIR/operator.txt"
  ( umask 077
    printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' \
      "$(stack_field access_key_id "$OWNER_DIR/owner.txt")" "$(stack_field secret_access_key "$OWNER_DIR/owner.txt")" > "$OWNER_DIR/owner.credentials"
    printf '{"access_key_id":"%s","secret_access_key":"%s","region":"us-east-1"}\n' \
      "$(stack_field access_key_id "$OPERATOR_DIR/operator.txt")" "$(stack_field secret_access_key "$OPERATOR_DIR/operator.txt")" > "$OPERATOR_DIR/operator.json" )
  owner_arn=$(stack_field arn "$OWNER_DIR/owner.txt") operator_arn=$(stack_field arn "$OPERATOR_DIR/operator.txt")
  rm -f "$OWNER_DIR/owner.txt" "$OPERATOR_DIR/operator.txt"
  local tls=() scheme=http host_ca=()
  if [ -n "${STACK_KMS_TLS:-}" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=127.0.0.1 \
      -addext subjectAltName=IP:127.0.0.1 -keyout "$D/kms-tls.key" -out "$D/kms-tls.pem" 2>/dev/null
    tls=(--tls-cert "$D/kms-tls.pem" --tls-key "$D/kms-tls.key")
    scheme=https
    host_ca=(--kms-ca "$D/kms-tls.pem")
    export AWS_CA_BUNDLE=$D/kms-tls.pem   # the owner's CLI, as AWS SDKs read it
  fi
  "$KMS" serve "$KMS_DIR" --listen 127.0.0.1:0 --trust-root "$D/sim-root.pem" "${tls[@]}" > "$D/kms.out" 2> "$D/kms.log" &
  stack_pids+=($!)
  stack_wait_for "$D/kms.out" 'listening on' 30 || return 1
  kms_url=$scheme://$(grep -oE '127\.0\.0\.1:[0-9]+' "$D/kms.out" | head -1)

  "$CL" kms policy --pcr0 "$(stack_pcr 0 "$D/pcrs.json")" --pcr1 "$(stack_pcr 1 "$D/pcrs.json")" \
    --pcr2 "$(stack_pcr 2 "$D/pcrs.json")" --model-digest "$digest" "${mm_digest[@]}" --root "$D/sim-root.pem" \
    --principal "$operator_arn" --admin "$owner_arn" > "$OWNER_DIR/policy.json"
  key=$(AWS_SHARED_CREDENTIALS_FILE=$OWNER_DIR/owner.credentials AWS_REGION=us-east-1 \
        "$CL" kms create-key --kms "$kms_url" --policy "$OWNER_DIR/policy.json" --alias alias/model)
  # STACK_LICENCE=1: a licensed model (docs/licensing.md), lease STACK_LICENCE_LEASE_S (default 900 s)
  local lic=()
  if [ -n "${STACK_LICENCE:-}" ]; then
    licence_key_sha256=$(AWS_SHARED_CREDENTIALS_FILE=$OWNER_DIR/owner.credentials AWS_REGION=us-east-1 \
      "$CL" kms licence key --kms "$kms_url" --key-id "$key" --lease-s "${STACK_LICENCE_LEASE_S:-900}" 2>/dev/null)
    lic=(--licence-key-sha256 "$licence_key_sha256")
  fi
  AWS_SHARED_CREDENTIALS_FILE=$OWNER_DIR/owner.credentials AWS_REGION=us-east-1 \
    "$CL" seal "$D/model.gguf" -o "$D/model.sealed" --kms "$kms_url" --key-id "$key" "${lic[@]}" > "$D/seal.out"
  if [ -n "${STACK_MMPROJ:-}" ]; then
    AWS_SHARED_CREDENTIALS_FILE=$OWNER_DIR/owner.credentials AWS_REGION=us-east-1 \
      "$CL" seal "$D/mmproj.gguf" -o "$D/mmproj.sealed" --kms "$kms_url" --key-id "$key" >> "$D/seal.out"
  fi

  mkdir -m 700 "$D/vsock"
  local cap=()
  if [ -n "${STACK_CAPTURE:-}" ]; then mkdir -m 700 "$D/capture"; cap=(--capture-dir "$D/capture"); fi
  # shellcheck disable=SC2086 # STACK_HOST_ARGS is a list of extra options
  "$HOST" --listen 127.0.0.1:0 --enclave-cid 16 --vsock-dir "$D/vsock" --model "$D/model.sealed" \
    --kms "$kms_url" --kms-credentials "$OPERATOR_DIR/operator.json" "${host_ca[@]}" "${cap[@]}" "${mm_host[@]}" \
    ${STACK_HOST_ARGS:-} \
    > "$D/host.out" 2> "$D/host.log" &
  stack_host_pid=$!
  stack_pids+=($!)
  stack_wait_for "$D/host.out" 'listening on' 30 || return 1
  host_url=http://$(grep -oE '127\.0\.0\.1:[0-9]+' "$D/host.out" | head -1)
  # TRUST.json pins the key (from the sealed header), the key service's endpoint and its CA (or none).
  local kms_ca_pin=none
  [ -n "${STACK_KMS_TLS:-}" ] && kms_ca_pin=$D/kms-tls.pem
  "$CL" measure --sim-image "$D/enclave.img" --root "$D/sim-root.pem" --model "$D/model.sealed" \
    --kms-endpoint "$kms_url" --kms-ca "$kms_ca_pin" "${mm_trust[@]}" -o "$D/TRUST.json" 2>/dev/null
  stack_enclave_start "$D/enclave.img"
}

# stack_enclave_start [IMAGE]: runs the image and waits until the host reports it ready.
stack_enclave_start() {
  local img=${1:-$D/enclave.img}
  "$SIM" run "$img" --dir "$SIM_DIR" --vsock-dir "$D/vsock" --cid 16 >> "$D/enclave.out" 2>> "$D/enclave.log" &
  stack_enclave_pid=$!
  for _ in $(seq 1 300); do
    curl -sf "$host_url/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$stack_enclave_pid" 2>/dev/null || { echo "stack: the enclave exited" >&2; tail -3 "$D/enclave.log" >&2; return 1; }
    sleep 0.1
  done
  echo "stack: enclave not ready" >&2
  return 1
}

stack_enclave_stop() {
  [ -n "$stack_enclave_pid" ] || return 0
  kill -9 "$stack_enclave_pid" 2>/dev/null || true
  wait "$stack_enclave_pid" 2>/dev/null || true
  stack_enclave_pid=
}

stack_down() {
  stack_enclave_stop
  for p in "${stack_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${stack_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  stack_pids=()
  if [ -n "${STACK_KEEP:-}" ]; then echo "stack: files kept in $D" >&2; else rm -rf "$D"; fi
}
