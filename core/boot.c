/* boot: MPI bootstrap (see boot.h). Every MPI call of moecluster is here.
 *
 * Errors on MPI_COMM_WORLD are set to return (MPI_ERRORS_RETURN), so that a
 * failed call becomes -1/EIO rather than an abort. Reports travel as fixed
 * size records (boot_report_t), so a gather needs no size exchange.
 */
#include "core/boot.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/mem.h"

struct boot {
    int rank;                   /* this process in MPI_COMM_WORLD */
    int size;                   /* processes in MPI_COMM_WORLD */
    char host[BOOT_HOST_MAX];   /* gethostname, truncated */
    struct boot_report *reports; /* (size) rank 0's boot_agree buffer, else NULL */
    char *strings;              /* (size, BOOT_STRING_MAX) rank 0's gather buffer */
};

/* One rank's report in boot_agree. */
typedef struct boot_report {
    int code;                   /* errno of the failure, 0 when it worked */
    char host[BOOT_HOST_MAX];
    char msg[ERR_MSG_MAX];
} boot_report_t;

/* The verdict rank 0 broadcasts. */
typedef struct boot_verdict {
    int n_failed;
    int code;                   /* first failing rank's code */
    char msg[ERR_MSG_MAX];
} boot_verdict_t;

static int s_mpi_fail(err_t *err, int rc, const char *what)
{
    char text[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    MPI_Error_string(rc, text, &len);
    return err_set(err, EIO, "MPI %s failed: %s", what, text);
}

boot_t *boot_new(int *argc, char ***argv, err_t *err)
{
    boot_t *self = mem_calloc(1, sizeof *self);
    if (!self) {
        err_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    int rc = MPI_Init(argc, argv);
    if (rc != MPI_SUCCESS) {
        s_mpi_fail(err, rc, "MPI_Init");
        mem_free(self);
        return NULL;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &self->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &self->size);
    if (gethostname(self->host, sizeof self->host) < 0)
        snprintf(self->host, sizeof self->host, "unknown");
    self->host[sizeof self->host - 1] = '\0';
    /* Rank 0's buffers are made here, so that no Collective can fail on
     * rank 0 alone after the others have started it. */
    if (self->rank == 0) {
        self->reports = mem_calloc((size_t)self->size, sizeof *self->reports);
        self->strings = mem_calloc((size_t)self->size, BOOT_STRING_MAX);
        if (!self->reports || !self->strings) {
            err_set(err, ENOMEM, "out of memory for %d ranks", self->size);
            MPI_Abort(MPI_COMM_WORLD, 1); /* the other ranks would wait forever */
            return NULL;
        }
    }
    return self;
}

void boot_destroy(boot_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    int saved = errno;
    MPI_Finalize();
    mem_free((*self_p)->strings);
    mem_free((*self_p)->reports);
    mem_free(*self_p);
    *self_p = NULL;
    errno = saved;
}

int boot_rank(const boot_t *self) { return self->rank; }
int boot_size(const boot_t *self) { return self->size; }
const char *boot_host(const boot_t *self) { return self->host; }

/* Rank 0: the verdict from every rank's report. */
static void s_judge(const boot_report_t *all, int n, const char *stage, boot_verdict_t *v)
{
    memset(v, 0, sizeof *v);
    int first = -1;
    for (int r = 0; r < n; r++) {
        if (all[r].code == 0)
            continue;
        if (first < 0)
            first = r;
        v->n_failed++;
    }
    if (first < 0)
        return;
    v->code = all[first].code;
    int more = v->n_failed - 1;
    char tail[64] = "";
    if (more > 0)
        snprintf(tail, sizeof tail, " (and %d more rank%s)", more, more > 1 ? "s" : "");
    /* The message is cut to fit; the tail is kept by cutting the middle. */
    int room = (int)sizeof v->msg - (int)strlen(tail) - 1;
    int w = snprintf(v->msg, (size_t)room + 1, "%s: rank %d (host %s): %s", stage, first,
                     all[first].host, all[first].msg);
    if (w < 0)
        v->msg[0] = '\0';
    strcat(v->msg, tail);
}

int boot_agree(boot_t *self, const char *stage, const err_t *mine, err_t *verdict)
{
    assert(self);
    assert(stage);
    boot_report_t me;
    memset(&me, 0, sizeof me);
    if (mine && mine->code) {
        me.code = mine->code;
        snprintf(me.msg, sizeof me.msg, "%s",
                 mine->msg[0] ? mine->msg : strerror(mine->code));
    }
    snprintf(me.host, sizeof me.host, "%s", self->host);
    boot_verdict_t v;
    memset(&v, 0, sizeof v);
    int rc = MPI_Gather(&me, (int)sizeof me, MPI_BYTE, self->reports, (int)sizeof me,
                        MPI_BYTE, 0, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS)
        return s_mpi_fail(verdict, rc, "MPI_Gather");
    if (self->rank == 0)
        s_judge(self->reports, self->size, stage, &v);
    rc = MPI_Bcast(&v, (int)sizeof v, MPI_BYTE, 0, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS)
        return s_mpi_fail(verdict, rc, "MPI_Bcast");
    if (v.n_failed == 0)
        return 0;
    v.msg[sizeof v.msg - 1] = '\0';
    return err_set(verdict, v.code ? v.code : ECANCELED, "%s", v.msg);
}

int boot_gather_strings(boot_t *self, const char *mine, err_t *err)
{
    assert(self);
    assert(mine);
    char rec[BOOT_STRING_MAX];
    size_t n = strlen(mine);
    if (n >= sizeof rec)
        n = sizeof rec - 1; /* documented truncation: every rank must still send */
    memcpy(rec, mine, n);
    memset(rec + n, 0, sizeof rec - n);
    int rc = MPI_Gather(rec, (int)sizeof rec, MPI_CHAR, self->strings, (int)sizeof rec,
                        MPI_CHAR, 0, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS)
        return s_mpi_fail(err, rc, "MPI_Gather");
    return 0;
}

const char *boot_gathered(const boot_t *self, int rank)
{
    assert(self);
    if (self->rank != 0 || rank < 0 || rank >= self->size)
        return NULL;
    return self->strings + (size_t)rank * BOOT_STRING_MAX;
}

int boot_bcast_string(boot_t *self, char **text_p, size_t *len_p, err_t *err)
{
    assert(self);
    assert(text_p);
    long long len = 0;
    if (self->rank == 0) {
        assert(*text_p);
        size_t n = strlen(*text_p);
        len = n >= INT_MAX ? -1 : (long long)n;  /* -1: every rank fails with EFBIG */
    }
    int rc = MPI_Bcast(&len, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS)
        return s_mpi_fail(err, rc, "MPI_Bcast");
    if (len < 0)
        return err_set(err, EFBIG, "text to broadcast is larger than %d bytes", INT_MAX - 1);
    char *text = *text_p;
    if (self->rank != 0) {
        text = mem_alloc((size_t)len + 1);
        /* Out of memory here cannot skip the broadcast: receive into a scratch
         * loop would need memory too, so give up on MPI (abort the job). */
        if (!text) {
            err_set(err, ENOMEM, "out of memory receiving %lld bytes", len);
            MPI_Abort(MPI_COMM_WORLD, 1);
            return -1;
        }
    }
    rc = len ? MPI_Bcast(text, (int)len, MPI_CHAR, 0, MPI_COMM_WORLD) : MPI_SUCCESS;
    if (rc != MPI_SUCCESS) {
        if (self->rank != 0)
            mem_free(text);
        return s_mpi_fail(err, rc, "MPI_Bcast");
    }
    text[len] = '\0';
    *text_p = text;
    if (len_p)
        *len_p = (size_t)len;
    return 0;
}

int boot_send_string(boot_t *self, int to, const char *text, err_t *err)
{
    assert(self);
    assert(text);
    if (to < 0 || to >= self->size || to == self->rank)
        return err_set(err, EINVAL, "no rank %d to send to (ranks 0..%d, this is %d)", to,
                       self->size - 1, self->rank);
    char rec[BOOT_STRING_MAX];
    snprintf(rec, sizeof rec, "%s", text);
    int rc = MPI_Send(rec, (int)strlen(rec) + 1, MPI_CHAR, to, 0, MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? 0 : s_mpi_fail(err, rc, "MPI_Send");
}

int boot_recv_string(boot_t *self, int from, char buf[BOOT_STRING_MAX], err_t *err)
{
    assert(self);
    assert(buf);
    if (from < 0 || from >= self->size || from == self->rank)
        return err_set(err, EINVAL, "no rank %d to receive from (ranks 0..%d, this is %d)",
                       from, self->size - 1, self->rank);
    int rc = MPI_Recv(buf, BOOT_STRING_MAX, MPI_CHAR, from, 0, MPI_COMM_WORLD,
                      MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS)
        return s_mpi_fail(err, rc, "MPI_Recv");
    buf[BOOT_STRING_MAX - 1] = '\0';
    return 0;
}

int boot_barrier(boot_t *self, err_t *err)
{
    assert(self);
    int rc = MPI_Barrier(MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS)
        return s_mpi_fail(err, rc, "MPI_Barrier");
    return 0;
}
