# Helpers for integration tests (sourced).
set -u
CL_FAILS=0
CL_PASSES=0
cl_tmp=$(mktemp -d)
trap 'rm -rf "$cl_tmp"' EXIT

ok()   { CL_PASSES=$((CL_PASSES + 1)); echo "ok - $*"; }
bad()  { CL_FAILS=$((CL_FAILS + 1)); echo "not ok - $*"; }
# expect CODE DESC CMD...: runs CMD, checks its exit code, keeps stderr in $cl_tmp/err
expect() {
  local want=$1 desc=$2; shift 2
  "$@" >"$cl_tmp/out" 2>"$cl_tmp/err"; local got=$?
  if [ "$got" = "$want" ]; then ok "$desc"; else bad "$desc (exit $got, wanted $want)"; sed 's/^/    /' "$cl_tmp/err" | head -5; fi
}
# expect_err PATTERN DESC: the last command's stderr matches PATTERN
expect_err() {
  if grep -qE "$1" "$cl_tmp/err"; then ok "$2"; else bad "$2 (stderr: $(head -c 300 "$cl_tmp/err"))"; fi
}
# ptree PID: the process and its descendants (cloister-sim runs the enclave in a
# sandboxed child), e.g. to freeze an enclave with SIGSTOP before killing it
ptree() { echo "$1"; local c; for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do ptree "$c"; done; }
finish() {
  echo "$CL_PASSES passed, $CL_FAILS failed"
  [ "$CL_FAILS" = 0 ]
}
