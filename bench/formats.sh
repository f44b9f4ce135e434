#!/usr/bin/env bash
# make bench-formats: issue 12's comparison of weight formats, in one run, on
# the medium Mixtral preset at one thread count, against llama.cpp on the same
# weights (set up once by `make bench-peers`; see docs/PERFORMANCE.md):
#   speed     decode and prefill tokens/s of moe-run (bench-core) in float32,
#             bfloat16, q8_0, q4_0 against llama.cpp in F32, F16, Q8_0, Q4_0
#             (its defaults, the thread shim), their ratios, and decode as a
#             fraction of the machine's read bandwidth for the format's bytes
#   accuracy  logits of a fixed prompt, q8_0 and q4_0 against float32: mean KL
#             and top-1 agreement, ours and llama.cpp's (bench-logit-diff)
#   cluster   coordinator + 2 expert nodes (cluster/local.sh) in q4_0 against
#             the single process in q4_0 (bench-cluster)
#
#   bench/formats.sh BIN_DIR
#
# Environment (defaults in brackets):
#   BENCH_THREADS [2]       threads of every process (cluster: each process)
#   BENCH_REPEAT [5]        timed repetitions, each figure a median (moe-run,
#                           llama.cpp and the cluster alike), after a warm-up
#   BENCH_PROMPT_LEN [128]  prompt tokens of a prefill
#   BENCH_DECODE [64]       decoded tokens of a decode
#   BENCH_ACC_LEN [128]     tokens of the accuracy prompt
#   BENCH_PARTS ["speed accuracy cluster"]   which parts run
#   BENCH_FORMATS ["float32 bfloat16 q8_0 q4_0"]   formats of the speed part
#   BENCH_CLUSTER_FORMAT [q4_0]   format of the cluster part
#   BENCH_LLAMA_ARGS []     more options of run.mjs --bench (e.g. --wait-idle 5)
# Rows this build cannot run (no --quantization / --dtype option yet) say
# "not supported by this build"; llama.cpp's columns say what is missing when
# the peer is not set up. Logs and logit files: build/run/bench-formats/.
set -euo pipefail
bin=${1:?usage: bench/formats.sh BIN_DIR}
bin=$(cd "$bin" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
threads=${BENCH_THREADS:-2}
repeat=${BENCH_REPEAT:-5}
prompt_len=${BENCH_PROMPT_LEN:-128}
decode=${BENCH_DECODE:-64}
acc_len=${BENCH_ACC_LEN:-128}
parts=${BENCH_PARTS:-speed accuracy cluster}
formats=${BENCH_FORMATS:-float32 bfloat16 q8_0 q4_0}
cluster_format=${BENCH_CLUSTER_FORMAT:-q4_0}
llama_args=${BENCH_LLAMA_ARGS:-}
model=$root/build/models/mixtral-medium
peers=$root/build/peers
gguf_dir=$peers/gguf
work=$root/build/run/bench-formats
mkdir -p "$work"
start=$(date +%s)

NS="not supported by this build"

# ---- what this build and this machine have ------------------------------------------

for p in moe-run moe-mkmodel moe-expert moe-coordinator bench-core bench-cluster bench-logit-diff; do
    [ -x "$bin/$p" ] || { echo "bench-formats: no $bin/$p: build it first (make -j2 bench-formats)" >&2; exit 1; }
done
if [ ! -f "$model/config.json" ]; then
    echo "bench-formats: making the medium preset in $model"
    "$bin/moe-mkmodel" --arch mixtral --preset medium --seed 1 --out "$model" >/dev/null
fi

# The options a program lists in --help (the loader adds them program by program).
s_has_option() { "$1" --help 2>&1 | grep -q -- "$2"; }

# The options that serve format $1 to program $2 on stdout; exit 1 when the
# program cannot (the row then says $NS).
s_format_args() {
    local fmt=$1 prog=$2
    case $fmt in
        float32) return 0 ;;
        bfloat16|float16) s_has_option "$prog" --dtype && echo "--dtype $fmt" ;;
        q8_0|q4_0) s_has_option "$prog" --quantization && echo "--quantization $fmt" ;;
        *) echo "bench-formats: unknown format $fmt" >&2; return 1 ;;
    esac
}

