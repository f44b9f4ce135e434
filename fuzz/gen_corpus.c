/* gen_corpus: writes the seed corpora of fuzz/corpus/ from what moecluster's
 * own encoders and writers make, so that every seed is a valid input the
 * fuzzers then mutate:
 *   data_plane/, client_rpc/  messages made by wire_*_send on an inproc
 *                             ZeroMQ pair and captured frame by frame, in the
 *                             layout of fuzz_frames.h;
 *   safetensors/              small files made by st_writer (F32, F16, BF16,
 *                             0-d, empty, misaligned F32) and an index;
 *   tokenizer/                a byte-level BPE made by tokenizer/trainer and
 *                             two hand-made SentencePiece-style and split-regex
 *                             files.
 * (config/ holds the fixtures' config.json files, copied by `make fuzz-corpus`.)
 *
 * Usage: gen_corpus <fuzz/corpus directory>
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zmq.h>

#include "model/st_writer.h"
#include "proto/client_rpc.h"
#include "proto/data_plane.h"
#include "tokenizer/trainer.h"

static const char *s_root;
static void *s_in, *s_out;  /* inproc PAIR: the encoders send on s_out */

static void s_die(const char *what, const err_t *err)
{
    fprintf(stderr, "gen_corpus: %s: %s\n", what, err && err->msg[0] ? err->msg : strerror(errno));
    exit(1);
}

static void s_mkdir(const char *sub)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", s_root, sub);
    if (mkdir(path, 0755) < 0 && errno != EEXIST)
        s_die(path, NULL);
}

static void s_write(const char *sub, const char *name, const void *a, size_t na,
                    const void *b, size_t nb)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s/%s", s_root, sub, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(a, 1, na, f) != na || (nb && fwrite(b, 1, nb, f) != nb) || fclose(f))
        s_die(path, NULL);
}

/* Takes the message just sent off the pair and writes it as one input. */
static void s_capture(const char *sub, const char *name, uint8_t flags)
{
    zmq_msg_t part[2];
    int n = 0;
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, s_in, 0) < 0)
            s_die("receiving", NULL);
        int more = zmq_msg_more(&m);
        if (n < 2) {
            zmq_msg_init(&part[n]);
            zmq_msg_move(&part[n], &m);
        }
        zmq_msg_close(&m);
        n++;
        if (!more)
            break;
    }
    size_t hl = zmq_msg_size(&part[0]);
    uint8_t head[5] = {(uint8_t)(flags | (n & 3)), (uint8_t)hl, (uint8_t)(hl >> 8),
                       (uint8_t)(hl >> 16), (uint8_t)(hl >> 24)};
    size_t total = 5 + hl + (n > 1 ? zmq_msg_size(&part[1]) : 0);
    uint8_t *buf = malloc(total);
    if (!buf)
        s_die("malloc", NULL);
    memcpy(buf, head, 5);
    memcpy(buf + 5, zmq_msg_data(&part[0]), hl);
    if (n > 1)
        memcpy(buf + 5 + hl, zmq_msg_data(&part[1]), zmq_msg_size(&part[1]));
    s_write(sub, name, buf, total, NULL, 0);
    free(buf);
    for (int i = 0; i < n && i < 2; i++)
        zmq_msg_close(&part[i]);
}

static void s_data(const char *name, const wire_data_t *msg, uint8_t flags)
{
    err_t err = {0};
    if (wire_data_send(s_out, NULL, msg, &err) < 0)
        s_die(name, &err);
    s_capture("data_plane", name, flags);
}

