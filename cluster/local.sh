#!/usr/bin/env bash
# A moecluster on this one machine: C coordinators (default 1) and N expert
# nodes as processes, every socket on 127.0.0.1 with a free port, logs and pid files in
# a run directory (so several clusters can run side by side).
#
#   cluster/local.sh up [--model DIR] --nodes N --run-dir D [--coordinators C]
#                       [--placement F | --placement-groups] [--replicas R]
#                       [--threads T] [--node-threads T]
#                       [--max-seqs N] [--queue-limit N] [--kv-memory MB]
#                       [--reply-timeout-ms MS] [--prefill-rows N] [--deadline-ms MS]
#                       [--micro-batches 1|2]  (default 1 here: the processes share cores)
#                       [--heartbeat-ms MS] [--heartbeat-misses N] [--load-half-life-s S]
#                       [--rebalance-every S] [--rebalance-threshold-pct P]
#                       [--rebalance-redundant R] [--move-timeout-ms MS]
#                       [--memory-budget MB] [--place-delay-ms MS]
#                       [--max-tokens-limit N] [--max-requests-per-client N] [--curve]
#                       [--no-preload] [--allow-idle-nodes]
#                       [--http HOST:PORT] [--api-key KEY]
#                       [--dtype auto|float32|bfloat16|float16]
#                       [--quantization none|q8_0|q4_0] [--wire f32|bf16|fp8]
#       Starts the cluster and returns once it is ready, every process having
#       read its weights into memory (--no-preload: read on first use); the
#       last line of stdout is the client endpoint. Without --model, the
#       built-in default model (made once in build/models/default) is used.
#       One `up` at a time per run directory (a lock), and none while a pid
#       file there names a live process (a cluster is running or was left
#       behind: `down` stops it). If a process fails to start, the ones this
#       `up` started are stopped and its last log lines are shown. More nodes
#       than the placement gives work to are refused unless --allow-idle-nodes.
#       --coordinators C: C coordinators over the same nodes (every node
#       serves each; docs/DEPLOY.md, "Several coordinators"), each with its
#       own sequences and client endpoint: coordinator 1's files are
#       coordinator.{pid,log,endpoint,http} as with one, coordinator K's
#       coordinator-K.*; all endpoints are in D/coordinators.endpoints, one a
#       line, and the last line of stdout is them joined by commas (what
#       `moe-client --connect` takes to spread requests over them). With
#       --http HOST:PORT coordinator K serves HOST:PORT+K-1 (port 0: each a
#       free one). Placement changes (add-node, drain-node, rebalancing)
#       need a cluster of one coordinator.
#       --placement-groups: each expert group whole on one node (DeepSeek's
#       group-limited routing; docs/PLACEMENT.md). The placement in use is
#       written to D/placement.txt (a file --placement accepts).
#       --http HOST:PORT: the coordinator also serves the OpenAI-compatible
#       HTTP API there (port 0: a free one; docs/HTTP.md); its URL is printed
#       on the line before the endpoint and written to D/coordinator.http.
#       --api-key KEY: the API's /v1/ routes need "Authorization: Bearer KEY".
#       --dtype and --quantization go to every process (the weights' format:
#       as stored by default; q8_0/q4_0 quantize the linear weights at load).
#       --wire goes to the coordinator: the rows' format to the nodes and back
#       (f32 exact, the default; bf16; fp8; the nodes answer in kind).
#       --curve: every socket uses ZeroMQ CURVE with keys made in D/keys
#       (moe-keygen): coordinator, node-I and client key pairs, the allowed
#       client keys in D/keys/clients, the coordinator's in D/keys/coordinators;
#       a client connects with --curve-key D/keys/client.key
#       --curve-server D/keys/coordinator.pub (docs/DEPLOY.md, "Security").
#   cluster/local.sh restart-node --run-dir D --node N
#       Starts node N again with the arguments and endpoint it had (after it
#       died or was killed; a running one is stopped first) and returns once
#       STATUS of every coordinator shows it up again (bounded by
#       MOE_START_TIMEOUT), so a request right after it can use the node.
#   cluster/local.sh add-node --run-dir D [--redundant R]
#       Starts node N+1 (same model, format and options as the others,
#       hosting nothing), waits until it listens, and has the coordinator take
#       it in (moe-client node add): a rebalance gives it its share while the
#       cluster serves. The last line is the node's number.
#   cluster/local.sh drain-node --run-dir D --node N [--redundant R]
#       Moves every expert of node N to the other nodes while the cluster
#       serves (moe-client node drain N; docs/OPERATIONS.md), then stops node
#       N: no request fails. The node is left out of the cluster from then on
#       (the coordinator keeps it listed, hosting nothing).
#   cluster/local.sh status --run-dir D
#       Each coordinator's endpoint and its `moe-client status` (nodes up or
#       down, sequences, ...); exit 1 when one does not answer.
#   cluster/local.sh down --run-dir D
#       Stops every process of the cluster (TERM, then KILL after 10 s).
#
#   cluster/local.sh --help
#       This text (exit 0).
#
# Environment: MOE_BIN (programs, default build/bin next to this script),
# MOE_START_TIMEOUT (seconds to wait for readiness, default 120),
# OPENBLAS_THREAD_TIMEOUT (default 4 here; the programs keep OpenBLAS at one
# thread, docs/ARCHITECTURE.md "Sharing the cores", so it matters only to
# programs built before that).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
bin=${MOE_BIN:-$root/build/bin}
start_timeout=${MOE_START_TIMEOUT:-120}