# llama.cpp's file type for each of our formats (16-bit: llama.cpp has no BF16 path
# in the converter; its F16 is what users run).
s_peer_type() {
    case $1 in float32) echo f32 ;; bfloat16|float16) echo f16 ;; q8_0) echo q8_0 ;;
               q4_0) echo q4_0 ;; esac
}

# What is missing for llama.cpp's side: empty when the peer is ready.
s_peer_missing() {
    local m=()
    command -v node >/dev/null || m+=("node")
    [ -f "$peers/llamacpp/node_modules/node-llama-cpp/package.json" ] || m+=("node-llama-cpp")
    [ -f "$peers/spread_threads.so" ] || m+=("spread_threads.so")
    local newest t g
    newest=$(ls -t "$model"/config.json "$model"/*.safetensors | head -n 1)
    for t in f32 f16 q8_0 q4_0; do
        g=$gguf_dir/mixtral-medium-$t.gguf
        if [ ! -f "$g" ]; then m+=("$(basename "$g")")
        elif [ "$newest" -nt "$g" ]; then m+=("$(basename "$g") (older than the model)"); fi
    done
    echo "${m[*]}"
}
peer_missing=$(s_peer_missing)
peer_note=""
if [ -n "$peer_missing" ]; then
    peer_note="llama.cpp not set up (missing: $peer_missing): run \`make bench-peers\` once (needs the network)"
    echo "bench-formats: $peer_note"
fi

# Numbers from config.json: vocab, and the weight elements one decoded token
# reads in the 2-D linear weights that --quantization converts (attention
# projections, k experts, LM head) and in the rest (routers, norms; float32).
read -r vocab lin_elems other_elems < <(python3 - "$model/config.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
h, v, L = c["hidden_size"], c["vocab_size"], c["num_hidden_layers"]
hd = c.get("head_dim") or h // c["num_attention_heads"]
q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
lin = L * (h * (q + 2 * kv) + q * h + c["num_experts_per_tok"] * 3 * h * c["intermediate_size"]) + h * v
other = L * (h * c["num_local_experts"] + 2 * h) + h
print(v, lin, other)
EOF
)
# Bytes per weight of a format (ggml blocks of 32: Q8_0 34 bytes, Q4_0 18).
s_bytes_per_weight() {
    case $1 in float32|f32) echo 4 ;; bfloat16|float16|f16) echo 2 ;;
               q8_0) echo 1.0625 ;; q4_0) echo 0.5625 ;; esac
}
s_token_bytes() { echo "$lin_elems $other_elems $(s_bytes_per_weight "$1")" |
                  awk '{printf "%.0f", $1 * $3 + $2 * 4}'; }

# "a / b" to 2 decimals, "-" when either is missing.
s_ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }

echo "bench-formats: model $model, $threads threads, medians of $repeat, load average" \
     "$(cut -d' ' -f1-3 /proc/loadavg) (figures are noisy above ~0.3 per core)"

# ---- speed -------------------------------------------------------------------------------

best_bw=0 # the machine's best read bandwidth (bytes/s) over every bench-core run
declare -A our_pp our_tg peer_pp peer_tg peer_other our_note peer_note_row

# bench-core in format $1: fills our_pp/our_tg (or our_note) and best_bw.
s_ours() {
    local fmt=$1 args log=$work/bench-core-$1.log
    if ! args=$(s_format_args "$fmt" "$bin/bench-core"); then
        our_note[$fmt]=$NS; return 0
    fi
    # shellcheck disable=SC2086 # args is a list of words
    if ! "$bin/bench-core" --model "$model" --threads "$threads" --prompt-len "$prompt_len" \
            --decode "$decode" --repeat "$repeat" $args >"$log" 2>&1; then
        our_note[$fmt]="failed (see $log)"; return 0
    fi
    our_pp[$fmt]=$(sed -n 's/^ *prefill [0-9]* tokens: \([0-9.]*\) tokens\/s.*/\1/p' "$log")
    our_tg[$fmt]=$(sed -n 's/^ *decode [0-9]* tokens: \([0-9.]*\) tokens\/s.*/\1/p' "$log")
    local bw
    bw=$(sed -n 's/.*read bandwidth \([0-9.]*\) GB\/s.*/\1/p' "$log" | sort -g | tail -n 1)
    best_bw=$(awk -v a="$best_bw" -v b="${bw:-0}" 'BEGIN { b *= 1e9; print (b > a ? b : a) }')
}

# llama.cpp on the GGUF of format $1: fills peer_pp/peer_tg (or peer_note_row).
s_peer() {
    local fmt=$1 t log
    t=$(s_peer_type "$fmt")
    log=$work/llamacpp-$t.json
    if [ -n "$peer_missing" ]; then peer_note_row[$fmt]="not set up"; return 0; fi
    # shellcheck disable=SC2086 # llama_args is a list of words
    if ! LD_PRELOAD=$peers/spread_threads.so node "$peers/llamacpp/run.mjs" \
            --model "$gguf_dir/mixtral-medium-$t.gguf" --bench --threads "$threads" \
            --pp "$prompt_len" --tg "$decode" --reps "$repeat" $llama_args >"$log" 2>&1; then
        peer_note_row[$fmt]="failed (see $log)"; return 0
    fi
    read -r "peer_pp[$fmt]" "peer_tg[$fmt]" "peer_other[$fmt]" < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))["runs"][0]