static void s_data_plane(void)
{
    s_mkdir("data_plane");
    float rows[4 * 8];
    for (int i = 0; i < 4 * 8; i++)
        rows[i] = (float)(i - 13) * 0.25f;
    static const int32_t hl[] = {0, 1, 3}, he[] = {1, 2, 7};
    static const moe_assign_t assign[] = {{0, 1, 0.5f}, {0, 6, 0.5f}, {1, 2, 1.0f},
                                          {2, 7, 0.25f}};
    s_data("hello", &(wire_data_t){.type = WIRE_HELLO, .request_id = 1}, 0);
    s_data("hello_reply", &(wire_data_t){.type = WIRE_HELLO_REPLY, .request_id = 1,
           .node_id = 3, .model_id = "mixtral:h8:l4:e8:k2:i16:v300:a2/1x4", .n_hosted = 3,
           .hosted_layer = hl, .hosted_expert = he}, 0);
    wire_data_t req = {.type = WIRE_EXPERT_REQUEST, .request_id = 7, .layer = 2, .n_rows = 3,
                       .hidden = 8, .rows = rows, .n_assign = 4, .assign = assign};
    s_data("expert_request", &req, 0);
    s_data("expert_request_unbounded", &req, 4);
    wire_data_t rep = {.type = WIRE_EXPERT_REPLY, .request_id = 7, .layer = 1, .n_rows = 4,
                       .hidden = 8, .rows = rows, .compute_seconds = 0.125};
    s_data("expert_reply", &rep, 0);
    /* The other tensor formats (--wire): BF16 rows, an FP8 reply with its scales. */
    req.dtype = WIRE_TENSOR_BF16;
    s_data("expert_request_bf16", &req, 0);
    rep.dtype = WIRE_TENSOR_FP8;
    s_data("expert_reply_fp8", &rep, 0);
    s_data("heartbeat", &(wire_data_t){.type = WIRE_HEARTBEAT, .request_id = 9}, 0);
    s_data("heartbeat_reply", &(wire_data_t){.type = WIRE_HEARTBEAT_REPLY, .request_id = 9},
           4);
    s_data("shutdown", &(wire_data_t){.type = WIRE_SHUTDOWN}, 0);
    s_data("error", &(wire_data_t){.type = WIRE_ERROR, .request_id = 7,
           .error_code = WIRE_DATA_ERR_SHAPE, .error_message = "rows disagree"}, 0);
}

static void s_request(const char *name, const wire_request_t *req, uint8_t flags)
{
    err_t err = {0};
    if (wire_request_send(s_out, req, &err) < 0)
        s_die(name, &err);
    s_capture("client_rpc", name, flags);
}

static void s_reply(const char *name, const wire_reply_t *rep, uint8_t flags)
{
    err_t err = {0};
    if (wire_reply_send(s_out, NULL, rep, &err) < 0)
        s_die(name, &err);
    s_capture("client_rpc", name, (uint8_t)(flags | 4));
}

