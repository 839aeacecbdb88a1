# Shared set-up of the trainer script tests (sourced): lcl and mpirun from ctest's environment, a temporary work
# directory removed on exit, `fail`, and a 16-class synthetic tree plus a tiny model in $work/synth and $work/model.
set -u
lcl=${LCL_BIN:?set LCL_BIN to the lcl binary}
mpirun=${LCL_MPIRUN:-mpirun --oversubscribe --allow-run-as-root}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$lcl" data synth --out "$work/synth" --classes 16 --images-per-class 8 --size 64x64 >/dev/null || fail "synth"
cut -d' ' -f2- "$work/synth/LOC_synset_mapping.txt" | sed 's/,.*//' >"$work/names.txt"
"$lcl" model init --preset tiny --out "$work/model" --class-names "$work/names.txt" >/dev/null || fail "model init"