print(r["pp_tok_s"], r["tg_tok_s"], max(r.get("other_cpu_cores") or [0]))' "$log")
}

s_speed() {
    local fmt
    for fmt in $formats; do
        echo "bench-formats: speed, $fmt (load average $(cut -d' ' -f1 /proc/loadavg))"
        s_ours "$fmt"
        s_peer "$fmt"
    done
    echo
    echo "### Speed: $threads threads, prompt $prompt_len, decode $decode, medians of $repeat"
    local bw_text="not measured (no moe-run row ran)"
    [ "$best_bw" = 0 ] || bw_text=$(awk -v b="$best_bw" 'BEGIN { printf "%.1f GB/s", b / 1e9 }')
    echo "(tokens/s; ratio = moe-run / llama.cpp; of bw = decode x MB/token / the machine's" \
         "read bandwidth, $bw_text, best of bench-core's measurements)"
    echo
    echo "| format (llama.cpp) | MB/token | decode moe-run | decode llama.cpp | ratio (goal >= 1.2) | of bw moe-run (goal >= 0.8) | of bw llama.cpp | prefill moe-run | prefill llama.cpp | ratio (goal >= 1.5) |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    for fmt in $formats; do
        local t bytes ours_bw peer_bw otg opp ptg ppp
        t=$(s_peer_type "$fmt")
        bytes=$(s_token_bytes "$fmt")
        otg=${our_tg[$fmt]:-${our_note[$fmt]:--}}; opp=${our_pp[$fmt]:-${our_note[$fmt]:--}}
        ptg=${peer_tg[$fmt]:-${peer_note_row[$fmt]:--}}; ppp=${peer_pp[$fmt]:-${peer_note_row[$fmt]:--}}
        ours_bw=$(s_ratio "$(awk -v t="${our_tg[$fmt]:-}" -v b="$bytes" 'BEGIN { if (t != "") print t * b }')" "$best_bw")
        peer_bw=$(s_ratio "$(awk -v t="${peer_tg[$fmt]:-}" -v b="$(s_token_bytes "$t")" 'BEGIN { if (t != "") print t * b }')" "$best_bw")
        printf '| %s (%s) | %.1f | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$fmt" "${t^^}" \
            "$(awk -v b="$bytes" 'BEGIN { print b / 1e6 }')" "$otg" "$ptg" \
            "$(s_ratio "${our_tg[$fmt]:-}" "${peer_tg[$fmt]:-}")" "$ours_bw" "$peer_bw" \
            "$opp" "$ppp" "$(s_ratio "${our_pp[$fmt]:-}" "${peer_pp[$fmt]:-}")"
    done
    local other=""
    for fmt in $formats; do
        [ -z "${peer_other[$fmt]:-}" ] || other+=" ${fmt} ${peer_other[$fmt]},"
    done
    [ -z "$other" ] || echo "(other processes' CPU use during llama.cpp's runs, most cores:${other%,})"
    [ -z "$peer_note" ] || echo "($peer_note)"
}

