/* attention: causal grouped-query attention of a block of new query rows
 * against the KV cache, as Hugging Face's eager attention.
 *
 * Work is organised around KV heads: the query heads that share KV head g
 * (a "group") are stacked into one matrix, so each product reads K_g and V_g
 * once for the whole group instead of once per query head. Query rows are
 * taken in blocks of about ATTN_BLOCK_ROWS stacked rows, which
 *   - bounds the scratch to (block rows) x (visible keys), not n_q x n_ctx;
 *   - skips the keys no row of the block can see: those after the block's
 *     last position and, with a sliding window, those before its first row's
 *     window.
 * Within a block a row's score row covers the block's key span [lo, hi]; the
 * keys it may not see (later than its position, or outside its window) get
 * probability exactly 0. That is bit for bit what masking them with -INFINITY
 * and running softmax() over the whole span gives (expf(-inf) == 0 adds
 * nothing to the max or the sum), without spending expf on them.
 *
 * With sinks, a row's softmax also takes its head's sink logit into the max
 * and the denominator (s_softmax_sink), then drops it.
 *
 * Scratch layout, in floats, for m stacked rows and up to n_span keys:
 *   qs: (m, head_dim)    the group's queries, row (r, j) = query row r, head j
 *   ss: (m, n_span)      scores, then probabilities
 *   os: (m, v_head_dim)  the group's outputs, scattered back into out
 */
#include "kernels/attention.h"

#include <assert.h>
#include <math.h>
#include <string.h>

#include "kernels/gemm.h"
#include "kernels/softmax.h"

/* Stacked rows per block: enough for each sgemm to amortise packing its K or
 * V span, few enough that the scores computed and then masked inside a block
 * (about half a block per row, past the causal diagonal) stay negligible next
 * to a long context. 64 to 512 measured within noise of each other on a 2048
 * token prefill. */
enum { ATTN_BLOCK_ROWS = 128 };

/* Query rows per block: the group's heads of each row are stacked together. */
static int s_block_q(const attention_shape_t *shape, int n_q)
{
    int group = shape->n_heads / shape->n_kv_heads;
    int nb = ATTN_BLOCK_ROWS / group;
    if (nb < 1)
        nb = 1;
    return nb < n_q ? nb : n_q;
}

/* Widest key span a block of nb rows can see in a context of n_ctx. */
static int s_max_span(const attention_shape_t *shape, int nb, int n_ctx)
{
    if (shape->window > 0 && shape->window - 1 + nb < n_ctx)
        return shape->window - 1 + nb;
    return n_ctx;
}

size_t attention_scratch_floats(const attention_shape_t *shape, int n_q,
                                int n_ctx)
{
    assert(shape);
    assert(shape->n_kv_heads >= 1 && shape->n_heads % shape->n_kv_heads == 0);
    assert(n_q >= 0 && n_ctx >= n_q);
    if (n_q == 0)
        return 0;
    int group = shape->n_heads / shape->n_kv_heads;
    int nb = s_block_q(shape, n_q);
    size_t m = (size_t)nb * group;
    size_t span = (size_t)s_max_span(shape, nb, n_ctx);
    return m * ((size_t)shape->head_dim + span + (size_t)shape->v_head_dim);
}

/* Softmax of one score row over the keys its position p sees, which lie in
 * [vis_lo, p] within the row's span [lo, ..]; every other entry becomes 0.
 *   row: (n_span), entry c holds key position lo + c */
static void s_softmax_visible(float *row, int n_span, int lo, int vis_lo, int p)
{
    int a = vis_lo - lo; /* first visible entry */
    int b = p - lo + 1;  /* one past the last */
    assert(a >= 0 && a < b && b <= n_span);
    memset(row, 0, (size_t)a * sizeof *row);
    softmax(row + a, b - a);
    memset(row + b, 0, (size_t)(n_span - b) * sizeof *row);
}

/* s_softmax_visible with one more logit, sink, that joins the max and the
 * denominator but gets no entry. Like softmax(): float32 exponentials, their
 * sum in float64, then one float32 reciprocal multiplies every entry. */
