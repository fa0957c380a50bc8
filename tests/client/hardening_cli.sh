#!/usr/bin/env bash
# Every `cloister` command that holds a secret hardens its process before it
# reads the first one: no core files (RLIMIT_CORE 0) and not dumpable, so
# another process of the same user can neither ptrace it nor read
# /proc/PID/mem or /proc/PID/environ. Each command is caught while it waits
# (on a FIFO or on stdin) right where its secret would arrive, and its /proc
# entries are read from outside:
#  - /proc/PID/limits shows "Max core file size 0 0";
#  - the kernel hands the /proc/PID files of a non-dumpable process to root,
#    so their owner is 0 while the process runs as another user. As root the
#    commands run as nobody (setpriv) so the owner tells the two apart; a
#    plain `sleep` run the same way shows the check is not vacuous.
. "$(dirname "$0")/../integration/lib.sh"
CL=$1 FAKE=$2
T=$cl_tmp
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$T" "${H:-}"; }
trap cleanup EXIT

RUN=()
if [ "$(id -u)" = 0 ]; then
  command -v setpriv >/dev/null || { echo "skipped: running as root without setpriv"; exit 77; }
  RUN=(setpriv --reuid=65534 --regid=65534 --clear-groups)
fi
# A directory the unprivileged user can read.
H=$(mktemp -d /tmp/cloister-harden.XXXXXX)
chmod 755 "$H"

# owner_of PID COMM: uid owning /proc/PID/environ once PID runs COMM and is past
# its hardening (or after 5 s). Waiting for COMM matters: setpriv itself is
# briefly not dumpable after it changes uid, until it executes COMM.
owner_of() {
  local o="" c
  for _ in $(seq 100); do
    c=$(cat "/proc/$1/comm" 2>/dev/null) || return 1
    o=$(stat -c %u "/proc/$1/environ" 2>/dev/null) || return 1
    [ "$c" = "$2" ] && [ "$o" = 0 ] && break
    [ "$c" = "$2" ] || o=""
    sleep 0.05
  done
  echo "$o"
}
# check NAME PID: the process is not dumpable and has no core limit.
check() {
  local name=$1 pid=$2 uid o core
  o=$(owner_of "$pid" cloister)
  if [ -z "$o" ]; then bad "$name: the process exited or never ran cloister ($(head -c 300 "$H/$name.err" 2>/dev/null))"; return; fi
  uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
  [ "$uid" != 0 ] && [ "$o" = 0 ] && ok "$name is not dumpable (its /proc entries belong to root, it runs as uid $uid)" \
    || bad "$name is dumpable (uid $uid, /proc/PID/environ owned by $o)"
  core=$(awk '/^Max core file size/ {print $5 " " $6}' "/proc/$pid/limits" 2>/dev/null)
  [ "$core" = "0 0" ] && ok "$name has no core files (RLIMIT_CORE 0 0)" || bad "$name core limit: '$core'"
}

# The control: an ordinary process run the same way keeps its own /proc entries.
"${RUN[@]}" sleep 30 &
ctl=$!; pids+=($ctl)
for _ in $(seq 100); do [ "$(cat "/proc/$ctl/comm")" = sleep ] && break; sleep 0.05; done
o=$(stat -c %u "/proc/$ctl/environ"); u=$(awk '/^Uid:/ {print $2}' "/proc/$ctl/status")
[ "$u" != 0 ] && [ "$o" = "$u" ] && ok "control: a dumpable process owns its /proc entries (uid $u)" \
  || bad "control: uid $u, owner $o: the check cannot tell"
kill "$ctl"

# Fixtures: a minimal GGUF sealed under a local key, readable by the test user.
printf 'GGUF\003\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000' > "$H/m.gguf"
"$CL" keygen -o "$T/k" >/dev/null 2>&1 && "$CL" seal "$H/m.gguf" -o "$H/m.sealed" --key-file "$T/k" >/dev/null 2>&1 \
  && ok "sealed a model" || bad "could not seal the test model"
chmod 644 "$H/m.gguf" "$H/m.sealed"
mkfifo -m 666 "$H/key" "$H/in"

# seal and unseal, waiting for their key file (a FIFO that never gets a writer).
"${RUN[@]}" "$CL" seal "$H/m.gguf" -o "$H/out.sealed" --key-file "$H/key" 2> "$H/seal.err" &
p=$!; pids+=($p); check seal $p; kill $p
"${RUN[@]}" "$CL" unseal "$H/m.sealed" --key-file "$H/key" --verify 2> "$H/unseal.err" &
p=$!; pids+=($p); check unseal $p; kill $p

# ask and chat against the fake gateway: ask waits for its question on stdin,
# chat (which attests first) for its first message.
mkdir -p "$T/g"
CL_FAKE_SIM_DIR=$T/sim CL_FAKE_MODEL=$(sha256sum "$H/m.gguf" | cut -d' ' -f1) "$FAKE" serve "$T/g" > "$T/g/log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$T/g/url" ] && break; sleep 0.05; done
[ -s "$T/g/url" ] || { bad "fake gateway did not start"; finish; exit 1; }
"$CL" measure --nitro-pcrs "$T/g/nitro.json" --root "$T/g/root.pem" --model "$H/m.sealed" -o "$H/trust.json" >/dev/null
chmod 644 "$H/trust.json"
URL=$(cat "$T/g/url")

"${RUN[@]}" "$CL" ask --host "$URL" --trust "$H/trust.json" - < "$H/in" > "$H/ask.out" 2> "$H/ask.err" &
p=$!; pids+=($p)
exec 9> "$H/in"
check ask $p
echo "What helps with a fever?" >&9; exec 9>&-
wait $p && grep -qx "Rest, fluids and paracetamol." "$H/ask.out" && ok "the hardened ask still answers" \
  || bad "ask after hardening: $(head -c 300 "$H/ask.err")"

"${RUN[@]}" "$CL" chat --host "$URL" --trust "$H/trust.json" < "$H/in" > "$H/chat.out" 2> "$H/chat.err" &
p=$!; pids+=($p)
exec 9> "$H/in"
for _ in $(seq 100); do grep -q "verified enclave" "$H/chat.err" 2>/dev/null && break; sleep 0.05; done
check chat $p
printf 'Hello\n/quit\n' >&9; exec 9>&-
wait $p && grep -qx "Rest, fluids and paracetamol." "$H/chat.out" && ok "the hardened chat still answers" \
  || bad "chat after hardening: $(head -c 300 "$H/chat.err")"
finish
