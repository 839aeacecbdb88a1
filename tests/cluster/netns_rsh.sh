#!/usr/bin/env bash
# Open MPI's remote-shell agent for test hosts that are network namespaces on this machine (plm_rsh_agent):
# "ssh HOST CMD..." becomes: enter HOST's namespace, give it its own hostname, run CMD with a login-like
# environment. Used by tests/cluster/two_host_test.sh.
#   netns_rsh.sh HOSTS_FILE HOST CMD...      HOSTS_FILE lines: "ADDRESS NAMESPACE HOSTNAME"
# Like ssh, the words of CMD are joined with spaces and run by a shell, and the environment is not inherited
# (a login's PATH, HOME and locale only), so the ranks there see only what mpirun forwards, as on a real host.
set -euo pipefail
hosts_file=${1:?usage: netns_rsh.sh HOSTS_FILE HOST CMD...}
host=${2:?usage: netns_rsh.sh HOSTS_FILE HOST CMD...}
shift 2
ns="" name=""
while read -r addr n h; do
  if [ "$addr" = "$host" ] || [ "$h" = "$host" ]; then ns=$n name=$h; fi
done <"$hosts_file"
if [ -z "$ns" ]; then
  echo "netns_rsh.sh: host '$host' is not in $hosts_file (lines: ADDRESS NAMESPACE HOSTNAME)" >&2
  exit 255  # ssh's status for a connection that failed
fi
# unshare --uts: the namespace's own hostname, so Open MPI's per-host session directories and node names differ.
# shellcheck disable=SC2016  # $1 and $* belong to the inner shells
exec ip netns exec "$ns" unshare --uts bash -c 'hostname "$1" && shift && exec env -i HOME="$HOME" LANG=C.UTF-8 \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin bash -c "$*"' netns_rsh "$name" "$@"