die() { echo "local.sh: $*" >&2; exit 1; }
# The comment at the top of this file: on stdout with exit 0 (--help), or on
# stderr with exit 2 (a usage error).
usage() {
    local code=${1:-2} text
    text=$(sed -n '2,/^set -/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//')
    if [ "$code" -eq 0 ]; then echo "$text"; else echo "$text" >&2; fi
    exit "$code"
}

# Takes the lock of run directory $1 for the rest of this script (fd in
# lock_fd; the processes started close it, so it ends with the script).
# $2: "now" to refuse at once when another local.sh holds it, else the
# seconds to wait for it.
lock_run_dir() {
    local dir=$1 wait=$2
    exec {lock_fd}>"$dir/.lock"
    if [ "$wait" = now ]; then
        flock -n "$lock_fd" ||
            die "another local.sh is starting or stopping the cluster in $dir; nothing started"
    else
        flock -w "$wait" "$lock_fd" ||
            die "another local.sh still holds $dir after ${wait}s"
    fi
}

# True while process $1 runs. A process that has exited but is not yet
# reaped (a zombie) has stopped: our processes outlive this script, so their
# parent is init, and some inits (container supervisors) reap only every few
# seconds, which `kill -0` alone would wait out.
running() {
    kill -0 "$1" 2>/dev/null || return 1
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

# True when pid file $1 names a live process of this project (a pid that a
# new process reused is not ours).
pid_alive() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] && running "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'moe-'
}

# Stops the processes $@ (pids), politely then firmly, and waits for them.
stop_pids() {
    local pid waited
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        waited=0
        while running "$pid" && [ "$waited" -lt 100 ]; do
            sleep 0.1
            waited=$((waited + 1))
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
}

# Stops the processes whose pid files are in $1 and removes the files.
stop_all() {
    local dir=$1 pidfile pids=()
    for pidfile in "$dir"/expert-*.pid "$dir"/coordinator.pid "$dir"/coordinator-*.pid; do
        [ -f "$pidfile" ] || continue
        pid_alive "$pidfile" && pids+=("$(cat "$pidfile")")
    done
    stop_pids ${pids[@]+"${pids[@]}"}
    rm -f "$dir"/expert-*.pid "$dir"/coordinator.pid "$dir"/coordinator-*.pid
}

