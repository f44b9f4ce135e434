# bench/procs.sh: what the benchmark scripts that start their own processes
# share (sourced by bench/scale.sh and bench/links.sh). The caller defines
# die() and keeps the pids of what it started in the array `pids`; each
# process is started with exec in its background subshell, so that its pid
# is the program's own.

# Makes the medium Mixtral preset in $2 with the programs in $1, unless there.
ensure_medium_model() {
    [ -f "$2/config.json" ] && return 0
    echo "bench: making the medium model in $2"
    "$1/moe-mkmodel" --arch mixtral --preset medium --seed 1 --out "$2" >/dev/null
}

# Stops every process in pids (SIGTERM, SIGKILL after 10 s) and empties it.
stop_all() {
    local p
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do
        for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    pids=()
}

# Waits, at most 120 s, for the endpoint file $1 of process $2 (named $3);
# when the process dies first, shows the end of its log (the .ep's .log).
wait_file() {
    for _ in $(seq 1 1200); do
        [ -s "$1" ] && return 0
        if ! kill -0 "$2" 2>/dev/null; then
            tail -n 5 "${1%.ep}.log" >&2 || true
            die "$3 exited before it was ready"
        fi
        sleep 0.1
    done
    die "$3 not ready after 120 s"
}
