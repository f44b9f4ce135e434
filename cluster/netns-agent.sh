#!/usr/bin/env bash
# Open MPI's remote-start agent for the test hosts of cluster/netns.sh, used
# in place of ssh:  mpirun --mca plm_rsh_agent cluster/netns-agent.sh
#                          -H moe-T-h1,moe-T-h2 ...
# Open MPI calls it as ssh: [options] HOST COMMAND...; it runs COMMAND on that
# host, i.e. in the network namespace named HOST, with its own host name (a
# UTS namespace), so that every test host also looks like a host of its own.
set -euo pipefail
while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do
    shift # ssh options Open MPI may pass (-x, -o ...): meaningless here
done
[ $# -ge 2 ] || { echo "netns-agent.sh: usage: netns-agent.sh HOST COMMAND..." >&2; exit 2; }
host=$1
shift
exec ip netns exec "$host" unshare --uts /bin/sh -c "hostname '$host' && $*"
