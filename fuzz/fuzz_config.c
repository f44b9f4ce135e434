/* fuzz_config: config.json text through config_parse_all (every family,
 * those the engine cannot run yet included) and config_parse, then what
 * callers ask of a parsed config: its model id and per-layer answers.
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
