/* jinja_call: calling what a template can call: its macros (a new frame
 * over the frame the macro was defined in; defaults evaluated there),
 * caller() of a call block, and the globals transformers provides
 * (raise_exception, strftime_now, namespace, range, dict); methods go to
 * jinja_method.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "chat/jinja_private.h"
#include "core/mem.h"

/* ---- calls ------------------------------------------------------------------------ */
void jinja_args_free(jv_t *args, int n)
{
    for (int i = 0; i < n; i++)
        jv_free(&args[i]);
    mem_free(args);
}

/* Evaluates kids[first..] of n into a new array. */
int jinja_eval_args(jrender_t *r, const node_t *n, int first, jframe_t *f, jv_t **args_p)
{
    int k = n->n_kids - first;
    *args_p = NULL;
    if (k <= 0)
        return 0;
    jv_t *args = mem_calloc((size_t)k, sizeof *args);
    if (!args)
        return jinja_oom(r);
    for (int i = 0; i < k; i++)
        if (jinja_eval(r, n->kids[first + i], f, &args[i]) < 0) {
            jinja_args_free(args, i);
            return -1;
        }
    *args_p = args;
    return 0;
}

static int s_call_macro(jrender_t *r, int line, const node_t *m, jframe_t *env, jv_t *args,
                        char **names, int n_args, jcaller_t *caller, jframe_t *f, jv_t *out)
{
    int n_params = m->n_kids - 1;
    jframe_t mf = {.parent = env ? env : jinja_frame_root(f)};
    jbuf_t b = {0};
    int rc = -1;
    int pos = 0;
    for (int i = 0; i < n_args; i++) {
        if (names && names[i]) {
            int k;
            for (k = 0; k < n_params; k++)
                if (!strcmp(m->names[k + 1], names[i]))
                    break;
            if (k == n_params) {
                jr_fail(r, line, "macro '%s' takes no keyword argument '%s'", m->str, names[i]);
                goto done;
            }
            if (jinja_frame_set(r, &mf, m->names[k + 1], &args[i]) < 0)
                goto done;
        } else {
            if (pos >= n_params) {
                jr_fail(r, line, "macro '%s' takes not more than %d argument(s)", m->str,
                        n_params);
                goto done;
            }
            if (jinja_frame_set(r, &mf, m->names[pos + 1], &args[i]) < 0)
                goto done;
            pos++;
        }
    }
    for (int k = 0; k < n_params; k++) {
        bool bound = false;
        for (size_t i = 0; i < mf.n; i++)
            bound |= !strcmp(mf.names[i], m->names[k + 1]);
        if (bound)
            continue;
        jv_t v = jv_undef(m->names[k + 1]);
        if (m->kids[k + 1] && jinja_eval(r, m->kids[k + 1], &mf, &v) < 0)
            goto done;
        if (jinja_frame_set(r, &mf, m->names[k + 1], &v) < 0)
            goto done;
    }
    if (caller) {
        jv_t c = {.kind = JV_CALLER, .p = caller};
        if (jinja_frame_set(r, &mf, "caller", &c) < 0)
            goto done;
    }
    if (jinja_exec(r, m->kids[0], &mf, &b) < 0)
        goto done;
    rc = jinja_str_value(r, &b, out);
done:
    jbuf_free(&b);
    jinja_frame_fini(&mf);
    return rc;
}

static int s_call_caller(jrender_t *r, int line, jcaller_t *c, jv_t *args, char **names,
                         int n_args, jv_t *out)
{
    const node_t *blk = c->block;
    int n_params = blk->n_kids - 2;
    jframe_t cf = {.parent = c->frame};
    jbuf_t b = {0};
    int rc = -1;
    for (int i = 0; i < n_args; i++) {
        int k = i;
        if (names && names[i])
            for (k = 0; k < n_params && strcmp(blk->names[k + 2], names[i]); k++)
                ;
        if (k >= n_params) {
            jr_fail(r, line, "caller() takes %d argument(s)", n_params);
            goto done;
        }
        if (jinja_frame_set(r, &cf, blk->names[k + 2], &args[i]) < 0)
            goto done;
    }
    for (int k = 0; k < n_params; k++) {
        bool bound = false;
        for (size_t i = 0; i < cf.n; i++)
            bound |= !strcmp(cf.names[i], blk->names[k + 2]);
        jv_t v = jv_undef(blk->names[k + 2]);
        if (bound)
            continue;
        if (blk->kids[k + 2] && jinja_eval(r, blk->kids[k + 2], &cf, &v) < 0)
            goto done;
        if (jinja_frame_set(r, &cf, blk->names[k + 2], &v) < 0)
            goto done;
    }
    if (jinja_exec(r, blk->kids[1], &cf, &b) < 0)
        goto done;
    rc = jinja_str_value(r, &b, out);
done:
    jbuf_free(&b);
    jinja_frame_fini(&cf);
    return rc;
}