static void s_client_rpc(void)
{
    s_mkdir("client_rpc");
    static const int32_t prompt[] = {1, 17, 250, 3, 99}, stop[] = {2, 42};
    static const char text[] = "The experts \xe2\x80\x94 eight of them \xe2\x80\x94 answer.";
    s_request("generate", &(wire_request_t){.type = WIRE_REQ_GENERATE, .request_id = 5,
              .n_prompt = 5, .prompt = prompt, .max_tokens = 16, .temperature = 0.7f,
              .top_k = 40, .top_p = 0.9f, .seed = 1234, .n_stop = 2, .stop_ids = stop,
              .deadline_ms = 30000, .ignore_eos = true}, 0);
    s_request("generate_text", &(wire_request_t){.type = WIRE_REQ_GENERATE, .request_id = 6,
              .prompt_text = text, .prompt_text_len = strlen(text), .max_tokens = 4}, 8);
    s_request("logits", &(wire_request_t){.type = WIRE_REQ_LOGITS, .request_id = 8,
              .n_prompt = 3, .prompt = prompt}, 0);
    s_request("status", &(wire_request_t){.type = WIRE_REQ_STATUS, .request_id = 9}, 0);
    s_request("cancel", &(wire_request_t){.type = WIRE_REQ_CANCEL, .request_id = 10,
              .cancel_id = 5}, 0);

    static const int32_t tokens[] = {5, 6, 299};
    s_reply("tokens", &(wire_reply_t){.type = WIRE_REP_TOKENS, .request_id = 5, .n_tokens = 3,
            .tokens = tokens, .text = "abc", .text_len = 3}, 0);
    s_reply("tokens_final", &(wire_reply_t){.type = WIRE_REP_TOKENS, .request_id = 5,
            .n_tokens = 1, .tokens = tokens, .final = true, .prompt_tokens = 5,
            .generated_tokens = 4, .seconds = 0.5, .text = "\xc3\xa9!", .text_len = 3,
            .finish_reason = "stop"}, 8);
    float logits[2 * 300];
    for (int i = 0; i < 2 * 300; i++)
        logits[i] = (float)(i % 17) - 8.0f;
    s_reply("logits", &(wire_reply_t){.type = WIRE_REP_LOGITS, .request_id = 8, .final = true,
            .rows = 2, .vocab = 300, .logits = logits}, 0);
    static const int32_t l0[] = {0, 0, 1}, e0[] = {0, 1, 7}, l1[] = {3}, e1[] = {4};
    wire_node_status_t nodes[] = {
        {.node_id = 0, .endpoint = "tcp://10.0.0.1:5555", .up = true, .n_hosted = 3,
         .hosted_layer = l0, .hosted_expert = e0, .batches = 12, .rtt_last_ms = 1.5,
         .rtt_mean_ms = 1.25, .last_error = ""},
        {.node_id = 1, .endpoint = "tcp://10.0.0.2:5555", .up = false, .n_hosted = 1,
         .hosted_layer = l1, .hosted_expert = e1, .last_error = "timed out"},
    };
    uint64_t counts[4 * 8];
    for (int i = 0; i < 32; i++)
        counts[i] = (uint64_t)i * 3;
    s_reply("status", &(wire_reply_t){.type = WIRE_REP_STATUS, .request_id = 9, .final = true,
            .model = "build/models/default (mixtral)", .n_nodes = 2, .nodes = nodes,
            .n_layers = 4, .n_experts = 8, .expert_tokens = counts, .requests_served = 4,
            .timing = {.tokens = 10, .dispatch_calls = 20, .bytes_sent = 1000,
                       .bytes_received = 900, .seconds_forward = 1, .seconds_dispatch = 0.5,
                       .seconds_node_compute = 0.25, .seconds_overlap = 0.125},
            .sequences_running = 1, .requests_queued = 2, .kv_bytes = 4096}, 8);
    s_reply("error", &(wire_reply_t){.type = WIRE_REP_ERROR, .request_id = 10, .final = true,
            .error_code = WIRE_CLIENT_BUSY, .error_message = "queue full"}, 0);
}

static void s_st(const char *name, int n, const char *const *names, const st_dtype_t *dt,
                 const int *ndim, const int64_t (*shape)[4])
{
    char path[512];
    snprintf(path, sizeof path, "%s/safetensors/%s", s_root, name);
    err_t err = {0};
    st_writer_t *w = st_writer_new(path, &err);
    if (!w)
        s_die(path, &err);
    for (int i = 0; i < n; i++)
        if (st_writer_add(w, names[i], dt[i], ndim[i], shape[i], &err) < 0)
            s_die(path, &err);
    if (st_writer_begin(w, &err) < 0)
        s_die(path, &err);
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        size_t k = 1;
        for (int d = 0; d < ndim[i]; d++)
            k *= (size_t)shape[i][d];
        for (size_t j = 0; j < k; j++, at++) {
            float v = (float)at * 0.5f - 3.0f;
            uint8_t b = (uint8_t)(at * 37u + 1u); /* raw dtypes: E4M3, E2M1 pairs, E8M0 */
            if ((dt[i] == ST_U8 || dt[i] == ST_F8_E4M3
                     ? st_writer_write_raw(w, &b, 1, &err)
                     : st_writer_write(w, &v, 1, &err)) < 0)
                s_die(path, &err);
        }
    }
    if (st_writer_finish(w, &err) < 0)
        s_die(path, &err);
    st_writer_destroy(&w);
}

