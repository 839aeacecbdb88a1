# shellcheck shell=bash
# Shared set-up of the trainer script tests (sourced): tests/lib/harness.sh (lcl, mpirun, check, fail, the temporary
# directory, here called $work), and a 16-class synthetic tree plus a tiny model in $work/synth and $work/model.
set -u
# shellcheck source=tests/lib/harness.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/harness.sh"
need_lcl
work=$tmp

"$lcl" data synth --out "$work/synth" --classes 16 --images-per-class 8 --size 64x64 >/dev/null || fail "synth"
cut -d' ' -f2- "$work/synth/LOC_synset_mapping.txt" | sed 's/,.*//' >"$work/names.txt"
"$lcl" model init --preset tiny --out "$work/model" --class-names "$work/names.txt" >/dev/null || fail "model init"