static int s_call_global(jrender_t *r, int line, const char *fn, jv_t *args, char **names,
                         int n_args, jv_t *out)
{
    if (!strcmp(fn, "raise_exception")) {
        jbuf_t b = {0};
        if (n_args > 0)
            jv_str(&b, &args[0]);
        if (!r->failed) {
            r->failed = true;
            r->raised = true;
            err_set(r->err, EINVAL, "%s", b.p ? b.p : "");
        }
        jbuf_free(&b);
        return -1;
    }
    if (!strcmp(fn, "strftime_now")) {
        if (n_args != 1 || !jv_is_str(&args[0]))
            return jr_fail(r, line, "strftime_now() takes one format string");
        char buf[512];
        size_t k = strftime(buf, sizeof buf, json_string_value(args[0].j), &r->now);
        if (k == 0 && json_string_length(args[0].j) > 0)
            return jr_fail(r, line, "strftime_now(): format too long");
        json_t *j = json_stringn_nocheck(buf, k);
        if (!j)
            return jinja_oom(r);
        *out = jv_data(j);
        return 0;
    }
    if (!strcmp(fn, "range")) {
        for (int i = 0; i < n_args; i++)
            if ((names && names[i]) || !jv_is_int(&args[i]))
                return jr_fail(r, line, "range() takes integers");
        int64_t a = 0, b = 0, step = 1;
        if (n_args == 1)
            b = jv_int(&args[0]);
        else if (n_args == 2 || n_args == 3) {
            a = jv_int(&args[0]);
            b = jv_int(&args[1]);
            if (n_args == 3)
                step = jv_int(&args[2]);
        } else
            return jr_fail(r, line, "range() takes 1 to 3 arguments");
        if (step == 0)
            return jr_fail(r, line, "range() arg 3 must not be zero");
        json_t *arr = json_array();
        int64_t count = 0;
        for (int64_t i = a; arr && (step > 0 ? i < b : i > b); i += step) {
            if (++count > JINJA_RANGE_MAX || jinja_charge(r, line, 1) < 0) {
                json_decref(arr);
                if (r->failed)
                    return -1;
                return jr_fail(r, line, "range() of more than %d numbers", JINJA_RANGE_MAX);
            }
            if (json_array_append_new(arr, json_integer(i)) < 0) {
                json_decref(arr);
                arr = NULL;
            }
            if (__builtin_add_overflow(i, step, &(int64_t){0}))
                break;
        }
        if (!arr)
            return jinja_oom(r);
        *out = jv_data(arr);
        return 0;
    }
    if (!strcmp(fn, "namespace") || !strcmp(fn, "dict")) {
        bool ns_kind = fn[0] == 'n';
        jns_t *ns = ns_kind ? jinja_ns_new(r) : NULL;
        json_t *d = ns_kind ? NULL : json_object();
        if (ns_kind ? !ns : !d)
            return jinja_oom(r);
        for (int i = 0; i < n_args; i++) {
            if (!(names && names[i])) {
                /* a positional mapping: its items first */
                if (!jv_is(&args[i], JSON_OBJECT)) {
                    json_decref(d);
                    return jr_fail(r, line, "%s() takes keyword arguments or a dict", fn);
                }
                const char *k;
                json_t *v;
                json_object_foreach(args[i].j, k, v) {
                    jv_t e = jv_elem(v);
                    if (ns_kind ? jinja_ns_set(r, ns, k, &e) < 0
                                : json_object_set_new(d, k, json_incref(v)) < 0) {
                        jv_free(&e);
                        json_decref(d);
                        return jinja_oom(r);
                    }
                    jv_free(&e);
                }
                continue;
            }
            if (ns_kind) {
                jv_t e = jv_copy(&args[i]);
                if (jinja_ns_set(r, ns, names[i], &e) < 0)
                    return -1;
            } else {
                json_t *j = jv_to_json(&args[i]);
                if (!j) {
                    json_decref(d);
                    return jr_fail(r, line, "a %s cannot be stored in a dict",
                                   jv_type_name(&args[i]));
                }
                if (json_object_set_new(d, names[i], j) < 0) {
                    json_decref(d);
                    return jinja_oom(r);
                }
            }
        }
        *out = ns_kind ? (jv_t){.kind = JV_NS, .p = ns} : jv_data(d);
        return 0;
    }
    return jr_fail(r, line, "function '%s' is not supported", fn);
}

int jinja_call(jrender_t *r, int line, jv_t *callee, jv_t *args, char **names, int n_args,
                  jcaller_t *caller, jframe_t *f, jv_t *out)
{
    switch (callee->kind) {
    case JV_MACRO:
        return s_call_macro(r, line, callee->p, callee->env, args, names, n_args, caller, f,
                            out);
    case JV_CALLER:
        return s_call_caller(r, line, callee->p, args, names, n_args, out);
    case JV_FUNC:
        return s_call_global(r, line, callee->name, args, names, n_args, out);
    case JV_METHOD:
        if (callee->p && !callee->j) { /* loop.cycle */
            const jloop_t *l = callee->p;
            if (strcmp(callee->name, "cycle") != 0)
                return jr_fail(r, line, "loop.%s() is not supported", callee->name);
            if (n_args == 0)
                return jr_fail(r, line, "no items for cycling given");
            *out = jv_copy(&args[l->index0 % (size_t)n_args]);
            return 0;
        }
        return jinja_method_call(r, line, callee, args, names, n_args, out);
    case JV_UNDEF:
        return jr_undef_fail(r, line, callee);
    default:
        return jr_fail(r, line, "'%s' object is not callable", jv_type_name(callee));
    }
}

