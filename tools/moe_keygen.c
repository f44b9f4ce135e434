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

int main(int argc, char **argv)
{
    const char *out = NULL;
    const char *names[MAX_NAMES];
    int n_names = 0;
    const arg_opt_t table[] = {
        ARG_OPT_STRING("--out", &out),
        ARG_OPT_STRINGS("--name", names, MAX_NAMES, &n_names),
        ARG_OPT_HELP("--help"),
        ARG_OPT_END,
    };
    err_t aerr = {0};
    int rc = arg_parse(argc, argv, 1, table, 0, NULL, &aerr);
    if (rc == ARG_HELP_ASKED) {
        s_usage(stdout);
        return 0;
    }
    if (rc == 0 && (!out || n_names == 0))
        rc = err_set(&aerr, EINVAL, "--out DIR and at least one --name NAME are required");
    if (rc < 0) {
        fprintf(stderr, "moe-keygen: %s (see --help)\n", aerr.msg);
        return 2;
    }
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
