#!/usr/bin/env bash
# The host's front door under load, on the real stack (key service, enclave
# under cloister-sim, cloister ask), loopback only and bounded in time:
# 1,000 keep-alive connections hammering /healthz (wrk) and 1,000 slowloris
# connections trickling header bytes (from 127.0.0.2) at the same time.
# During the load /healthz keeps answering, an attestation and a real
# question through the enclave (cloister ask) succeed, RSS stays bounded;
# the header deadline closes every slow connection; after the load the host
# is back to idle and serves; SIGTERM under load stops it within seconds.
# Prints wrk's requests/s and latency percentiles (docs/benchmarks.md).
. "$(dirname "$0")/lib.sh"
set +u
. "$CLOISTER_SOURCE_DIR/scripts/stack.sh"
set -u
command -v wrk >/dev/null || { echo "wrk not found (scripts/install-deps installs it): skipped"; exit 77; }
command -v curl >/dev/null || { echo "curl not found: skipped"; exit 77; }
command -v python3 >/dev/null || { echo "python3 not found: skipped"; exit 77; }
# wrk, the slowloris client and the host each hold thousands of descriptors.
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt 8192 ]; then
  echo "RLIMIT_NOFILE hard limit $hard is below 8192: skipped"; exit 77
fi
ulimit -Sn 8192 2>/dev/null || true
BUILD=$CLOISTER_BUILD_DIR
LORIS=$CLOISTER_SOURCE_DIR/tests/host/slowloris.py
N=1000              # keep-alive connections, and slow connections
LOAD_S=8            # wrk duration
HDR_MS=5000         # header deadline for this run
RSS_MAX_KB=262144   # 256 MiB
check() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1 (got $3, wanted $2)"; fi; }
jfield() { sed -nE "s/.*\"$2\": (null|[0-9]+).*/\1/p" "$1"; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

"$BUILD/src/cli/cloister" mkmodel --arch llama --shape tiny --type q8_0 -o "$cl_tmp/m.gguf" >/dev/null || { bad "mkmodel"; finish; exit 1; }
# Per-client limit above N: wrk's connections all come from 127.0.0.1.
STACK_HOST_ARGS="--max-client-connections $((N + 500)) --header-timeout-ms $HDR_MS --log-level warn"
export STACK_HOST_ARGS
if stack_up "$BUILD" "$cl_tmp/m.gguf"; then ok "stack up"; else bad "stack up"; finish; exit 1; fi
trap 'stack_down' EXIT
HPID=$stack_host_pid
# AddressSanitizer keeps up to 256 MiB of freed memory in quarantine, plus shadow memory.
if nm "$HOST" 2>/dev/null | grep -q __asan_init; then RSS_MAX_KB=1048576; echo "# ASan build: RSS bound 1 GiB"; fi
PORT=${host_url##*:}
NONCE=00112233445566778899aabbccddeeff
ask() { timeout 30 "$CL" ask --host "$host_url" --trust "$D/TRUST.json" -n 4 --temp 0 "$@"; }
metric() { curl -s --max-time 5 "$host_url/metrics" | awk -v n="$1" '$1 == n {print $2; exit}'; }
ask "What is a fever?" >"$D/a0" 2>"$D/a0.err" && ok "baseline question answered" || bad "baseline ask: $(tail -1 "$D/a0.err")"
rss0=$(rss_kb "$HPID")

# --- load ---------------------------------------------------------------------
python3 "$LORIS" "$PORT" "$N" --source 127.0.0.2 --interval 0.5 --duration $((LOAD_S + 2)) \
  --ready-file "$D/loris.ready" >"$D/loris.json" &
lpid=$!
for _ in $(seq 100); do [ -f "$D/loris.ready" ] && break; sleep 0.1; done
[ -f "$D/loris.ready" ] && ok "$N slow connections open" || bad "slowloris did not get its connections open"
wrk -t2 -c"$N" -d"${LOAD_S}s" --timeout 5s --latency "$host_url/healthz" >"$D/wrk.txt" 2>&1 &
wpid=$!
t_end=$(($(date +%s) + LOAD_S - 1))
probes=0 probe_fail=0 probe_max_ms=0 rss_max=$rss0 asked=0 open_max=0
while [ "$(date +%s)" -lt "$t_end" ]; do
  r=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' --max-time 3 "$host_url/healthz")
  probes=$((probes + 1))
  code=${r% *}
  ms=$(awk -v t="${r#* }" 'BEGIN {printf "%d", t * 1000}')
  [ "$code" = 200 ] || probe_fail=$((probe_fail + 1))
  [ "$ms" -gt "$probe_max_ms" ] && probe_max_ms=$ms
  r=$(rss_kb "$HPID"); [ "$r" -gt "$rss_max" ] && rss_max=$r
  o=$(metric cloister_host_http_connections); [ "${o:-0}" -gt "$open_max" ] && open_max=$o
  if [ "$asked" = 0 ] && [ "$probes" -ge 2 ]; then
    asked=1
    check "attestation through the enclave during the load" 200 \
      "$(curl -s -o "$D/att.cbor" -w '%{http_code}' --max-time 10 "$host_url/v1/attestation?nonce=$NONCE")"
    ask "Name one cause of anaemia." >"$D/a1" 2>"$D/a1.err" && ok "cloister ask answered during the load (OHTTP through the enclave)" \
      || bad "ask during load: $(tail -1 "$D/a1.err")"
  fi
  sleep 0.3
done
wait "$wpid"
wait "$lpid"
[ "$probes" -ge 3 ] && [ "$probe_fail" = 0 ] && ok "/healthz answered all $probes probes during the load (slowest $probe_max_ms ms)" \
  || bad "/healthz failed $probe_fail of $probes probes"
[ "$probe_max_ms" -lt 2500 ] && ok "no probe took 2.5 s or more" || bad "slowest probe $probe_max_ms ms"
[ "$open_max" -ge $((N * 3 / 2)) ] && ok "the host held $open_max connections at once" || bad "only $open_max connections seen open"
[ "$rss_max" -lt "$RSS_MAX_KB" ] && ok "RSS stayed bounded: $((rss0 / 1024)) MiB idle, $((rss_max / 1024)) MiB peak" \
  || bad "RSS peak $((rss_max / 1024)) MiB"
reqs=$(awk '/requests in/ {print $1}' "$D/wrk.txt")
[ "${reqs:-0}" -gt 1000 ] && ok "wrk completed $reqs requests" || bad "wrk: $(tail -5 "$D/wrk.txt")"
grep -q 'Non-2xx' "$D/wrk.txt" && bad "wrk saw error statuses: $(grep Non-2xx "$D/wrk.txt")" || ok "every wrk answer was 200"
check "every slow connection got in (none refused)" "$N 0" "$(jfield "$D/loris.json" opened) $(jfield "$D/loris.json" refused_503)"
check "the header deadline closed every slow connection" "$N" "$(jfield "$D/loris.json" closed)"
lo=$(jfield "$D/loris.json" closed_ms_min); hi=$(jfield "$D/loris.json" closed_ms_max)
[ "$lo" -ge $((HDR_MS - 200)) ] && [ "$hi" -le $((HDR_MS + 3000)) ] \
  && ok "... between $lo and $hi ms, for a $HDR_MS ms deadline, though a byte came every 500 ms" \
  || bad "slow connections closed between $lo and $hi ms"

# --- recovery -----------------------------------------------------------------
# (the wait is generous: under ASan on a busy machine closing hundreds of connections takes seconds)
for _ in $(seq 300); do [ "$(metric cloister_host_http_connections)" -le 1 ] && break; sleep 0.1; done
check "after the load only the probe's connection is open" 1 "$(metric cloister_host_http_connections)"
check "/healthz after the load" 200 "$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$host_url/healthz")"
check "/readyz after the load" 200 "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$host_url/readyz")"
ask "Is rest good for a cold?" >"$D/a2" 2>"$D/a2.err" && ok "question answered after the load" || bad "ask after load: $(tail -1 "$D/a2.err")"
cw=$(ss -tanH state close-wait "( sport = :$PORT )" 2>/dev/null | wc -l)
check "no connections stuck in CLOSE-WAIT" 0 "$cw"
echo "# wrk -t2 -c$N -d${LOAD_S}s /healthz with $N slowloris connections open:"
grep -E 'Requests/sec|Latency |  50%|  75%|  90%|  99%' "$D/wrk.txt" | sed 's/^/#   /'

# --- SIGTERM under load -------------------------------------------------------
wrk -t2 -c"$N" -d5s "$host_url/healthz" >/dev/null 2>&1 &
wpid=$!
python3 "$LORIS" "$PORT" 300 --source 127.0.0.2 --interval 0.5 --duration 5 >/dev/null &
lpid=$!
sleep 1.5
t0=$(date +%s%N)
kill -TERM "$HPID"
for _ in $(seq 100); do kill -0 "$HPID" 2>/dev/null || break; sleep 0.05; done
ms=$((($(date +%s%N) - t0) / 1000000))
if kill -0 "$HPID" 2>/dev/null; then
  bad "host still running 5 s after SIGTERM under load"
  kill -9 "$HPID"
else
  wait "$HPID"
  check "SIGTERM under load: host exited with status 0 (after $ms ms)" 0 "$?"
fi
wait "$wpid" "$lpid" 2>/dev/null
grep -q '"event":"host_stopped_with_workers"' "$D/host.log" && bad "host stopped with workers left" || ok "no workers left behind"
finish