static void s_safetensors(void)
{
    s_mkdir("safetensors");
    static const int64_t sh[][4] = {{2, 3, 0}, {3, 0, 0}, {2, 2, 2}, {0, 0, 0}, {1, 0, 0}};
    s_st("f32.safetensors", 1, (const char *[]){"w"}, (st_dtype_t[]){ST_F32}, (int[]){2}, sh);
    s_st("mixed.safetensors", 3, (const char *[]){"w", "h", "b"},
         (st_dtype_t[]){ST_F32, ST_F16, ST_BF16}, (int[]){2, 1, 3}, sh);
    /* an odd count of F16 values before an F32 tensor: the F32 data is misaligned */
    s_st("misaligned.safetensors", 2, (const char *[]){"h", "w"},
         (st_dtype_t[]){ST_F16, ST_F32}, (int[]){1, 2}, (const int64_t[][4]){{3}, {2, 3}});
    s_st("scalar.safetensors", 2, (const char *[]){"s", "e"}, (st_dtype_t[]){ST_F32, ST_BF16},
         (int[]){0, 1}, (const int64_t[][4]){{0}, {0}});
    /* DeepSeek-V3 FP8: a 3 x 5 weight, its 2 x 3 block scales of [2, 2]
     * (partial edge blocks); gpt-oss MXFP4: [E, rows, blocks, 16] and scales */
    s_st("fp8.safetensors", 2, (const char *[]){"l.weight", "l.weight_scale_inv"},
         (st_dtype_t[]){ST_F8_E4M3, ST_F32}, (int[]){2, 2},
         (const int64_t[][4]){{3, 5}, {2, 3}});
    s_st("mxfp4.safetensors", 3,
         (const char *[]){"e.down_proj_blocks", "e.down_proj_scales", "e.down_proj_bias"},
         (st_dtype_t[]){ST_U8, ST_U8, ST_BF16}, (int[]){4, 3, 2},
         (const int64_t[][4]){{2, 2, 1, 16}, {2, 2, 1}, {2, 2}});
    static const char index[] =
        "{\"metadata\": {\"total_size\": 30}, \"weight_map\": "
        "{\"h\": \"shard.safetensors\", \"w\": \"shard.safetensors\"}}\n";
    s_write("safetensors", "index.json", index, strlen(index), NULL, 0);
}

/* A Llama-2-style tokenizer, small: SentencePiece normalizers, byte fallback,
 * a BOS template. */
static const char S_SP[] =
    "{\"version\": \"1.0\", \"truncation\": null, \"padding\": null,\n"
    " \"added_tokens\": [\n"
    "  {\"id\": 0, \"content\": \"<unk>\", \"single_word\": false, \"lstrip\": false, "
    "\"rstrip\": false, \"normalized\": false, \"special\": true},\n"
    "  {\"id\": 1, \"content\": \"<s>\", \"single_word\": false, \"lstrip\": false, "
    "\"rstrip\": false, \"normalized\": false, \"special\": true},\n"
    "  {\"id\": 2, \"content\": \"</s>\", \"single_word\": false, \"lstrip\": false, "
    "\"rstrip\": false, \"normalized\": false, \"special\": true}],\n"
    " \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", "
    "\"prepend\": \"\xe2\x96\x81\"}, {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, "
    "\"content\": \"\xe2\x96\x81\"}]},\n"
    " \"pre_tokenizer\": null,\n"
    " \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": "
    "{\"id\": \"<s>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], "
    "\"pair\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}, {\"Sequence\": "
    "{\"id\": \"A\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"B\", \"type_id\": 1}}], "
    "\"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": [1], \"tokens\": [\"<s>\"]}}},\n"
    " \"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": "
    "{\"String\": \"\xe2\x96\x81\"}, \"content\": \" \"}, {\"type\": \"ByteFallback\"}, "
    "{\"type\": \"Fuse\"}, {\"type\": \"Strip\", \"content\": \" \", \"start\": 1, "
    "\"stop\": 0}]},\n"
    " \"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": \"<unk>\", "
    "\"continuing_subword_prefix\": null, \"end_of_word_suffix\": null, \"fuse_unk\": true, "
    "\"byte_fallback\": true,\n"
    "  \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2, \"<0x0A>\": 3, \"<0x21>\": 4, "
    "\"<0xC3>\": 5, \"<0xA9>\": 6, \"\xe2\x96\x81\": 7, \"e\": 8, \"l\": 9, \"o\": 10, "
    "\"H\": 11, \"w\": 12, \"r\": 13, \"d\": 14, \"\xe2\x96\x81H\": 15, \"ll\": 16, "
    "\"llo\": 17, \"el\": 18, \"\xe2\x96\x81w\": 19, \"or\": 20},\n"
    "  \"merges\": [\"\xe2\x96\x81 H\", \"l l\", \"ll o\", \"e l\", \"\xe2\x96\x81 w\", "
    "\"o r\"]}}\n";

