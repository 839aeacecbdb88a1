#!/usr/bin/env bash
# Starts `lcl train` (or another lcl subcommand) on N MPI ranks with Open MPI's mpirun, on one node or on the
# nodes of a hostfile, and prints the exact command before running it. docs/launching.md explains every option.
#   launch/mpirun.sh [launcher options] [--] --config FILE.pbtxt [--set a.b=c ...] [--resume auto|PATH] [--run-dir DIR]
# Launcher options:
#   -n, --np N          ranks in all (default: ranks per node x nodes)
#   --ppn N             ranks per node (default: -n / nodes when -n is given, else GPUs on this node, else 1)
#   --hostfile FILE     several nodes: Open MPI hostfile ("node01 slots=8" per line); omit for one node
#   --bind MODE         auto | core | socket | none (default auto: cores split evenly between a node's ranks)
#   --allow-root        let mpirun run as root (Open MPI refuses by default)
#   --container         settings for containers: no cross-memory attach (CMA) for shared-memory copies
#   --oversubscribe     allow more ranks than cores (tests, laptops); binding is then off
#   --subcommand "CMD"  lcl subcommand to start (default: train), e.g. "bench comm"
#   --dry-run           print the command and the checks, do not run it
# Environment: LCL_BIN (default <repo>/build/launch/lcl), MPIRUN (default mpirun), LCL_MPIRUN_ARGS (extra mpirun
# arguments, split on spaces), and the NCCL_* defaults below. Exit status: mpirun's, i.e. lcl's (42 = checkpoint
# committed after SIGTERM/SIGUSR1; see cluster/exit_codes.h); 2 for a usage or pre-launch check error.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
lcl=${LCL_BIN:-$here/build/launch/lcl}
mpirun_bin=${MPIRUN:-mpirun}

die() { echo "mpirun.sh: error: $*" >&2; exit 2; }

np="" ppn="" hostfile="" bind=auto allow_root=0 container=0 oversubscribe=0 subcommand=train dry_run=0
while [ $# -gt 0 ]; do
  case $1 in
    -n|--np) np=${2:?$1 needs a value}; shift ;;
    --ppn) ppn=${2:?--ppn needs a value}; shift ;;
    --hostfile) hostfile=${2:?--hostfile needs a file}; shift ;;
    --bind) bind=${2:?--bind needs a mode}; shift ;;
    --allow-root) allow_root=1 ;;
    --container) container=1 ;;
    --oversubscribe) oversubscribe=1 ;;
    --subcommand) subcommand=${2:?--subcommand needs a value}; shift ;;
    --dry-run) dry_run=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    *) break ;;  # the first argument that is not ours starts lcl's arguments
  esac
  shift
done
lcl_args=("$@")

# ---- checks that fail before any rank starts -------------------------------------------------------------------
[ -x "$lcl" ] || die "lcl binary '$lcl' not found or not executable; build it (launch/setup.sh) or set LCL_BIN"
command -v "$mpirun_bin" >/dev/null || die "'$mpirun_bin' not found; install openmpi-bin (launch/setup.sh)"
for v in "$np" "$ppn"; do
  [ -z "$v" ] || [[ "$v" =~ ^[1-9][0-9]*$ ]] || die "rank counts must be positive integers, got '$v'"
done
case $bind in auto|core|socket|none) ;; *) die "--bind must be auto, core, socket or none, got '$bind'" ;; esac