static void s_softmax_sink(float *row, int n_span, int lo, int vis_lo, int p,
                           float sink)
{
    int a = vis_lo - lo, b = p - lo + 1;
    assert(a >= 0 && a < b && b <= n_span);
    memset(row, 0, (size_t)a * sizeof *row);
    float max = sink;
    for (int c = a; c < b; c++)
        max = row[c] > max ? row[c] : max;
    double sum = 0.0;
    for (int c = a; c < b; c++) {
        row[c] = expf(row[c] - max);
        sum += row[c];
    }
    /* sum >= 1: the maximum, a score or the sink, contributes expf(0). */
    sum += expf(sink - max);
    float inv = (float)(1.0 / sum);
    for (int c = a; c < b; c++)
        row[c] *= inv;
    memset(row + b, 0, (size_t)(n_span - b) * sizeof *row);
}

void attention(compute_t *cx, float *out, int ldo, const float *q, int ldq,
               const float *k, int ldk, const float *v, int ldv,
               const attention_shape_t *shape, int n_q, int pos0,
               float *scratch)
{
    assert(cx && out && q && k && v && shape);
    assert(shape->n_heads >= 1 && shape->n_kv_heads >= 1);
    assert(shape->n_heads % shape->n_kv_heads == 0);
    assert(shape->head_dim >= 1 && shape->v_head_dim >= 1);
    assert(shape->window >= 0);
    assert(n_q >= 0 && pos0 >= 0);
    assert(n_q == 0 || scratch);
    const int hd = shape->head_dim, vd = shape->v_head_dim;
    const int group = shape->n_heads / shape->n_kv_heads;
    const int window = shape->window;
    assert(ldq >= shape->n_heads * hd && ldo >= shape->n_heads * vd);
    assert(ldk >= shape->n_kv_heads * hd && ldv >= shape->n_kv_heads * vd);
    if (n_q == 0)
        return;
    const int nb_max = s_block_q(shape, n_q);
    const int m_max = nb_max * group;
    const int span_max = s_max_span(shape, nb_max, pos0 + n_q);
    float *qs = scratch;                         /* (m_max, hd) */
    float *ss = qs + (size_t)m_max * hd;         /* (m_max, span_max) */
    float *os = ss + (size_t)m_max * span_max;   /* (m_max, vd) */

    for (int r0 = 0; r0 < n_q; r0 += nb_max) {
        const int nb = n_q - r0 < nb_max ? n_q - r0 : nb_max;
        const int m = nb * group;
        const int p_first = pos0 + r0, p_last = p_first + nb - 1;
        /* Key span [lo, hi] of the block: what its first row's window
         * starts at, up to its last row's own position. */
        const int lo = window > 0 && p_first - window + 1 > 0
                           ? p_first - window + 1 : 0;
        const int n_span = p_last - lo + 1;
        assert(n_span <= span_max);

        for (int g = 0; g < shape->n_kv_heads; g++) {
            /* The group's heads are adjacent in a query row, so each row
             * contributes one contiguous (group, hd) slab to qs. */
            for (int r = 0; r < nb; r++)
                memcpy(qs + (size_t)r * group * hd,
                       q + (size_t)(r0 + r) * ldq + (size_t)g * group * hd,
                       (size_t)group * hd * sizeof *qs);
            /* kg: (n_span, hd), vg: (n_span, vd), row strides ldk, ldv */
            const float *kg = k + (size_t)lo * ldk + (size_t)g * hd;
            const float *vg = v + (size_t)lo * ldv + (size_t)g * vd;

            /* ss = scale * qs kg^T: (m, n_span) */
            gemm(cx, ss, n_span, qs, hd, kg, ldk, m, n_span, hd, true,
                 shape->scale, 0.0f);
            for (int r = 0; r < nb; r++) {
                const int p = p_first + r;
                const int vis_lo = window > 0 && p - window + 1 > lo
                                       ? p - window + 1 : lo;
                for (int j = 0; j < group; j++) {
                    float *row = ss + (size_t)(r * group + j) * n_span;
                    if (shape->sinks)
                        s_softmax_sink(row, n_span, lo, vis_lo, p,
                                       shape->sinks[g * group + j]);
                    else
                        s_softmax_visible(row, n_span, lo, vis_lo, p);
                }
            }
            /* os = P vg: (m, vd) */
            gemm(cx, os, vd, ss, n_span, vg, ldv, m, vd, n_span, false, 1.0f,
                 0.0f);
            for (int r = 0; r < nb; r++)
                memcpy(out + (size_t)(r0 + r) * ldo + (size_t)g * group * vd,
                       os + (size_t)r * group * vd,
                       (size_t)group * vd * sizeof *os);
        }
    }
}
