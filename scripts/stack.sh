# Brings up a whole Cloister deployment on this machine (sourced by
# scripts/demo and the end-to-end tests): cloister-kms, a key whose policy
# names the enclave image's PCRs and the model digest, the model sealed under
# it, cloister-host, and cloister-enclave under cloister-sim.
#
#   stack_up BUILD_DIR MODEL.gguf   sets D, CL, SIM, KMS, HOST, kms_url, host_url
#   stack_enclave_start / stack_enclave_stop
#   stack_down                      stops everything, removes $D unless STACK_KEEP=1
# STACK_CAPTURE=1 makes the host record every byte it moves (in $D/capture).
# STACK_HOST_ARGS adds options to cloister-host (its pid is $stack_host_pid).
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

  "$SIM" init "$D/sim" >/dev/null 2>&1
  "$SIM" root "$D/sim" > "$D/sim-root.pem"
  "$SIM" pack --app "$APP" --name cloister-enclave --memory 2048 -o "$D/enclave.img" >/dev/null
  "$SIM" measure "$D/enclave.img" --json > "$D/pcrs.json"

  "$KMS" init "$D/kms" >/dev/null
  "$KMS" user add owner --dir "$D/kms" > "$D/owner.txt"
  "$KMS" user add operator --dir "$D/kms" > "$D/operator.txt"
  account=$(stack_field arn "$D/owner.txt" | cut -d: -f5)
  ( umask 077
    printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' \
      "$(stack_field access_key_id "$D/owner.txt")" "$(stack_field secret_access_key "$D/owner.txt")" > "$D/owner.credentials"
    printf '{"access_key_id":"%s","secret_access_key":"%s","region":"us-east-1"}\n' \
      "$(stack_field access_key_id "$D/operator.txt")" "$(stack_field secret_access_key "$D/operator.txt")" > "$D/operator.json" )
  rm -f "$D/owner.txt" "$D/operator.txt"
  local tls=() scheme=http host_ca=()
  if [ -n "${STACK_KMS_TLS:-}" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=127.0.0.1 \
      -addext subjectAltName=IP:127.0.0.1 -keyout "$D/kms-tls.key" -out "$D/kms-tls.pem" 2>/dev/null
    tls=(--tls-cert "$D/kms-tls.pem" --tls-key "$D/kms-tls.key")
    scheme=https
    host_ca=(--kms-ca "$D/kms-tls.pem")
    export AWS_CA_BUNDLE=$D/kms-tls.pem   # the owner's CLI, as AWS SDKs read it
  fi
  "$KMS" serve "$D/kms" --listen 127.0.0.1:0 --trust-root "$D/sim-root.pem" "${tls[@]}" > "$D/kms.out" 2> "$D/kms.log" &
  stack_pids+=($!)
  stack_wait_for "$D/kms.out" 'listening on' 10 || return 1
  kms_url=$scheme://$(grep -oE '127\.0\.0\.1:[0-9]+' "$D/kms.out" | head -1)

  "$CL" kms policy --pcr0 "$(stack_pcr 0 "$D/pcrs.json")" --pcr1 "$(stack_pcr 1 "$D/pcrs.json")" \
    --pcr2 "$(stack_pcr 2 "$D/pcrs.json")" --model-digest "$digest" \
    --principal "arn:aws:iam::$account:user/operator" --admin "arn:aws:iam::$account:user/owner" > "$D/policy.json"
  key=$(AWS_SHARED_CREDENTIALS_FILE=$D/owner.credentials AWS_REGION=us-east-1 \
        "$CL" kms create-key --kms "$kms_url" --policy "$D/policy.json" --alias alias/model)
  AWS_SHARED_CREDENTIALS_FILE=$D/owner.credentials AWS_REGION=us-east-1 \
    "$CL" seal "$D/model.gguf" -o "$D/model.sealed" --kms "$kms_url" --key-id "$key" > "$D/seal.out"

  mkdir -m 700 "$D/vsock"
  local cap=()
  if [ -n "${STACK_CAPTURE:-}" ]; then mkdir -m 700 "$D/capture"; cap=(--capture-dir "$D/capture"); fi
  # shellcheck disable=SC2086 # STACK_HOST_ARGS is a list of extra options
  "$HOST" --listen 127.0.0.1:0 --enclave-cid 16 --vsock-dir "$D/vsock" --model "$D/model.sealed" \
    --kms "$kms_url" --kms-credentials "$D/operator.json" "${host_ca[@]}" "${cap[@]}" ${STACK_HOST_ARGS:-} \
    > "$D/host.out" 2> "$D/host.log" &
  stack_host_pid=$!
  stack_pids+=($!)
  stack_wait_for "$D/host.out" 'listening on' 10 || return 1
  host_url=http://$(grep -oE '127\.0\.0\.1:[0-9]+' "$D/host.out" | head -1)
  "$CL" measure --sim-image "$D/enclave.img" --root "$D/sim-root.pem" --model "$D/model.sealed" -o "$D/TRUST.json" >/dev/null
  stack_enclave_start "$D/enclave.img"
}

# stack_enclave_start [IMAGE]: runs the image and waits until the host reports it ready.
stack_enclave_start() {
  local img=${1:-$D/enclave.img}
  "$SIM" run "$img" --dir "$D/sim" --vsock-dir "$D/vsock" --cid 16 >> "$D/enclave.out" 2>> "$D/enclave.log" &
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