/* Byte-level BPE behind an NFC normalizer and a Qwen-like split regex. */
static const char S_SPLIT[] =
    "{\"version\": \"1.0\", \"added_tokens\": [{\"id\": 8, \"content\": \"<|endoftext|>\", "
    "\"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, "
    "\"special\": true}],\n"
    " \"normalizer\": {\"type\": \"NFC\"},\n"
    " \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", "
    "\"pattern\": {\"Regex\": \"(?i:'s|'t)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}| "
    "?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"}, "
    "\"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", "
    "\"add_prefix_space\": false, \"trim_offsets\": false, \"use_regex\": false}]},\n"
    " \"post_processor\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
    "\"trim_offsets\": false, \"use_regex\": false},\n"
    " \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": "
    "false, \"use_regex\": false},\n"
    " \"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, "
    "\"continuing_subword_prefix\": \"\", \"end_of_word_suffix\": \"\", \"fuse_unk\": false, "
    "\"byte_fallback\": false, \"ignore_merges\": false,\n"
    "  \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"\xc4\xa0\": 3, \"ab\": 4, \"\xc4\xa0" "a\": 5, "
    "\"abc\": 6, \"\xc4\x8a\": 7},\n"
    "  \"merges\": [[\"a\", \"b\"], [\"\xc4\xa0\", \"a\"], [\"ab\", \"c\"]]}}\n";

static void s_tokenizer(void)
{
    s_mkdir("tokenizer");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/tokenizer/trained", s_root);
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        s_die(dir, NULL);
    trainer_opts_t opts = {.vocab_size = 300, .specials = {"<|bos|>", "<|eos|>", "<|pad|>"},
                           .n_specials = 3, .bos = 0, .eos = 1, .pad = 2};
    static const char text[] = "mixture of experts: the router picks two experts of eight "
                               "for every token; the experts answer and the sums add up. "
                               "Caf\xc3\xa9 \xe2\x80\x94 2024.\n";
    err_t err = {0};
    if (trainer_write(dir, text, strlen(text), &opts, NULL, &err) < 0)
        s_die("trainer_write", &err);
    char from[600], to[600];
    snprintf(from, sizeof from, "%s/tokenizer.json", dir);
    snprintf(to, sizeof to, "%s/tokenizer/bytelevel.json", s_root);
    if (rename(from, to) < 0)
        s_die(to, NULL);
    snprintf(from, sizeof from, "%s/tokenizer_config.json", dir);
    remove(from);
    rmdir(dir);
    s_write("tokenizer", "sentencepiece.json", S_SP, strlen(S_SP), NULL, 0);
    s_write("tokenizer", "split_nfc.json", S_SPLIT, strlen(S_SPLIT), NULL, 0);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s <fuzz/corpus directory>\n", argv[0]);
        return 2;
    }
    s_root = argv[1];
    void *ctx = zmq_ctx_new();
    s_in = zmq_socket(ctx, ZMQ_PAIR);
    s_out = zmq_socket(ctx, ZMQ_PAIR);
    if (!ctx || !s_in || !s_out || zmq_bind(s_in, "inproc://gen") < 0 ||
        zmq_connect(s_out, "inproc://gen") < 0)
        s_die("zmq", NULL);
    s_data_plane();
    s_client_rpc();
    s_safetensors();
    s_tokenizer();
    zmq_close(s_in);
    zmq_close(s_out);
    zmq_ctx_term(ctx);
    return 0;
}
