/* moe-keygen: writes CURVE key pairs for moecluster's sockets.
 *
 *   moe-keygen --out DIR --name NAME [--name NAME ...]
 *
 * For each NAME writes DIR/NAME.key (the pair, mode 0600) and DIR/NAME.pub
 * (the public key) in the format of security/keypair.h, creating DIR (mode
 * 0700) when it does not exist. Existing files are never overwritten. Prints
 * each public key file written. docs/DEPLOY.md, "Security", shows which
 * process needs which file. Exit 0, 1 on a runtime error, 2 on a usage error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/arg.h"
#include "core/err.h"
#include "security/keypair.h"

enum { MAX_NAMES = 1024 };

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: moe-keygen --out DIR --name NAME [--name NAME ...]\n"
            "\n"
            "Writes a CURVE key pair per NAME: DIR/NAME.key (public and secret key,\n"
            "mode 0600: give it only to the process it names) and DIR/NAME.pub (the\n"
            "public key: give it to the processes that must accept or reach NAME).\n"
            "Never overwrites a file. See docs/DEPLOY.md, \"Security\".\n");
}

typedef struct options {
    const char *out;
    const char *names[MAX_NAMES];
    int n_names;
} options_t;

/* The options every run needs (an arg_check_fn). */
static int s_check(void *ctx, err_t *err)
{
    const options_t *o = ctx;
    if (!o->out || o->n_names == 0)
        return err_set(err, EINVAL, "--out DIR and at least one --name NAME are required");
    return 0;
}

int main(int argc, char **argv)
{
    options_t o = {0};
    const arg_opt_t table[] = {
        ARG_OPT_STRING("--out", &o.out),
        ARG_OPT_STRINGS("--name", o.names, MAX_NAMES, &o.n_names),
        ARG_OPT_END,
    };
    if (arg_parse_main("moe-keygen", argc, argv, table, s_usage, s_check, &o) < 0)
        return 2;
    const char *out = o.out;
    const char *const *names = o.names;
    int n_names = o.n_names;
    if (mkdir(out, 0700) < 0 && errno != EEXIST) {
        fprintf(stderr, "moe-keygen: cannot create %s: %s\n", out, strerror(errno));
        return 1;
    }
    for (int i = 0; i < n_names; i++) {
        err_t err = {0};
        keypair_t kp;
        if (keypair_generate(&kp, &err) < 0 || keypair_save(&kp, out, names[i], &err) < 0) {
            fprintf(stderr, "moe-keygen: %s\n", err.msg);
            return 1;
        }
        memset(&kp, 0, sizeof kp);
        printf("%s/%s.pub\n", out, names[i]);
    }
    return 0;
}