# The file name (without suffix) of coordinator $1: "coordinator" for the
# first, as in a cluster of one, "coordinator-K" for the others.
coord_name() {
    if [ "$1" -eq 1 ]; then echo coordinator; else echo "coordinator-$1"; fi
}

# Sets coords to the names of the cluster's coordinators in $1 (from
# coordinators.endpoints, or the one coordinator of an older run directory).
coord_names() {
    local n=1 k
    coords=()
    if [ -s "$1/coordinators.endpoints" ]; then
        n=$(grep -c . "$1/coordinators.endpoints")
    fi
    for k in $(seq 1 "$n"); do coords+=("$(coord_name "$k")"); done
}

# Sets client to a moe-client command line for coordinator file name $2 of
# the cluster in $1 (CURVE keys when it has them); $3: --timeout seconds.
client_for() {
    client=("$bin/moe-client" --timeout "$3" --connect "$(cat "$1/$2.endpoint")")
    [ ! -d "$1/keys" ] ||
        client+=(--curve-key "$1/keys/client.key" --curve-server "$1/keys/coordinator.pub")
}

# Refuses a placement change ($2: what) in a cluster of several
# coordinators: one coordinator's moves would change what the others route
# to (docs/OPERATIONS.md, "Several coordinators").
one_coordinator_only() {
    local coords
    coord_names "$1"
    [ ${#coords[@]} -le 1 ] ||
        die "$2 needs a cluster of one coordinator; $1 has ${#coords[@]} (docs/OPERATIONS.md)"
}

# Makes the CURVE keys of a cluster of $2 nodes in $1/keys (a fresh set).
make_keys() {
    local dir=$1 nodes=$2 keys=$1/keys i names=(--name coordinator --name client)
    for i in $(seq 1 "$nodes"); do names+=(--name "node-$i"); done
    rm -rf "$keys"
    "$bin/moe-keygen" --out "$keys" "${names[@]}" >/dev/null
    mkdir -p "$keys/clients" "$keys/coordinators"
    cp "$keys/client.pub" "$keys/clients/"
    cp "$keys/coordinator.pub" "$keys/coordinators/"
}

# Sets node_curve to the CURVE options of node $2 when the cluster in $1
# has keys (else to none).
node_curve_args() {
    node_curve=()
    [ -d "$1/keys" ] || return 0
    node_curve=(--curve-key "$1/keys/node-$2.key" --curve-coordinators "$1/keys/coordinators")
}

# The pids this `up` started: on any failure (or interrupt) before the
# cluster is ready, exactly these are stopped, never processes of another
# invocation.
started=()
up_ready=""
run_dir=""
on_up_exit() {
    [ -z "$up_ready" ] || return 0
    [ ${#started[@]} -eq 0 ] || stop_pids "${started[@]}"
    rm -f "$run_dir"/*.pid "$run_dir"/*.endpoint # all this up's: it holds the lock
}

# Fails the start: shows the log of the process that died; the exit trap
# stops what this `up` started.
fail_start() {
    local dir=$1 name=$2 why=$3
    echo "local.sh: $name $why; last lines of $dir/$name.log:" >&2
    tail -n 20 "$dir/$name.log" >&2 || true
    exit 1
}

# Waits for the endpoint file of process $2 (pid $3), bounded.
wait_ready() {
    local dir=$1 name=$2 pid=$3 deadline=$((SECONDS + start_timeout))
    while [ ! -s "$dir/$name.endpoint" ]; do
        running "$pid" || fail_start "$dir" "$name" "exited during start"
        [ "$SECONDS" -lt "$deadline" ] || fail_start "$dir" "$name" "not ready after ${start_timeout}s"
        sleep 0.05
    done
}

cmd_up() {
    local http="" model="" nodes="" dir="" placement="" n_coords=1 groups="" replicas=1 threads="" node_threads=""
    local curve="" preload=(--preload) allow_idle=""
    local coord_args=() format_args=() node_extra=()
    # The processes of a local cluster share this machine's cores, so a
    # second micro-batch has no idle core to run on and only makes each node
    # read its experts twice per layer: 1 unless asked (moe-coordinator's
    # default, 2, is for nodes with cores of their own).
    local micro_batches=1
    while [ $# -gt 0 ]; do
        case $1 in
            --model) model=$2; shift 2 ;;
            --nodes) nodes=$2; shift 2 ;;
            --coordinators) n_coords=$2; shift 2 ;;
            --run-dir) dir=$2; shift 2 ;;
            --placement) placement=$2; shift 2 ;;
            --placement-groups) groups=1; shift ;;
            --replicas) replicas=$2; shift 2 ;;
            --threads) threads=$2; shift 2 ;;
            --node-threads) node_threads=$2; shift 2 ;;
            --curve) curve=1; shift ;;
            --no-preload) preload=(); shift ;;
            --allow-idle-nodes) allow_idle=1; shift ;;
            --dtype|--quantization) format_args+=("$1" "$2"); shift 2 ;;
            --memory-budget|--place-delay-ms) node_extra+=("$1" "$2"); shift 2 ;;
            --max-seqs|--queue-limit|--kv-memory|--reply-timeout-ms|--prefill-rows|--deadline-ms|\
            --heartbeat-ms|--heartbeat-misses|--max-tokens-limit|--max-requests-per-client|\
            --load-half-life-s|--rebalance-every|--rebalance-threshold-pct|\
            --rebalance-redundant|--move-timeout-ms|--wire)
                coord_args+=("$1" "$2"); shift 2 ;;
            --micro-batches) micro_batches=$2; shift 2 ;;
            --http) http=$2; shift 2 ;;
            --api-key) coord_args+=(--api-key "$2"); shift 2 ;;
            -h|--help) usage 0 ;;
            *) die "unknown option '$1' (see --help)" ;;
        esac
    done
    [ -n "$nodes" ] && [ -n "$dir" ] || die "up needs --nodes N and --run-dir D"
    coord_args+=(--micro-batches "$micro_batches")
    [[ "$nodes" =~ ^[1-9][0-9]*$ ]] || die "--nodes must be a positive integer (got '$nodes')"
    [[ "$n_coords" =~ ^[1-9][0-9]?$ ]] ||
        die "--coordinators must be an integer from 1 to 99 (got '$n_coords')"
    local http_host="" http_port=""
    if [ -n "$http" ] && [ "$n_coords" -gt 1 ]; then
        http_host=${http%:*}
        http_port=${http##*:}
        [[ "$http_port" =~ ^[0-9]+$ ]] && [ "$http_port" -lt 65536 ] ||
            die "--http needs HOST:PORT with a numeric port for several coordinators (got '$http')"
    fi
    [ -z "$placement" ] || [ -z "$groups" ] || die "give --placement or --placement-groups, not both"
    for p in moe-expert moe-coordinator; do
        [ -x "$bin/$p" ] || die "$bin/$p is missing: run make first"
    done
    if [ -z "$model" ]; then
        model=$root/build/models/default
        [ -f "$model/config.json" ] ||
            "$bin/moe-mkmodel" --arch mixtral --preset small --seed 1 --out "$model" >&2
    fi
    [ -f "$model/config.json" ] || die "no model at $model (config.json missing)"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    # Held until this script ends: a second `up` (or a `down`) on the same
    # directory cannot overwrite the pid files of this one.
    lock_run_dir "$dir" now
    local pidfile live=()
    for pidfile in "$dir"/*.pid; do
        [ -f "$pidfile" ] || continue
        pid_alive "$pidfile" && live+=("$(basename "$pidfile" .pid) (pid $(cat "$pidfile"))")
    done
    if [ ${#live[@]} -gt 0 ]; then
        die "processes of a cluster are still running in $dir: ${live[*]}; stop them with" \
            "local.sh down --run-dir $dir"
    fi
    run_dir=$dir
    trap on_up_exit EXIT
    trap 'exit 130' INT TERM # through the EXIT trap
    rm -f "$dir"/*.endpoint "$dir"/*.pid "$dir"/coordinator*.http "$dir/coordinators.endpoints"
    rm -rf "$dir/keys"
    if [ -n "$curve" ]; then
        [ -x "$bin/moe-keygen" ] || die "$bin/moe-keygen is missing: run make first"
        make_keys "$dir" "$nodes"
        coord_args+=(--curve-key "$dir/keys/coordinator.key" --curve-nodes "$dir/keys"
                     --curve-clients "$dir/keys/clients")
    fi

    # Every process may use every core: the coordinator computes while the
    # nodes wait and the other way round, and a node often works alone (both
    # of a token's experts on it). What makes that work is that idle OpenBLAS
    # threads sleep at once instead of spinning for ~0.1 s and taking the
    # cores another process needs (measured in docs/PERFORMANCE.md: decode
    # 0.65 -> 0.89 of single-process speed with 2 nodes on 2 cores).
    local cores
    cores=$(nproc)
    [ -n "$threads" ] || threads=$cores
    [ -n "$node_threads" ] || node_threads=$cores
    export OPENBLAS_THREAD_TIMEOUT=${OPENBLAS_THREAD_TIMEOUT:-4}

    local place_args=() i
    if [ -n "$placement" ]; then
        place_args=(--placement "$placement")
    elif [ -n "$groups" ]; then
        place_args=(--placement-groups --replicas "$replicas")
    else
        place_args=(--replicas "$replicas")
    fi
    # The placement every process will use, for the user to read (or edit and
    # pass back with --placement); a placement the model refuses stops here.
    local why
    if ! why=$("$bin/moe-expert" --model "$model" --nodes "$nodes" "${place_args[@]}" \
               --print-placement 2>&1 >"$dir/placement.txt"); then
        rm -f "$dir/placement.txt"
        die "the placement failed, nothing started: $why"
    fi
    # A node the placement gives nothing would only take memory and a port.
    local idle=()
    for i in $(seq 1 "$nodes"); do
        grep -q "^node $i " "$dir/placement.txt" || idle+=("$i")
    done
    if [ ${#idle[@]} -gt 0 ] && [ -z "$allow_idle" ]; then
        die "node(s) ${idle[*]} of $nodes would host no expert (the model has" \
            "$(grep -o '[0-9]* experts' "$dir/placement.txt" | head -n 1) per layer); use" \
            "fewer nodes, --replicas, or --allow-idle-nodes; nothing started"
    fi
    for i in $(seq 1 "$nodes"); do
        # The arguments, one a line, for restart-node (CURVE keys included).
        node_curve_args "$dir" "$i"
        printf '%s\n' --model "$model" --node-id "$i" --nodes "$nodes" "${place_args[@]}" \
            --threads "$node_threads" --endpoint-file "$dir/expert-$i.endpoint" \
            ${preload[@]+"${preload[@]}"} ${node_curve[@]+"${node_curve[@]}"} \
            ${format_args[@]+"${format_args[@]}"} ${node_extra[@]+"${node_extra[@]}"} \
            >"$dir/expert-$i.args"
        start_node "$dir" "$i"
        started+=("$(cat "$dir/expert-$i.pid")")
    done
    local node_args=()
    for i in $(seq 1 "$nodes"); do
        wait_ready "$dir" "expert-$i" "$(cat "$dir/expert-$i.pid")"
        node_args+=(--node "$(cat "$dir/expert-$i.endpoint")")
    done
    # The coordinators start together (each loads its own dense weights) and
    # are waited for in turn.
    local k name http_args pids=() endpoints=()
    for k in $(seq 1 "$n_coords"); do
        name=$(coord_name "$k")
        http_args=()
        if [ -n "$http" ]; then
            local at=$http
            [ "$n_coords" -eq 1 ] || [ "$http_port" -eq 0 ] ||
                at=$http_host:$((http_port + k - 1))
            http_args=(--http "$at" --http-url-file "$dir/$name.http")
        fi
        "$bin/moe-coordinator" --model "$model" "${node_args[@]}" "${place_args[@]}" \
            --threads "$threads" --endpoint-file "$dir/$name.endpoint" \
            ${preload[@]+"${preload[@]}"} ${coord_args[@]+"${coord_args[@]}"} \
            ${http_args[@]+"${http_args[@]}"} ${format_args[@]+"${format_args[@]}"} \
            </dev/null >"$dir/$name.log" 2>&1 {lock_fd}>&- &
        echo $! >"$dir/$name.pid"
        started+=("$!")
        pids+=("$!")
    done
    for k in $(seq 1 "$n_coords"); do
        name=$(coord_name "$k")
        wait_ready "$dir" "$name" "${pids[$((k - 1))]}"
        endpoints+=("$(cat "$dir/$name.endpoint")")
    done
    printf '%s\n' "${endpoints[@]}" >"$dir/coordinators.endpoints"
    up_ready=1
    if [ "$n_coords" -eq 1 ]; then
        echo "local.sh: cluster of $nodes node(s) ready; logs in $dir"
    else
        echo "local.sh: cluster of $n_coords coordinators and $nodes node(s) ready; logs in $dir"
        for k in $(seq 1 "$n_coords"); do
            echo "local.sh: coordinator $k at ${endpoints[$((k - 1))]}"
        done
    fi
    if [ -n "$http" ]; then
        for k in $(seq 1 "$n_coords"); do
            echo "local.sh: OpenAI-compatible API at $(cat "$dir/$(coord_name "$k").http")/v1"
        done
    fi
    local IFS=,
    echo "${endpoints[*]}"
}

# Starts node $2 of the cluster in $1 from its expert-N.args (plus --bind to
# its old endpoint when it had one), in the background.
start_node() {
    local dir=$1 i=$2 args=()
    mapfile -t args <"$dir/expert-$i.args"
    if [ -s "$dir/expert-$i.endpoint" ]; then
        args+=(--bind "$(cat "$dir/expert-$i.endpoint")")
        rm -f "$dir/expert-$i.endpoint"
    fi
    "$bin/moe-expert" "${args[@]}" </dev/null >>"$dir/expert-$i.log" 2>&1 {lock_fd}>&- &
    echo $! >"$dir/expert-$i.pid"
}

cmd_restart_node() {
    local dir="" node="" pid endpoint
    while [ $# -gt 0 ]; do
        case $1 in
            --run-dir) dir=$2; shift 2 ;;
            --node) node=$2; shift 2 ;;
            -h|--help) usage 0 ;;
            *) die "unknown option '$1' (see --help)" ;;
        esac
    done
    [ -n "$dir" ] && [ -n "$node" ] || die "restart-node needs --run-dir D and --node N"
    [ -f "$dir/expert-$node.args" ] || die "no node $node in $dir (no expert-$node.args)"
    [ -s "$dir/expert-$node.endpoint" ] || die "node $node in $dir has no endpoint file"
    [ -s "$dir/coordinator.endpoint" ] || die "no coordinator in $dir (no coordinator.endpoint)"
    lock_run_dir "$dir" now
    endpoint=$(cat "$dir/expert-$node.endpoint")
    ! pid_alive "$dir/expert-$node.pid" || stop_pids "$(cat "$dir/expert-$node.pid")"
    echo "local.sh: restarting node $node at $endpoint" >>"$dir/expert-$node.log"
    # ZeroMQ binds TCP with SO_REUSEADDR, so the old port is free at once even
    # with connections of the dead process in TIME_WAIT.
    start_node "$dir" "$node"
    pid=$(cat "$dir/expert-$node.pid")
    # Ready means every coordinator has taken the node back (its STATUS
    # shows it up), not only that the node listens: each reconnects on its
    # own schedule (heartbeats, docs/OPERATIONS.md).
    local deadline=$((SECONDS + start_timeout)) why="" coords client
    coord_names "$dir"
    while ! node_up_everywhere "$dir" "$node" "${coords[@]}"; do
        if ! running "$pid"; then
            why="exited"
        elif [ "$SECONDS" -ge "$deadline" ]; then
            why="was not taken back by the coordinator within ${start_timeout}s"
        fi
        if [ -n "$why" ]; then
            stop_pids "$pid"
            echo "$endpoint" >"$dir/expert-$node.endpoint" # for another try
            echo "local.sh: node $node $why; last lines of $dir/expert-$node.log:" >&2
            tail -n 20 "$dir/expert-$node.log" >&2 || true
            exit 1
        fi
        sleep 0.1
    done
    echo "local.sh: node $node is back at $endpoint and up in the coordinator's status"
}

# True when the STATUS of every coordinator (names $3...) of the cluster in
# $1 shows node $2 up.
node_up_everywhere() {
    local dir=$1 node=$2 name client
    shift 2
    for name in "$@"; do
        client_for "$dir" "$name" 5
        node_up "$node" "${client[@]}" || return 1
    done
}

# True when `moe-client ... status` (the command in $2...) shows node $1 up.
node_up() {
    local node=$1
    shift
    "$@" status 2>/dev/null | awk -v n="$node" '$1 == n && $2 == "up" { found = 1 }
        END { exit !found }'
}

cmd_add_node() {
    local dir="" redundant=0 n i args=()
    while [ $# -gt 0 ]; do
        case $1 in
            --run-dir) dir=$2; shift 2 ;;
            --redundant) redundant=$2; shift 2 ;;
            -h|--help) usage 0 ;;
            *) die "unknown option '$1' (see --help)" ;;
        esac
    done
    [ -n "$dir" ] || die "add-node needs --run-dir D"
    [ -s "$dir/coordinator.endpoint" ] || die "no coordinator in $dir (no coordinator.endpoint)"
    [ -f "$dir/expert-1.args" ] || die "no node in $dir (no expert-1.args)"
    [ ! -d "$dir/keys" ] || die "adding a node to a --curve cluster is not supported yet"
    one_coordinator_only "$dir" add-node
    lock_run_dir "$dir" now
    n=1
    while [ -f "$dir/expert-$n.args" ]; do n=$((n + 1)); done
    # Node 1's arguments, but for node n, hosting nothing at start.
    mapfile -t args <"$dir/expert-1.args"
    local out=() skip=""
    for i in "${args[@]}"; do
        if [ -n "$skip" ]; then skip=""; continue; fi
        case $i in
            --node-id|--nodes|--placement|--replicas|--endpoint-file) skip=1 ;;
            --placement-groups) ;;
            *) out+=("$i") ;;
        esac
    done
    printf '%s\n' "${out[@]}" --node-id "$n" --nodes "$n" --empty \
        --endpoint-file "$dir/expert-$n.endpoint" >"$dir/expert-$n.args"
    start_node "$dir" "$n"
    local pid
    pid=$(cat "$dir/expert-$n.pid")
    local deadline=$((SECONDS + start_timeout))
    while [ ! -s "$dir/expert-$n.endpoint" ]; do
        if ! running "$pid" || [ "$SECONDS" -ge "$deadline" ]; then
            stop_pids "$pid"
            rm -f "$dir/expert-$n.args" "$dir/expert-$n.pid"
            echo "local.sh: node $n did not start; last lines of $dir/expert-$n.log:" >&2
            tail -n 20 "$dir/expert-$n.log" >&2 || true
            exit 1
        fi
        sleep 0.05
    done
    if ! "$bin/moe-client" --timeout "$start_timeout" --connect "$(cat "$dir/coordinator.endpoint")" \
            node add "$(cat "$dir/expert-$n.endpoint")" --redundant "$redundant"; then
        stop_pids "$pid"
        rm -f "$dir/expert-$n.args" "$dir/expert-$n.pid" "$dir/expert-$n.endpoint"
        die "node $n was not added (stopped again); see $dir/coordinator.log"
    fi
    echo "local.sh: node $n added"
    echo "$n"
}

cmd_drain_node() {
    local dir="" node="" redundant=0
    while [ $# -gt 0 ]; do
        case $1 in
            --run-dir) dir=$2; shift 2 ;;
            --node) node=$2; shift 2 ;;
            --redundant) redundant=$2; shift 2 ;;
            -h|--help) usage 0 ;;
            *) die "unknown option '$1' (see --help)" ;;
        esac
    done
    [ -n "$dir" ] && [ -n "$node" ] || die "drain-node needs --run-dir D and --node N"
    [[ "$node" =~ ^[1-9][0-9]*$ ]] || die "--node must be a node id (got '$node')"
    [ -f "$dir/expert-$node.args" ] || die "no node $node in $dir (no expert-$node.args)"
    [ -s "$dir/coordinator.endpoint" ] || die "no coordinator in $dir (no coordinator.endpoint)"
    one_coordinator_only "$dir" drain-node
    lock_run_dir "$dir" now
    local client=("$bin/moe-client" --timeout "$start_timeout"
        --connect "$(cat "$dir/coordinator.endpoint")")
    [ ! -d "$dir/keys" ] ||
        client+=(--curve-key "$dir/keys/client.key" --curve-server "$dir/keys/coordinator.pub")
    # The experts move first; only then is the node stopped, so no request
    # needs it when it goes.
    "${client[@]}" node drain "$node" --redundant "$redundant" ||
        die "node $node was not drained (it is still serving); see $dir/coordinator.log"
    if pid_alive "$dir/expert-$node.pid"; then
        stop_pids "$(cat "$dir/expert-$node.pid")"
    fi
    rm -f "$dir/expert-$node.pid"
    echo "local.sh: node $node drained and stopped"
}

cmd_status() {
    local dir="" coords client name rc=0
    while [ $# -gt 0 ]; do
        case $1 in
            --run-dir) dir=$2; shift 2 ;;
            -h|--help) usage 0 ;;
            *) die "unknown option '$1' (see --help)" ;;
        esac
    done
    [ -n "$dir" ] || die "status needs --run-dir D"
    [ -s "$dir/coordinator.endpoint" ] || die "no coordinator in $dir (no coordinator.endpoint)"
    coord_names "$dir"
    for name in "${coords[@]}"; do
        echo "== $name at $(cat "$dir/$name.endpoint" 2>/dev/null || echo '(no endpoint)')"
        if [ -s "$dir/$name.endpoint" ]; then
            client_for "$dir" "$name" 5
            "${client[@]}" status || rc=1
        else
            rc=1
        fi
    done
    return "$rc"
}

cmd_down() {
    local dir=""
    while [ $# -gt 0 ]; do
        case $1 in
            --run-dir) dir=$2; shift 2 ;;
            -h|--help) usage 0 ;;
            *) die "unknown option '$1' (see --help)" ;;
        esac
    done
    [ -n "$dir" ] || die "down needs --run-dir D"
    [ -d "$dir" ] || exit 0
    # After an `up` in progress, which stops what it started if it fails.
    lock_run_dir "$dir" $((start_timeout + 30))
    stop_all "$dir"
    rm -f "$dir"/*.endpoint
}

[ $# -gt 0 ] || usage
command=$1
shift
case $command in
    up) cmd_up "$@" ;;
    restart-node) cmd_restart_node "$@" ;;
    drain-node) cmd_drain_node "$@" ;;
    add-node) cmd_add_node "$@" ;;
    status) cmd_status "$@" ;;
    down) cmd_down "$@" ;;
    -h|--help) usage 0 ;;
    *) die "unknown command '$command' (up, restart-node, add-node, drain-node, status, down)" ;;
esac
