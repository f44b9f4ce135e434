/* jinja_exec: statements: output, if, for (loop object, loop filter,
 * else, break/continue), set (names, tuples, namespace attributes, blocks),
 * macro definitions, call and filter blocks, with; and the render entry.
 * A `set` writes the innermost frame: a loop iteration's own, so it does not
 * outlive the iteration, as Jinja2 compiles it.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "chat/jinja_private.h"
#include "core/mem.h"

enum { X_OK = 0, X_BREAK = 1, X_CONTINUE = 2 };

/* ---- statements ------------------------------------------------------------------------ */
static int s_assign(jrender_t *r, const node_t *target, jframe_t *f, jv_t *v)
{
    if (target->type == N_NAME)
        return jinja_frame_set(r, f, target->str, v);
    if (target->type == N_ATTR) {
        jv_t obj = jinja_lookup(r, f, target->kids[0]->str);
        int rc;
        if (obj.kind != JV_NS)
            rc = jr_fail(r, target->line, "cannot assign attribute on non-namespace object");
        else
            rc = jinja_ns_set(r, obj.p, target->str, v);
        jv_free(&obj);
        jv_free(v);
        return rc;
    }
    /* tuple unpacking */
    int rc = 0;
    json_t *arr = jv_iter_array(r, target->line, v, &rc);
    if (!arr) {
        jv_free(v);
        return -1;
    }
    if ((int)json_array_size(arr) != target->n_kids) {
        rc = jr_fail(r, target->line, "%s values to unpack (expected %d, got %zu)",
                     (int)json_array_size(arr) > target->n_kids ? "too many" : "not enough",
                     target->n_kids, json_array_size(arr));
    }
    for (int i = 0; rc == 0 && i < target->n_kids; i++) {
        jv_t e = jv_elem(json_array_get(arr, (size_t)i));
        rc = jinja_frame_set(r, f, target->kids[i]->str, &e);
    }
    json_decref(arr);
    jv_free(v);
    return rc;
}

static int s_exec_for(jrender_t *r, const node_t *n, jframe_t *f, jbuf_t *out)
{
    jv_t it;
    if (jinja_eval(r, n->kids[1], f, &it) < 0)
        return -1;
    int rc = 0;
    json_t *items = jv_iter_array(r, n->line, &it, &rc);
    jv_free(&it);
    if (!items)
        return -1;
    if (n->kids[2]) { /* for x in y if cond: filter first, loop.* counts what is left */
        json_t *kept = json_array();
        if (!kept) {
            json_decref(items);
            return jinja_oom(r);
        }
        for (size_t i = 0; rc == 0 && i < json_array_size(items); i++) {
            jframe_t cf = {.parent = f};
            jv_t e = jv_elem(json_array_get(items, i)), c;
            rc = s_assign(r, n->kids[0], &cf, &e);
            if (rc == 0 && (rc = jinja_eval(r, n->kids[2], &cf, &c)) == 0) {
                if (jv_truth(&c) && json_array_append(kept, json_array_get(items, i)) < 0)
                    rc = jinja_oom(r);
                jv_free(&c);
            }
            jinja_frame_fini(&cf);
        }
        json_decref(items);
        items = kept;
        if (rc < 0) {
            json_decref(items);
            return -1;
        }
    }
    jloop_t *loop = mem_calloc(1, sizeof *loop);
    if (!loop) {
        json_decref(items);
        return jinja_oom(r);
    }
    loop->items = items;
    loop->next = r->loops;
    r->loops = loop;
    size_t len = json_array_size(items);
    for (size_t i = 0; i < len; i++) {
        jframe_t lf = {.parent = f};
        loop->index0 = i;
        jv_t e = jv_elem(json_array_get(items, i));
        jv_t lv = {.kind = JV_LOOP, .p = loop};
        rc = s_assign(r, n->kids[0], &lf, &e);
        if (rc == 0)
            rc = jinja_frame_set(r, &lf, "loop", &lv);
        if (rc == 0)
            rc = jinja_exec(r, n->kids[3], &lf, out);
        jinja_frame_fini(&lf);
        if (rc < 0)
            return -1;
        if (rc == X_BREAK)
            break;
    }
    if (len == 0 && n->kids[4]) {
        jframe_t ef = {.parent = f};
        rc = jinja_exec(r, n->kids[4], &ef, out);
        jinja_frame_fini(&ef);
        if (rc < 0)
            return -1;
    }
    return X_OK;
}