# ---- accuracy ----------------------------------------------------------------------------

# The accuracy prompt: acc_len ids in [3, vocab), the same every run (run.mjs's
# generator: x = (x * 1103515245 + 12345) mod 2^31).
s_prompt_ids() {
    local x=12345 i list=()
    for ((i = 0; i < acc_len; i++)); do
        x=$(((x * 1103515245 + 12345) % 2147483648))
        list+=($((3 + x % (vocab - 3))))
    done
    local IFS=,
    echo "${list[*]}"
}

# moe-run's logits in format $1 into $work/ours-$1.f32; 1 when it cannot.
s_ours_logits() {
    local fmt=$1 args
    args=$(s_format_args "$fmt" "$bin/moe-run") || return 1
    # shellcheck disable=SC2086 # args is a list of words
    "$bin/moe-run" --model "$model" --prompt-ids "$prompt_ids" --max-tokens 0 --threads "$threads" \
        --dump-logits "$work/ours-$fmt.f32" $args >"$work/moe-run-$fmt.log" 2>&1 || return 2
}

# llama.cpp's logits of GGUF type $1 into $work/llamacpp-$1.f32 (F32 KV cache,
# flash attention off: run.mjs's evaluation defaults).
s_peer_logits() {
    local t=$1
    [ -z "$peer_missing" ] || return 1
    node "$peers/llamacpp/run.mjs" --model "$gguf_dir/mixtral-medium-$t.gguf" --tokens "$prompt_ids" \
        --steps 1 --threads "$threads" --prompt-logits "$work/llamacpp-$t.f32" \
        >"$work/llamacpp-logits-$t.json" 2>&1 || return 2
}

# "KL TOP1" of test file $2 against reference $1 (KL to 3 digits, top-1 as a
# fraction), or "- -"; bench-logit-diff's complaint goes to stderr.
s_diff() {
    local out=""
    if [ -f "$1" ] && [ -f "$2" ] &&
       out=$("$bin/bench-logit-diff" --ref "$1" --test "$2" --vocab "$vocab" 2>&1); then
        echo "$out" | awk '/^positions / { printf "%.3e %.4f\n", $4, $8 }'
    else
        [ -z "$out" ] || echo "$out" >&2
        echo "- -"
    fi
}

