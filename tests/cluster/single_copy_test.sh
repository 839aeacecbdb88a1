#!/usr/bin/env bash
# Open MPI's shared-memory single copy (cross-memory attach, CMA) chosen by lcl's ranks (MpiSession::single_copy):
# with nobody choosing, lcl keeps CMA where the kernel allows it and sets `none` where it refuses it (here made by
# no_cma_exec, which refuses process_vm_readv as Docker's default seccomp profile does), so a 2-rank all-reduce of
# large messages runs clean both ways; a choice in the environment is left alone. The last check shows what the
# probe prevents: Open MPI forced onto CMA where it is refused prints a read error per large message.
# Usage: single_copy_test.sh <no_cma_exec>
set -u
no_cma=$1
# shellcheck source=tests/lib/harness.sh
source "$(dirname "$0")/../lib/harness.sh"
need_lcl
# Not the harness's $mpirun: it pins the mechanism, and this test is about leaving it open. tests/run.sh exports it
# for every test, so it is removed from the environment of each run here.
plain=(env -u OMPI_MCA_btl_vader_single_copy_mechanism -u OMPI_MCA_btl_sm_single_copy_mechanism
       mpirun --oversubscribe --allow-run-as-root --bind-to none -np 2)
bench=(bench comm --min-bytes 4M --max-bytes 4M --ops allreduce,reducescatter --rounds 1 --warmup 1)

run() {  # run NAME CMD...: output in $tmp/NAME; 0 when the job exited 0 with every row's data ok
  local name=$1
  shift
  timeout 120 "$@" >"$tmp/$name" 2>&1
  local rc=$?
  sed "s/^/  $name: /" "$tmp/$name"
  [ "$rc" -eq 0 ] && [ "$(grep -c ' ok$' "$tmp/$name")" -eq 2 ]
}

check "refused CMA: the job runs and its data is right" run refused "${plain[@]}" "$no_cma" "$lcl" "${bench[@]}"
check "refused CMA: lcl says it set none and why" \
  grep -q "single copy: none (set by lcl: cross-memory attach is refused here, process_vm_readv: Operation not permitted" \
  "$tmp/refused"
check "refused CMA: no read errors from Open MPI" bash -c "! grep -q 'Read -1' '$tmp/refused'"

check "open choice: the job runs and its data is right" run open "${plain[@]}" "$lcl" "${bench[@]}"
# This machine's kernel decides which; the probe's answer must be one of the two, and no read error may follow it.
check "open choice: lcl names what it kept or set" \
  grep -qE "single copy: (cma \(Open MPI's default; cross-memory attach works here\)|none \(set by lcl: )" "$tmp/open"
check "open choice: no read errors from Open MPI" bash -c "! grep -q 'Read -1' '$tmp/open'"

check "a choice in the environment is kept" run pinned "${plain[@]}" -x OMPI_MCA_btl_vader_single_copy_mechanism=none \
  "$no_cma" "$lcl" "${bench[@]}"
check "a choice in the environment is named as such" \
  grep -q "single copy: none (from the environment, OMPI_MCA_btl_vader_single_copy_mechanism)" "$tmp/pinned"

# Without the probe: CMA forced where it is refused. Open MPI 4.1 reports each failed read (the data of this run may
# still arrive by another path; the check is on the errors a user would see).
timeout 120 "${plain[@]}" -x OMPI_MCA_btl_vader_single_copy_mechanism=cma "$no_cma" "$lcl" "${bench[@]}" \
  >"$tmp/forced" 2>&1
check "forced CMA where it is refused: Open MPI reports the failed reads" grep -q "Read -1, expected" "$tmp/forced"
