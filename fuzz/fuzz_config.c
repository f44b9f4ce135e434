/* fuzz_config: config.json text through config_parse_all (every family,
 * those the engine cannot run yet included) and config_parse, then what
 * callers ask of a parsed config: its model id and per-layer answers, and
 * what its quantization_config promises (fp8 block sizes, mxfp4's kept
 * modules).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_verbose.h"
#include "model/config.h"

static void s_check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_config: broken promise: %s\n", what);
        abort();
    }
}

static void s_use(const config_t *cfg)
{
    s_check(cfg->n_layers > 0 && cfg->n_layers <= CONFIG_MAX_LAYERS, "n_layers");
    s_check(cfg->n_eos >= 0 && cfg->n_eos <= CONFIG_MAX_EOS, "n_eos");
    /* The rotary width is the one its attention kind rotates, even. */
    s_check(cfg->rope_dim >= 2 && cfg->rope_dim % 2 == 0 &&
                cfg->rope_dim == (config_is_mla(cfg) ? cfg->qk_rope_head_dim
                                                     : cfg->head_dim),
            "rope_dim");
    s_check(config_is_mla(cfg) == (cfg->kv_lora_rank > 0), "attention kind");
    /* quantization_config: fp8 has positive blocks, the others none */
    const config_quant_t *q = &cfg->quant;
    s_check(q->method == CONFIG_QUANT_NONE || q->method == CONFIG_QUANT_FP8 ||
                q->method == CONFIG_QUANT_MXFP4,
            "quant method");
    if (q->method == CONFIG_QUANT_FP8)
        s_check(q->block_n >= 1 && q->block_n <= CONFIG_DIM_MAX && q->block_k >= 1 &&
                    q->block_k <= CONFIG_DIM_MAX,
                "fp8 block sizes");
    else
        s_check(q->block_n == 0 && q->block_k == 0, "no blocks without fp8");
    s_check(q->n_skip >= 0 && q->n_skip <= CONFIG_QUANT_MAX_SKIP &&
                (q->method != CONFIG_QUANT_NONE || q->n_skip == 0),
            "modules_to_not_convert count");
    for (int i = 0; i < q->n_skip; i++)
        s_check(memchr(q->skip[i], '\0', CONFIG_QUANT_SKIP_LEN) != NULL,
                "modules_to_not_convert entry terminated");
    s_check(strcmp(config_quant_name(q->method), "unknown") != 0, "quant name");
    s_check(cfg->dtype >= CONFIG_DTYPE_UNSET && cfg->dtype <= CONFIG_DTYPE_BFLOAT16,
            "dtype");
    char small[8], big[512];
    int n = config_model_id(cfg, big, sizeof big);
    s_check(n >= 0, "model id length");
    if ((size_t)n < sizeof big)
        s_check(strlen(big) == (size_t)n, "model id text");
    int m = config_model_id(cfg, small, sizeof small);
    s_check(m == n && strlen(small) < sizeof small, "truncated model id");
    volatile int sink = 0;
    for (int l = 0; l < cfg->n_layers; l++)
        sink += config_layer_is_moe(cfg, l) + config_layer_window(cfg, l);
    sink += (int)strlen(config_arch_name(cfg->arch)) + config_arch_supported(cfg->arch) +
            config_experts_stacked(cfg);
    (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    config_t cfg;
    err_t err = {0};
    int rc = config_parse_all(&cfg, (const char *)data, size, "fuzz", &err);
    fuzz_verbose("config_parse_all", rc, err.msg);
    if (rc == 0)
        s_use(&cfg);
    if (config_parse(&cfg, (const char *)data, size, "fuzz", &err) == 0)
        s_use(&cfg);
    return 0;
}