s_accuracy() {
    prompt_ids=$(s_prompt_ids)
    local fmt t rc
    declare -A ours_state peer_state
    rm -f "$work"/ours-*.f32 "$work"/llamacpp-*.f32
    for fmt in float32 q8_0 q4_0; do
        echo "bench-formats: accuracy, logits of $fmt"
        rc=0; s_ours_logits "$fmt" || rc=$?
        case $rc in 0) ours_state[$fmt]=ok ;; 1) ours_state[$fmt]=$NS ;;
                    *) ours_state[$fmt]="failed (see $work/moe-run-$fmt.log)" ;; esac
        t=$(s_peer_type "$fmt")
        rc=0; s_peer_logits "$t" || rc=$?
        case $rc in 0) peer_state[$fmt]=ok ;; 1) peer_state[$fmt]="not set up" ;;
                    *) peer_state[$fmt]="failed (see $work/llamacpp-logits-$t.json)" ;; esac
    done
    echo
    echo "### Accuracy: $acc_len-token prompt, each format against float32 of the same implementation"
    echo "(mean KL(p_float32 || p_format) of the next-token distributions in nats; top-1 agreement)"
    echo
    echo "| format | KL moe-run | KL llama.cpp | top-1 moe-run | top-1 llama.cpp | ours <= llama.cpp |"
    echo "| --- | --- | --- | --- | --- | --- |"
    for fmt in q8_0 q4_0; do
        t=$(s_peer_type "$fmt")
        local ok pk pt verdict
        read -r ok ot < <(s_diff "$work/ours-float32.f32" "$work/ours-$fmt.f32")
        read -r pk pt < <(s_diff "$work/llamacpp-f32.f32" "$work/llamacpp-$t.f32")
        [ "${ours_state[$fmt]}" = ok ] || ok=${ours_state[$fmt]} ot=-
        [ "${ours_state[float32]}" = ok ] || ok="float32: ${ours_state[float32]}" ot=-
        [ "${peer_state[$fmt]}" = ok ] || pk=${peer_state[$fmt]} pt=-
        verdict=$(awk -v ok="$ok" -v ot="$ot" -v pk="$pk" -v pt="$pt" 'BEGIN {
            if (ot == "-" || pt == "-") { print "-"; exit }
            print (ok + 0 <= pk + 0 && ot + 0 >= pt + 0) ? "yes" : "NO" }')
        printf '| %s (%s) | %s | %s | %s | %s | %s |\n' "$fmt" "${t^^}" "$ok" "$pk" "$ot" "$pt" \
            "$verdict"
    done
    # The same weights on both sides: float32 against F32 should agree to rounding.
    local sk st
    read -r sk st < <(s_diff "$work/ours-float32.f32" "$work/llamacpp-f32.f32")
    echo "| (same weights: moe-run float32 against llama.cpp F32) | $sk | | $st | | |"
    [ -z "$peer_note" ] || echo "($peer_note)"
}

# ---- cluster -----------------------------------------------------------------------------

cluster_dir=$work/cluster # global: the EXIT trap stops a cluster left running
s_cluster() {
    local fmt=$cluster_format args nargs log=$work/bench-cluster.log
    echo "bench-formats: cluster in $fmt (load average $(cut -d' ' -f1 /proc/loadavg))"
    echo
    echo "### Cluster: coordinator + 2 expert nodes on this machine, $fmt, against moe-run in $fmt"
    echo
    if ! args=$(s_format_args "$fmt" "$bin/bench-cluster") ||
       ! nargs=$(s_format_args "$fmt" "$root/cluster/local.sh"); then
        echo "$fmt: $NS"; return 0
    fi
    # Both sides with the launcher's OpenBLAS setting (idle threads sleep at once), as
    # bench/run.sh; bench-core above runs with OpenBLAS's default, as there.
    export OPENBLAS_THREAD_TIMEOUT=${OPENBLAS_THREAD_TIMEOUT:-4}
    trap 'MOE_BIN="$bin" "$root/cluster/local.sh" down --run-dir "$cluster_dir" >/dev/null 2>&1 || true' EXIT
    local endpoint
    # shellcheck disable=SC2086 # nargs is a list of words
    if ! endpoint=$(MOE_BIN="$bin" "$root/cluster/local.sh" up --model "$model" --nodes 2 \
            --run-dir "$cluster_dir" --threads "$threads" --node-threads "$threads" $nargs |
            tail -n 1); then
        echo "the cluster did not start (logs in $cluster_dir)"; return 0
    fi
    # shellcheck disable=SC2086
    if "$bin/bench-cluster" --model "$model" --endpoint "$endpoint" --threads "$threads" \
            --prompt-len "$prompt_len" --decode "$decode" --repeat "$repeat" $args >"$log" 2>&1; then
        grep -E '^(single process|cluster:|ratios)' "$log"
    else
        echo "bench-cluster failed (see $log)"
    fi
    MOE_BIN="$bin" "$root/cluster/local.sh" down --run-dir "$cluster_dir" >/dev/null 2>&1 || true
}

for part in $parts; do
    case $part in
        speed) s_speed ;;
        accuracy) s_accuracy ;;
        cluster) s_cluster ;;
        *) echo "bench-formats: unknown part $part (speed, accuracy, cluster)" >&2; exit 2 ;;
    esac
done
echo
echo "bench-formats: done in $(($(date +%s) - start)) s, load average $(cut -d' ' -f1-3 /proc/loadavg)"