# Value of an lcl option in lcl_args (last one wins, as in CLI11): opt_value --config
opt_value() {
  local want=$1 val="" i
  for ((i = 0; i < ${#lcl_args[@]}; i++)); do
    case ${lcl_args[i]} in
      "$want") val=${lcl_args[i + 1]:-} ;;
      "$want"=*) val=${lcl_args[i]#*=} ;;
    esac
  done
  printf '%s' "$val"
}

config="" tp=1 run_dir=""
if [ "$subcommand" = train ] || [ "$subcommand" = eval ]; then
  config=$(opt_value --config)
  [ -n "$config" ] || die "no --config given; usage: launch/mpirun.sh -n N -- --config FILE.pbtxt [--set a.b=c ...]"
  [ -f "$config" ] && [ -r "$config" ] || die "config file '$config' does not exist or is not readable"
  # parallel.tp: the last --set wins, else the config's `tp:` inside `parallel { }`, else 1. lcl checks it again
  # with the full parser; this early check only saves starting N ranks to hear it.
  tp=$(awk '
    { sub(/#.*/, "") }
    /parallel[ \t]*:?[ \t]*\{/ { inpar = 1 }
    inpar && match($0, /(^|[ \t{])tp[ \t]*:[ \t]*[0-9]+/) { s = substr($0, RSTART, RLENGTH); sub(/.*:[ \t]*/, "", s); tp = s }
    inpar && /\}/ { inpar = 0 }
    END { print (tp == "" ? 1 : tp) }' "$config")
  for ((i = 0; i < ${#lcl_args[@]}; i++)); do
    a=${lcl_args[i]}
    [ "$a" = --set ] && a=${lcl_args[i + 1]:-}
    case $a in parallel.tp=*|--set=parallel.tp=*) tp=${a##*=} ;; esac
  done
  [[ "$tp" =~ ^[1-9][0-9]*$ ]] || die "parallel.tp must be a positive integer, got '$tp'"
  run_dir=$(opt_value --run-dir)
fi

gpus_here=0
if command -v nvidia-smi >/dev/null 2>&1; then gpus_here=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true); fi
# Physical cores (Open MPI's PE counts cores, not hardware threads).
cores_here=$(lscpu -p=socket,core 2>/dev/null | grep -v '^#' | sort -u | wc -l)
[ "$cores_here" -ge 1 ] || cores_here=$(nproc)
nodes=1
if [ -n "$hostfile" ]; then
  [ -r "$hostfile" ] || die "hostfile '$hostfile' does not exist or is not readable"
  nodes=$(grep -cvE '^[[:space:]]*(#|$)' "$hostfile" || true)
  [ "$nodes" -ge 1 ] || die "hostfile '$hostfile' lists no hosts"
fi
if [ -z "$ppn" ]; then
  if [ -n "$np" ]; then ppn=$(((np + nodes - 1) / nodes))
  elif [ "$gpus_here" -gt 0 ]; then ppn=$gpus_here
  else ppn=1; fi
fi
[ -n "$np" ] || np=$((ppn * nodes))
if [ $((np % tp)) -ne 0 ]; then
  die "world size $np does not fit parallel.tp=$tp (from $config and --set): tp must divide the number of" \
      "ranks; launch a multiple of $tp ranks (-n) or change parallel.tp"
fi
if [ $((ppn % tp)) -ne 0 ] && [ "$np" -gt "$ppn" ]; then
  echo "mpirun.sh: warning: $ppn ranks per node is not a multiple of tp=$tp: TP groups will span nodes (slow)" >&2
fi
if [ "$(id -u)" -eq 0 ] && [ "$allow_root" -eq 0 ]; then
  die "running as root: Open MPI refuses that unless asked; pass --allow-root (containers, CI) or run as a user"
fi
if [ -z "$hostfile" ] && [ -z "${SLURM_JOB_ID:-}" ] && [ "$np" -gt "$cores_here" ] && [ "$oversubscribe" -eq 0 ]; then
  die "$np ranks on $cores_here cores: pass --oversubscribe to allow more ranks than cores (slow; for tests)"
fi
if [ -n "$run_dir" ]; then
  mkdir -p "$run_dir" 2>/dev/null && [ -w "$run_dir" ] ||
    die "run directory '$run_dir' cannot be created or is not writable; pick another --run-dir"
fi

# ---- environment: NCCL and device defaults (only where the user has not set them) --------------------------------
# Each rank uses GPU cuda:<local rank> (the node-local rank from MPI), so every rank sees all of its node's GPUs;
# do not set a per-rank CUDA_VISIBLE_DEVICES. NCCL_DEBUG=WARN puts NCCL's warnings and errors into the rank logs.
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
# Slurm's restart count travels to every rank (metrics record it); 0 outside Slurm or on the first start.
export SLURM_RESTART_COUNT=${SLURM_RESTART_COUNT:-0}

# ---- the mpirun command ---------------------------------------------------------------------------------------
cmd=("$mpirun_bin" -np "$np")
if [ -n "$hostfile" ]; then cmd+=(--hostfile "$hostfile"); fi
if [ "$oversubscribe" -eq 1 ]; then
  cmd+=(--oversubscribe)
  [ "$bind" = auto ] && bind=none  # binding several ranks to one core would serialise them
fi
case $bind in
  auto)
    # One block of cores per rank, ranks filled node by node (contiguous ranks = one TP group on one node).
    # Inside a Slurm allocation the job's CPUs per task are the block; elsewhere the node's cores split evenly.
    pe=${SLURM_CPUS_PER_TASK:-$((cores_here / ppn))}
    if [ "$pe" -ge 1 ]; then cmd+=(--map-by "ppr:$ppn:node:PE=$pe" --bind-to core)
    else cmd+=(--map-by "ppr:$ppn:node" --bind-to none); fi ;;
  core|socket) cmd+=(--map-by "ppr:$ppn:node" --bind-to "$bind") ;;
  none) cmd+=(--map-by "ppr:$ppn:node" --bind-to none) ;;
esac
[ "$allow_root" -eq 1 ] && cmd+=(--allow-run-as-root)
# Containers usually forbid cross-memory attach (ptrace); shared-memory transfers then copy through a buffer.
[ "$container" -eq 1 ] && cmd+=(--mca btl_vader_single_copy_mechanism none)
# Remote ranks get these variables from the launching shell (local ones inherit everything anyway).
for var in $(compgen -e | grep -E '^(LCL_|NCCL_|OMP_|CUDA_VISIBLE_DEVICES$|SLURM_RESTART_COUNT$)' || true); do
  cmd+=(-x "$var")
done
# shellcheck disable=SC2206
[ -n "${LCL_MPIRUN_ARGS:-}" ] && cmd+=(${LCL_MPIRUN_ARGS})
read -r -a sub <<<"$subcommand"
cmd+=("$lcl" "${sub[@]}" "${lcl_args[@]}")

echo "mpirun.sh: $np ranks ($ppn per node, $nodes node(s)), tp=$tp${config:+, config $config}"
echo "mpirun.sh: running: $(printf '%q ' "${cmd[@]}")"
[ "$dry_run" -eq 1 ] && exit 0
exec "${cmd[@]}"
