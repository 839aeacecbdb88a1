# shellcheck shell=bash
# The frame every script test sources: the lcl binary and mpirun as CTest exports them, a temporary directory,
# `check` and `fail`, and a summary at exit.
#   here=$(cd "$(dirname "$0")" && pwd)
#   source "$here/../lib/harness.sh"                 # from tests/<area>/
#   "$lcl" --version >"$tmp/v" 2>&1; check "version exits 0" test $? -eq 0
#   [ -s "$tmp/v" ] || fail "no version printed"
#   on_exit 'kill "$job" 2>/dev/null'                # more clean-up, run before $tmp goes
#
# What it sets and defines:
#   lcl       LCL_BIN made absolute (the scripts cd around); empty when LCL_BIN is unset, see need_lcl
#   mpirun    LCL_MPIRUN (one string, used unquoted), or the same command line CTest would give
#   tmp       a fresh directory (mktemp -d), removed at exit; kept, and named, when the test failed or
#             LCL_TEST_KEEP=1, so what it left can be read
#   check NAME CMD...   runs CMD; prints "ok   NAME" or "FAIL NAME" and counts it; never stops the script
#   harness_failures    how many checks have failed so far (e.g. to print logs before the end)
#   fail MSG...         prints "FAIL: MSG" and exits 1 (for a step the rest of the test cannot do without)
#   need_lcl            fails unless $lcl names an executable
#   on_exit CMD         CMD (a string for eval) runs at exit, newest first, before $tmp is removed
# At exit: "N check(s), M failed" when any check ran, and the exit status is non-zero when a check failed, even if
# the script's last command succeeded. INT and TERM exit 1, so the clean-up runs then too.

harness_failures=0
harness_checks=0
harness_failed=0  # fail was called
harness_cleanups=()

lcl=${LCL_BIN:-}
if [ -n "$lcl" ] && [ -e "$lcl" ]; then
  lcl=$(cd "$(dirname "$lcl")" && pwd)/$(basename "$lcl")
fi
# shellcheck disable=SC2034  # for the scripts that source this
mpirun=${LCL_MPIRUN:-mpirun --oversubscribe --allow-run-as-root --bind-to none --mca btl_vader_single_copy_mechanism none}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lcl_$(basename "$0" .sh)_XXXXXX") || {
  echo "FAIL: cannot make a temporary directory"
  exit 1
}

check() {  # check NAME CMD...
  local name=$1
  shift
  harness_checks=$((harness_checks + 1))
  if "$@"; then
    echo "ok   $name"
  else
    echo "FAIL $name"
    harness_failures=$((harness_failures + 1))
  fi
}

fail() {  # fail MSG...
  echo "FAIL: $*"
  harness_failed=1
  exit 1
}

need_lcl() {
  if [ -z "$lcl" ] || [ ! -x "$lcl" ]; then
    fail "LCL_BIN must point to the lcl binary (CTest sets it; got '${LCL_BIN:-}')"
  fi
}

on_exit() {  # on_exit CMD
  harness_cleanups+=("$1")
}

harness_exit() {
  local status=$1 i
  trap - EXIT
  for ((i = ${#harness_cleanups[@]} - 1; i >= 0; i--)); do
    eval "${harness_cleanups[i]}" || :
  done
  if [ "$harness_checks" -gt 0 ]; then echo "$harness_checks check(s), $harness_failures failed"; fi
  if [ "$status" -ne 0 ] && [ "$harness_failed" -eq 0 ] && [ "$harness_failures" -eq 0 ]; then
    echo "FAIL: the script stopped with exit status $status"
  fi
  [ "$status" -eq 0 ] && [ "$harness_failures" -gt 0 ] && status=1
  if [ "$status" -ne 0 ] || [ "${LCL_TEST_KEEP:-0}" = 1 ]; then
    rmdir "$tmp" 2>/dev/null || echo "kept $tmp"  # an empty one goes anyway
  else
    rm -rf "$tmp"
  fi
  exit "$status"
}
trap 'harness_exit $?' EXIT
trap 'exit 1' INT TERM