/* Renders body into a string and runs the filter chain over it. */
static int s_capture(jrender_t *r, const node_t *body, const node_t *chain, jframe_t *f,
                     jv_t *out)
{
    jbuf_t b = {0};
    jv_t s;
    if (jinja_exec(r, body, f, &b) < 0) {
        jbuf_free(&b);
        return -1;
    }
    if (jinja_str_value(r, &b, &s) < 0)
        return -1;
    if (!chain) {
        *out = s;
        return 0;
    }
    const jv_t *saved = r->block_value;
    r->block_value = &s;
    int rc = jinja_eval(r, chain, f, out);
    r->block_value = saved;
    jv_free(&s);
    return rc;
}

static int s_exec_inner(jrender_t *r, const node_t *n, jframe_t *f, jbuf_t *out)
{
    jv_t v = jv_undef(NULL);
    int rc;
    switch (n->type) {
    case N_BODY:
        for (int i = 0; i < n->n_kids; i++)
            if ((rc = jinja_exec(r, n->kids[i], f, out)) != X_OK)
                return rc;
        return X_OK;
    case N_TEXT:
        jbuf_add(out, n->str, n->len);
        return X_OK;
    case N_OUTPUT:
        if (jinja_eval(r, n->kids[0], f, &v) < 0)
            return -1;
        jv_str(out, &v);
        jv_free(&v);
        return X_OK;
    case N_IF:
        if (jinja_eval(r, n->kids[0], f, &v) < 0)
            return -1;
        bool t = jv_truth(&v);
        jv_free(&v);
        if (t)
            return jinja_exec(r, n->kids[1], f, out);
        return n->kids[2] ? jinja_exec(r, n->kids[2], f, out) : X_OK;
    case N_FOR:
        return s_exec_for(r, n, f, out);
    case N_SET:
        if (jinja_eval(r, n->kids[1], f, &v) < 0)
            return -1;
        return s_assign(r, n->kids[0], f, &v);
    case N_SETBLOCK:
        if (s_capture(r, n->kids[1], n->kids[2], f, &v) < 0)
            return -1;
        return s_assign(r, n->kids[0], f, &v);
    case N_MACRO:
        v = (jv_t){.kind = JV_MACRO, .p = (void *)n, .env = f};
        return jinja_frame_set(r, f, n->str, &v);
    case N_CALLBLOCK: {
        jcaller_t c = {.block = n, .frame = f};
        if (jinja_eval_call(r, n->kids[0], f, &c, &v) < 0)
            return -1;
        jv_str(out, &v);
        jv_free(&v);
        return X_OK;
    }
    case N_FILTERBLOCK:
        if (s_capture(r, n->kids[1], n->kids[0], f, &v) < 0)
            return -1;
        jv_str(out, &v);
        jv_free(&v);
        return X_OK;
    case N_WITH: {
        jframe_t wf = {.parent = f};
        rc = jinja_exec(r, n->kids[0], &wf, out);
        if (rc == X_OK)
            rc = jinja_exec(r, n->kids[1], &wf, out);
        jinja_frame_fini(&wf);
        return rc;
    }
    case N_BREAK:
        return X_BREAK;
    case N_CONTINUE:
        return X_CONTINUE;
    default:
        if (jinja_eval(r, n, f, &v) < 0)
            return -1;
        jv_free(&v);
        return X_OK;
    }
}

int jinja_exec(jrender_t *r, const node_t *n, jframe_t *f, jbuf_t *out)
{
    if (jinja_enter(r, n->line) < 0)
        return -1;
    int rc = s_exec_inner(r, n, f, out);
    r->depth--;
    if (rc >= 0 && out->failed) {
        if (!out->oom)
            return jr_fail(r, n->line, "output longer than %zu bytes", JINJA_OUTPUT_MAX);
        return jinja_oom(r);
    }
    if (rc < 0 && !r->failed)
        return jinja_oom(r);
    return rc;
}

int jinja_render(const node_t *root, jrender_t *r, jbuf_t *out)
{
    jframe_t top = {0};
    int rc = jinja_exec(r, root, &top, out);
    jinja_frame_fini(&top);
    while (r->namespaces) {
        jns_t *ns = r->namespaces;
        r->namespaces = ns->next;
        for (size_t i = 0; i < ns->n; i++) {
            mem_free(ns->keys[i]);
            jv_free(&ns->vals[i]);
        }
        mem_free(ns->keys);
        mem_free(ns->vals);
        mem_free(ns);
    }
    while (r->loops) {
        jloop_t *l = r->loops;
        r->loops = l->next;
        json_decref(l->items);
        mem_free(l);
    }
    return rc < 0 ? -1 : 0;
}

