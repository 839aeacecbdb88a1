# shellcheck shell=bash
# Shared set-up of the trainer script tests (sourced): tests/lib/harness.sh (lcl, mpirun, check, fail, the temporary
# directory, here called $work), a 16-class synthetic tree plus a tiny model in $work/synth and $work/model, train()
# and column().
set -u
# shellcheck source=tests/lib/harness.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/harness.sh"
need_lcl
work=$tmp

"$lcl" data synth --out "$work/synth" --classes 16 --images-per-class 8 --size 64x64 >/dev/null || fail "synth"
cut -d' ' -f2- "$work/synth/LOC_synset_mapping.txt" | sed 's/,.*//' >"$work/names.txt"
"$lcl" model init --preset tiny --out "$work/model" --class-names "$work/names.txt" >/dev/null || fail "model init"

# train NAME NP [args...]: a foreground `lcl train` of $work/base.pbtxt (which the test writes) on NP ranks into
# $work/NAME, its output in $work/NAME.log; fails the test unless it exits 0.
train() {  # train NAME NP [args...]: foreground run, must exit 0
  local name=$1 np=$2
  shift 2
  # shellcheck disable=SC2086
  $mpirun -np "$np" "$lcl" train --config "$work/base.pbtxt" --run-dir "$work/$name" "$@" >"$work/$name.log" 2>&1 ||
    fail "$name: lcl train exited $?: $(grep -v '^I' "$work/$name.log" | tail -5)"
}

column() {  # column RUN_DIR FIELD: the field at each logged step of metrics.jsonl, as Python repr (every digit)
  python3 -c "
import json, sys
for line in open(sys.argv[1]): print(repr(json.loads(line)[sys.argv[2]]))" "$1/metrics.jsonl" "$2"
}
