#!/usr/bin/env bash
# The lcl command line: --version, --help on every subcommand, usage errors, typed errors with one clear message,
# bench comm under mpirun with --json, and a Slurm task count that does not match MPI's world.
set -u
# shellcheck source=tests/lib/harness.sh
source "$(dirname "$0")/lib/harness.sh"
need_lcl

"$lcl" --version >"$tmp/v" 2>&1; rc=$?
check "version exits 0" test $rc -eq 0
for key in "LibTorch: " "MPI: Open MPI" "malloc: " "NCCL: " "optional parts: " "(git "; do
  check "version names '$key'" grep -qF "$key" "$tmp/v"
done
# Built with tcmalloc (where libgoogle-perftools-dev was found), the process really runs on it.
if ldd "$lcl" | grep -q libtcmalloc; then
  check "a tcmalloc build runs on tcmalloc" grep -qF "malloc: tcmalloc (gperftools" "$tmp/v"
fi

for cmd in "train" "eval" "data synth" "data index" "data neighbors" "data episodes" "model init" \
           "model export-hf" "ckpt list" "ckpt verify" "ckpt inspect" "bench comm" "bench data" \
           "bench model" "bench train" "bench ckpt"; do
  # shellcheck disable=SC2086
  "$lcl" $cmd --help >"$tmp/h" 2>&1; rc=$?
  check "'$cmd --help' exits 0 with usage" test $rc -eq 0 -a -s "$tmp/h"
done

"$lcl" no-such-command >"$tmp/u" 2>&1; rc=$?
check "unknown subcommand is a usage error (exit 2)" test $rc -eq 2
check "...naming the word and the choices" grep -qF "unknown subcommand 'no-such-command' of 'lcl' (one of: train, eval" "$tmp/u"
"$lcl" ckpt lst "$tmp" >"$tmp/u" 2>&1; rc=$?
check "unknown nested subcommand names it and its parent" \
  test $rc -eq 2 -a -n "$(grep -lF "unknown subcommand 'lst' of 'lcl ckpt' (one of: list, verify, inspect)" "$tmp/u")"

"$lcl" ckpt list "$tmp/no-such-run" >"$tmp/e" 2>&1; rc=$?
check "ckpt list of a missing run dir exits 1 and says so" \
  test $rc -eq 1 -a -n "$(grep -lF "run directory '$tmp/no-such-run' does not exist" "$tmp/e")"
# Every shipped config resolves (the paper's lcl_7b with the official recipe's fields filled in).
for conf in "$LCL_SOURCE_DIR"/launch/configs/*.pbtxt; do
  "$lcl" train --config "$conf" --print-config >"$tmp/p" 2>&1; rc=$?
  check "$(basename "$conf") resolves with --print-config" test $rc -eq 0
done
"$lcl" train --config "$LCL_SOURCE_DIR/launch/configs/lcl_7b.pbtxt" --print-config >"$tmp/p" 2>&1
for field in 'loss_on: "final"' 'prompt_layout: "official"' 'draw_with_replacement: true' 'pad_color: "white"' \
             'shot: 16' 'lr: 2e-05' 'warmup_ratio: 0.03' 'precision: "bf16"' 'activation_checkpointing: true'; do
  check "lcl_7b.pbtxt resolves $field" grep -qF "$field" "$tmp/p"
done
"$lcl" train --config "$LCL_SOURCE_DIR/launch/configs/lcl_7b_mix.pbtxt" --print-config >"$tmp/p" 2>&1
for field in 'mix_weights: "0.5"' 'mix_files: "/data/llava/llava_instruct_150k.json"' 'loss_on: "final"' \
             'mix_system: "A chat between a curious user'; do
  check "lcl_7b_mix.pbtxt resolves $field" grep -qF "$field" "$tmp/p"
done
mkdir -p "$tmp/confdir"
"$lcl" train --config "$tmp/confdir" --print-config >"$tmp/e" 2>&1; rc=$?
check "a directory as --config exits 1 and says so" \
  test $rc -eq 1 -a -n "$(grep -lF "config file '$tmp/confdir' is a directory" "$tmp/e")"
: >"$tmp/empty.pbtxt"
"$lcl" train --config "$tmp/empty.pbtxt" --run-dir "" --print-config >"$tmp/e" 2>&1; rc=$?
check "an empty --run-dir exits 1 and says so" test $rc -eq 1 -a -n "$(grep -lF -- "--run-dir is empty" "$tmp/e")"
"$lcl" eval --config "$tmp/empty.pbtxt" --checkpoint "$tmp/no-such-step" >"$tmp/e" 2>&1; rc=$?
check "eval --checkpoint of a missing step names --checkpoint, not --resume" \
  test $rc -eq 1 -a -n "$(grep -lF -- "--checkpoint $tmp/no-such-step: not a complete checkpoint" "$tmp/e")" \
  -a -z "$(grep -lF -- "--resume" "$tmp/e")"

"$lcl" bench comm --min-bytes potato >"$tmp/e" 2>&1; rc=$?
check "bad size exits 1" test $rc -eq 1
check "bad size message names the option and the fix" grep -qF "config error: --min-bytes: 'potato' is not a size; write e.g." "$tmp/e"
check "one line of error" test "$(wc -l <"$tmp/e")" -eq 1

# srun without --mpi=pmix: each task is a 1-rank world while Slurm says 2 tasks.
SLURM_NTASKS=2 "$lcl" bench comm --max-bytes 1K >"$tmp/s" 2>&1; rc=$?
check "Slurm/MPI world mismatch exits 1" test $rc -eq 1
check "Slurm/MPI mismatch mentions PMIx" grep -qF -- "--mpi=pmix" "$tmp/s"

# shellcheck disable=SC2086
$mpirun -np 2 "$lcl" bench comm --min-bytes 1K --max-bytes 64K --json >"$tmp/j" 2>"$tmp/j.err"; rc=$?
check "bench comm --json on 2 ranks exits 0" test $rc -eq 0
check "bench comm --json prints 21 measurements" test "$(grep -c '^{' "$tmp/j")" -eq 21
check "every JSON line has name, value, unit, reference, ratio, config" python3 - "$tmp/j" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
assert rows
for r in rows:
    for k in ("name", "value", "unit", "reference", "ratio", "config"):
        assert k in r, (k, r)
    assert r["value"] > 0 and r["reference"] > 0
    assert abs(r["ratio"] - r["value"] / r["reference"]) < 1e-3 * max(1, r["ratio"]), r
PY
