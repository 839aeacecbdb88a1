#!/usr/bin/env bash
# Bad input at launch is a clear error before any training, both from launch/mpirun.sh's early checks (exit 2, no
# rank started) and from `lcl train` itself under mpirun (exit 1, one message, no metrics): a world size that
# parallel.tp does not divide, a missing config, an unwritable run directory; plus the launcher's own opt-ins
# (root, oversubscription) and its printed command. (A Slurm task count that differs from MPI's world size:
# tests/slurm/slurm_harness_test.sh.)
#   LCL_BIN=build/launch/lcl tests/slurm/launch_bad_input_test.sh
set -u
here=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/lib/harness.sh
source "$here/tests/lib/harness.sh"
need_lcl
launch=$here/launch/mpirun.sh
export LCL_BIN=$lcl
cd "$tmp" || fail "cd $tmp"
cp "$here/launch/configs/tiny.pbtxt" tiny.pbtxt
sed 's/^\( *\)tp: 1/\1tp: 2/' tiny.pbtxt >tp2.pbtxt
touch not_a_dir

# ---- launch/mpirun.sh: early checks, exit 2, nothing started -----------------------------------------------------
script_case() {  # script_case NAME EXPECTED_MESSAGE mpirun.sh-arguments...
  local name=$1 msg=$2; shift 2
  "$launch" "$@" >out.txt 2>&1; local rc=$?
  check "mpirun.sh: $name: exit 2" test $rc -eq 2
  check "mpirun.sh: $name: says '$msg'" grep -qF -- "$msg" out.txt
  check "mpirun.sh: $name: nothing launched" bash -c '! grep -q "running:" out.txt'
  [ $rc -eq 2 ] || cat out.txt
}
root=(); [ "$(id -u)" -eq 0 ] && root=(--allow-root)
script_case "tp=2 from the config, 3 ranks" "world size 3 does not fit parallel.tp=2" \
  -n 3 "${root[@]}" --oversubscribe -- --config tp2.pbtxt
script_case "tp=2 from --set, 3 ranks" "world size 3 does not fit parallel.tp=2" \
  -n 3 "${root[@]}" --oversubscribe -- --config tiny.pbtxt --set parallel.tp=2
script_case "missing config" "config file 'missing.pbtxt' does not exist" -n 2 "${root[@]}" -- --config missing.pbtxt
script_case "no config" "no --config given" -n 2 "${root[@]}" --
script_case "unwritable run dir" "run directory 'not_a_dir/run' cannot be created or is not writable" \
  -n 2 "${root[@]}" -- --config tiny.pbtxt --run-dir not_a_dir/run
script_case "bad --bind" "--bind must be auto, core, socket or none" -n 2 --bind sideways -- --config tiny.pbtxt
if [ "$(id -u)" -eq 0 ]; then
  script_case "root without --allow-root" "pass --allow-root" -n 2 -- --config tiny.pbtxt
fi
cores=$(lscpu -p=socket,core | grep -v '^#' | sort -u | wc -l)
script_case "more ranks than cores without --oversubscribe" "pass --oversubscribe" \
  -n $((cores * 2 + 2)) "${root[@]}" -- --config tiny.pbtxt

# A good command line is printed in full, with the config and the overrides passed through unchanged.
"$launch" -n 2 "${root[@]}" --container --oversubscribe --dry-run -- --config tiny.pbtxt \
  --set "optimizer.lr=2e-3" --resume auto --run-dir "$tmp/r" >dry.txt 2>&1; rc=$?
check "mpirun.sh --dry-run exits 0" test $rc -eq 0
check "mpirun.sh prints the command with -np 2, the container setting and lcl train's arguments" \
  grep -qE -- "running: .*mpirun -np 2 --oversubscribe .*btl_vader_single_copy_mechanism none .*lcl train --config tiny.pbtxt --set optimizer.lr=2e-3 --resume auto --run-dir $tmp/r" dry.txt
hostfile=$tmp/hosts; printf 'node01 slots=4\nnode02 slots=4\n' >"$hostfile"
"$launch" --hostfile "$hostfile" --ppn 4 "${root[@]}" --dry-run -- --config tp2.pbtxt >dry2.txt 2>&1; rc=$?
check "mpirun.sh with a 2-host hostfile and --ppn 4: 8 ranks, 4 per node" \
  grep -qE -- "running: .*mpirun -np 8 --hostfile $hostfile --map-by ppr:4:node" dry2.txt
[ $rc -eq 0 ] || cat dry2.txt

# ---- lcl train itself under mpirun (no launcher script in front): exit 1, one clear message, no metrics ----------
"$lcl" train --help 2>&1 | grep -q -- "--run-dir" || fail "'$lcl train' is not built: the trainer's own checks cannot run"
"$lcl" data synth --out data/synth --classes 32 --images-per-class 12 --size 64x64 >synth.log 2>&1 || cat synth.log
cut -d' ' -f2- data/synth/LOC_synset_mapping.txt | sed 's/,.*//' >data/class_names.txt
"$lcl" model init --preset tiny --out data/tiny-model --class-names data/class_names.txt >model.log 2>&1 || cat model.log
paths=(--set "model.path=$tmp/data/tiny-model" --set "data.root=$tmp/data/synth" --set schedule.total_steps=2)
train_case() {  # train_case NAME EXPECTED_MESSAGE RUN_DIR lcl-train-arguments...
  local name=$1 msg=$2 run=$3; shift 3
  # shellcheck disable=SC2086
  $mpirun -np 2 "$lcl" train "$@" --run-dir "$run" >out.txt 2>&1; local rc=$?
  check "lcl train: $name: exit 1" test $rc -eq 1
  check "lcl train: $name: says '$msg'" grep -qF -- "$msg" out.txt
  check "lcl train: $name: no training step" test ! -s "$run/metrics.jsonl"
  [ $rc -eq 1 ] || tail -20 out.txt
}
train_case "world size 2, tp=3" "parallel.tp" "$tmp/run-tp" --config tiny.pbtxt "${paths[@]}" --set parallel.tp=3
train_case "missing config" "missing.pbtxt" "$tmp/run-missing" --config missing.pbtxt
train_case "unwritable run dir" "not_a_dir/run" "not_a_dir/run" --config tiny.pbtxt "${paths[@]}"
