/* test_chat_template: the chat template interpreter (chat/chat_template.h).
 *
 * Checks: every case of every reference template in $MOE_CHAT_TEMPLATES
 * (shared/chat-templates: the folder is listed, not named file by file)
 * renders byte-identical to what transformers' apply_chat_template gave, or
 * fails where it failed (with raise_exception's exact message); the
 * semantics of each feature against a table made with Jinja2 3.1 in
 * transformers' environment (S_TABLE below: operators, filters, tests,
 * methods, loops, scoping, macros, whitespace control, errors); unsupported
 * constructs and syntax errors named with their line at parse; hostile
 * templates (deep nesting, runaway recursion and loops, huge strings) end
 * with an error; loading from a model folder (tokenizer_config.json string or
 * list, chat_template.jinja, special tokens); render_chat; out of memory;
 * moe-template end to end; the templates moe-mkmodel writes render for every
 * family.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat/chat_template.h"
#include "core/mem.h"
#include "tests/testutil.h"

/* ---- helpers ---------------------------------------------------------------- */

/* The reference cases' FIXED_NOW: Thursday 15 January 2026, 10:00:00. */
static void s_fixed_now(chat_template_t *t)
{
    struct tm now = {.tm_year = 2026 - 1900, .tm_mon = 0, .tm_mday = 15, .tm_hour = 10,
                     .tm_wday = 4, .tm_yday = 14};
    chat_template_set_now(t, &now);
}

static chat_template_t *s_new(const char *src, err_t *err)
{
    chat_template_t *t = chat_template_new(src, strlen(src), err);
    if (t)
        s_fixed_now(t);
    return t;
}

/* Renders src with ctx (JSON text); returns 0 with *out or -1 with err. */
static int s_render(const char *src, const char *ctx_text, char **out, err_t *err)
{
    json_error_t jerr;
    json_t *ctx = json_loads(ctx_text, 0, &jerr);
    assert_non_null(ctx);
    size_t len;
    *out = NULL;
    chat_template_t *t = s_new(src, err);
    int rc = -1;
    if (t) {
        rc = chat_template_render(t, ctx, out, &len, err);
        if (rc == 0)
            assert_int_equal(strlen(*out), len);
    }
    chat_template_destroy(&t);
    json_decref(ctx);
    return rc;
}

/* Renders src with an empty context and checks the text. */
static void s_expect(const char *src, const char *want)
{
    char *out = NULL;
    err_t err = {0};
    if (s_render(src, "{}", &out, &err) < 0)
        fail_msg("template %s: %s", src, err.msg);
    if (strcmp(out, want) != 0)
        fail_msg("template %s:\n got  '%s'\n want '%s'", src, out, want);
    free(out);
}

/* Parsing src fails with EINVAL and an error that holds needle. */
static void s_expect_parse_error(const char *src, const char *needle)
{
    err_t err = {0};
    errno = 0;
    chat_template_t *t = chat_template_new(src, strlen(src), &err);
    if (t) {
        chat_template_destroy(&t);
        fail_msg("template %.200s: parsed, want an error holding '%s'", src, needle);
    }
    assert_int_equal(errno, EINVAL);
    if (!strstr(err.msg, needle))
        fail_msg("template %.200s: error '%s' does not hold '%s'", src, err.msg, needle);
}

/* Rendering src (with an empty context) fails with EINVAL and needle. */
static void s_expect_render_error(const char *src, const char *needle)
{
    char *out = NULL;
    err_t err = {0};
    errno = 0;
    if (s_render(src, "{}", &out, &err) == 0) {
        fail_msg("template %s: rendered '%s', want an error holding '%s'", src, out, needle);
    }
    assert_int_equal(errno, EINVAL);
    if (!strstr(err.msg, needle))
        fail_msg("template %s: error '%s' does not hold '%s'", src, err.msg, needle);
}

static const char *s_templates_dir(void)
{
    return testutil_env("MOE_CHAT_TEMPLATES", "../shared/chat-templates");
}

/* ---- reference cases ------------------------------------------------------------ */

/* The context transformers builds for a case (README of the cases). */
static json_t *s_case_context(const json_t *c)
{
    json_t *ctx = json_pack("{s:O, s:O, s:n, s:O}", "messages", json_object_get(c, "messages"),
                            "tools", json_object_get(c, "tools"), "documents",
                            "add_generation_prompt", json_object_get(c, "add_generation_prompt"));
    assert_non_null(ctx);
    const char *keys[] = {"bos_token", "eos_token"};
    for (int k = 0; k < 2; k++) {
        json_t *v = json_object_get(c, keys[k]);
        if (json_is_string(v))
            assert_int_equal(json_object_set(ctx, keys[k], v), 0);
    }
    return ctx;
}

/* Runs every case of one template; returns the number that differ. */
static int s_run_cases(const char *dir, const char *cases_name, int *n_cases)
{
    char path[4096], tpl_path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, cases_name);
    snprintf(tpl_path, sizeof tpl_path, "%s/%.*s.jinja", dir,
             (int)(strlen(cases_name) - strlen(".cases.json")), cases_name);
    size_t len;
    char *src = testutil_read_file(tpl_path, &len);
    if (!src)
        fail_msg("cannot read %s", tpl_path);
    err_t err = {0};
    chat_template_t *t = chat_template_new(src, len, &err);
    if (!t)
        fail_msg("%s: %s", tpl_path, err.msg);
    s_fixed_now(t);
    json_error_t jerr;
    json_t *cases = json_load_file(path, 0, &jerr);
    if (!json_is_array(cases))
        fail_msg("%s: %s", path, jerr.text);
    int bad = 0;
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c) {
        json_t *ctx = s_case_context(c);
        char *out = NULL;
        size_t out_len = 0;
        bool raised = false;
        err_t rerr = {0};
        int rc = chat_template_render_ex(t, ctx, &out, &out_len, &raised, &rerr);
        const char *id = json_string_value(json_object_get(c, "id"));
        const json_t *want = json_object_get(c, "expected");
        const json_t *want_err = json_object_get(c, "error");
        const char *etype = json_string_value(json_object_get(c, "error_type"));
        if (want) {
            if (rc != 0) {
                print_error("%s %s: failed: %s\n", cases_name, id, rerr.msg);
                bad++;
            } else if (out_len != json_string_length(want) ||
                       memcmp(out, json_string_value(want), out_len) != 0) {
                print_error("%s %s: rendered\n%s\n--- want ---\n%s\n", cases_name, id, out,
                            json_string_value(want));
                bad++;
            }
        } else if (rc == 0) {
            print_error("%s %s: rendered, want %s: %s\n", cases_name, id, etype,
                        json_string_value(want_err));
            bad++;
        } else if (etype && !strcmp(etype, "TemplateError") &&
                   (!raised || strcmp(rerr.msg, json_string_value(want_err)) != 0)) {
            print_error("%s %s: error '%s', want raise_exception's '%s'\n", cases_name, id,
                        rerr.msg, json_string_value(want_err));
            bad++;
        }
        free(out);
        json_decref(ctx);
        (*n_cases)++;
    }
    json_decref(cases);
    chat_template_destroy(&t);
    free(src);
    return bad;
}

static void test_reference_cases(void **state)
{
    (void)state;
    const char *dir = s_templates_dir();
    DIR *d = opendir(dir);
    if (!d)
        testutil_skip_unless_possible(false, "no reference chat templates in %s", dir);
    int n_files = 0, n_cases = 0, bad = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n <= strlen(".cases.json") || strcmp(e->d_name + n - 11, ".cases.json") != 0)
            continue;
        bad += s_run_cases(dir, e->d_name, &n_cases);
        n_files++;
    }
    closedir(d);
    print_message("%d templates, %d cases, %d differ\n", n_files, n_cases, bad);
    assert_true(n_files > 0);
    assert_true(n_cases > 0);
    assert_int_equal(bad, 0);
}

/* ---- semantics, against Jinja2 -------------------------------------------------- */

/* The context of S_TABLE (a JSON object: each key a variable). */
static const char S_CTX[] =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"Be  brief.\\n\"}, {\"role\": \"user\", \"content\": \"Héllo, 世界! \\\"q\\\" 'a' \\\\ tab\\t end  \"},\n"
    "  {\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"c1\", \"type\": \"function\", \"function\": {\"name\": \"f\", \"arguments\": {\"b\": 2, \"a\": [1, 2.5, true, null]}}}]},\n"
    "  {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"part1\"}, {\"type\": \"image\"}]}],\n"
    " \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"get\", \"description\": \"d\", \"parameters\": {\"type\": \"object\", \"properties\": {\"x\": {\"type\": \"integer\"}}, \"required\": [\"x\"]}}}],\n"
    " \"documents\": null, \"add_generation_prompt\": true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\"}\n";

/* Template, Jinja2's output (NULL: Jinja2 failed with the error type named). */
static const struct table_case {
    const char *src;
    const char *want;
    const char *error_type;
} S_TABLE[] = {
    {"{{ 1 + 2 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ -7 % 3 }}|{{ 7 / 2 }}|{{ 6 / 2 }}|{{ 2 ** 10 }}|{{ 1.5 * 2 }}|{{ 0.1 + 0.2 }}|{{ 1e20 }}|{{ 1e-5 }}|{{ 3.0 }}|{{ -0.0 }}",
     "3|3|-4|2|3.5|3.0|1024|3.0|0.30000000000000004|1e+20|1e-05|3.0|-0.0", NULL},
    {"{{ 'a' ~ 1 ~ none ~ true ~ 1.5 }}|{{ 'ab' * 3 }}|{{ [1,2] + [3] }}|{{ [1, 'a', none, true, 1.5, {'k': 'v'}] }}|{{ {'a': 1, 'b': [1, 2]} }}",
     "a1NoneTrue1.5|ababab|[1, 2, 3]|[1, 'a', None, True, 1.5, {'k': 'v'}]|{'a': 1, 'b': [1, 2]}", NULL},
    {"{{ \"it's\" }}|{{ [\"it's\", 'say \"hi\"', 'both \\' \"', 'nl\\n', 'tab\\t', 'bs\\\\'] }}",
     "it's|[\"it's\", 'say \"hi\"', 'both \\' \"', 'nl\\n', 'tab\\t', 'bs\\\\']", NULL},
    {"{{ messages[1].content|length }}|{{ messages|length }}|{{ messages[0]['role'] }}|{{ messages.0.role }}|{{ messages[-1].role }}|{{ messages[10] is defined }}",
     "31|4|system|system|user|False", NULL},
    {"{{ messages[1].content[::-1] }}|{{ messages[1].content[2:5] }}|{{ messages[1].content[-4:] }}|{{ messages[1:3]|length }}|{{ [1,2,3,4,5][::2] }}|{{ [1,2,3,4,5][4:1:-1] }}|{{ 'abc'[5:] }}|{{ [1,2,3][-10:2] }}",
     "  dne \tbat \\ 'a' \"q\" !\347\225\214\344\270\226 ,oll\303\251H|llo|nd  |2|[1, 3, 5]|[5, 4, 3]||[1, 2]", NULL},
    {"{{ messages[1].content.strip() }}|{{ '  x  '.lstrip() }}|{{ '  x  '.rstrip() }}|{{ 'xxaxx'.strip('x') }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b c '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'a,b,c'.rsplit(',', 1) }}",
     "H\303\251llo, \344\270\226\347\225\214! \"q\" 'a' \\ tab\t end|x  |  x|a|['a', 'b', '', 'c']|['a', 'b', 'c']|['a', 'b c']|['a,b', 'c']", NULL},
    {"{{ 'Hello'.startswith('He') }}|{{ 'Hello'.endswith(('lo', 'x')) }}|{{ 'hello world'.title() }}|{{ 'hello WORLD'.capitalize() }}|{{ 'aXb'.upper() }}|{{ 'aXb'.lower() }}|{{ 'aaa'.replace('a', 'b', 2) }}|{{ 'abc'.replace('', '-') }}|{{ 'abcabc'.find('c') }}|{{ 'abcabc'.rfind('c') }}|{{ 'abcabc'.count('bc') }}|{{ '-'.join(['a', 'b']) }}",
     "True|True|Hello World|Hello world|AXB|axb|bba|-a-b-c-|2|5|2|a-b", NULL},
    {"{{ \"they're bill's\" | title }}|{{ \"they're bill's\".title() }}|{{ \"hello-world (x)\" | title }}|{{ '\303\211COLE'|lower }}|{{ 'stra\303\237e'|upper }}",
     "They're Bill's|They'Re Bill'S|Hello-World (X)|\303\251cole|STRASSE", NULL},
    {"{% for m in messages %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.first }}/{{ loop.last }}/{{ loop.length }}/{{ loop.revindex }}/{{ loop.revindex0 }} {% endfor %}",
     "1/0/True/False/4/4/3 2/1/False/False/4/3/2 3/2/False/False/4/2/1 4/3/False/True/4/1/0 ", NULL},
    {"{% for m in messages %}{% if loop.previtem is defined %}{{ loop.previtem.role }}{% endif %}>{{ m.role }}<{% if loop.nextitem is defined %}{{ loop.nextitem.role }}{% endif %} {% endfor %}",
     ">system<user system>user<assistant user>assistant<user assistant>user< ", NULL},
    {"{% for m in messages if m.role == 'user' %}{{ loop.index }}:{{ loop.length }} {% else %}none{% endfor %}|{% for x in [] %}x{% else %}empty{% endfor %}",
     "1:2 2:2 |empty", NULL},
    {"{% for k, v in messages[2].tool_calls[0].function.arguments.items() %}{{ k }}={{ v }};{% endfor %}|{% for k in {'z': 1, 'a': 2} %}{{ k }}{% endfor %}",
     "b=2;a=[1, 2.5, True, None];|za", NULL},
    {"{% set x = 1 %}{% for i in range(3) %}{% set x = x + i %}{{ x }}{% endfor %}{{ x }}",
     "1231", NULL},
    {"{% set ns = namespace(a=0, b='s') %}{% for i in range(4) %}{% set ns.a = ns.a + i %}{% endfor %}{{ ns.a }}{{ ns.b }}",
     "6s", NULL},
    {"{% if true %}{% set y = 5 %}{% endif %}{{ y }}",
     "5", NULL},
    {"{%- macro m(a, b=2, c='x') -%}[{{ a }}|{{ b }}|{{ c }}]{%- endmacro -%}{{ m(1) }}{{ m(1, 3) }}{{ m(1, c='z') }}{{ m() }}",
     "[1|2|x][1|3|x][1|2|z][|2|x]", NULL},
    {"{%- macro fact(n) -%}{% if n <= 1 %}1{% else %}{{ n * (fact(n - 1) | int) }}{% endif %}{%- endmacro -%}{{ fact(10) }}",
     "3628800", NULL},
    {"{% macro outer() %}{% for i in [1,2] %}{{ loop.index }}{% endfor %}{% endmacro %}{% for j in [5,6,7] %}{{ outer() }}{{ loop.index }};{% endfor %}",
     "121;122;123;", NULL},
    {"{% set captured %}Hello {{ messages[0].role }}{% endset %}[{{ captured }}]{% set up | upper %}abc{% endset %}{{ up }}",
     "[Hello system]ABC", NULL},
    {"{{ tools | tojson }}",
     "[{\"type\": \"function\", \"function\": {\"name\": \"get\", \"description\": \"d\", \"parameters\": {\"type\": \"object\", \"properties\": {\"x\": {\"type\": \"integer\"}}, \"required\": [\"x\"]}}}]", NULL},
    {"{{ tools | tojson(indent=2) }}",
     "[\n  {\n    \"type\": \"function\",\n    \"function\": {\n      \"name\": \"get\",\n      \"description\": \"d\",\n      \"parameters\": {\n        \"type\": \"object\",\n        \"properties\": {\n          \"x\": {\n            \"type\": \"integer\"\n          }\n        },\n        \"required\": [\n          \"x\"\n        ]\n      }\n    }\n  }\n]", NULL},
    {"{{ messages | tojson(ensure_ascii=True) }}",
     "[{\"role\": \"system\", \"content\": \"Be  brief.\\n\"}, {\"role\": \"user\", \"content\": \"H\\u00e9llo, \\u4e16\\u754c! \\\"q\\\" 'a' \\\\ tab\\t end  \"}, {\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"c1\", \"type\": \"function\", \"function\": {\"name\": \"f\", \"arguments\": {\"b\": 2, \"a\": [1, 2.5, true, null]}}}]}, {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"part1\"}, {\"type\": \"image\"}]}]", NULL},
    {"{{ {'b': 1, 'a': 2} | tojson(sort_keys=True) }}|{{ [1, 2] | tojson(separators=(',', ':')) }}|{{ '\303\251\\u001b\\x7f'|tojson }}|{{ 1.0|tojson }}|{{ none|tojson }}",
     "{\"a\": 2, \"b\": 1}|[1,2]|\"\303\251\\u001b\177\"|1.0|null", NULL},
    {"{{ x is defined }}|{{ none is none }}|{{ 1 is number }}|{{ 'a' is string }}|{{ {} is mapping }}|{{ [] is iterable }}|{{ 'a' is iterable }}|{{ 1 is iterable }}|{{ x is iterable }}|{{ true is boolean }}|{{ 1 is integer }}|{{ 1.0 is float }}|{{ 3 is odd }}|{{ 4 is even }}|{{ 9 is divisibleby 3 }}|{{ 'abc' is lower }}|{{ 'ABC' is upper }}|{{ none is sameas none }}|{{ 2 is in [1, 2] }}|{{ 1 is eq 1 }}|{{ true is true }}|{{ 0 is false }}",
     "False|True|True|True|True|True|True|False|True|True|True|True|True|True|True|True|True|True|True|True|True|False", NULL},
    {"{{ 'a' if false }}|{{ 'a' if true else 'b' }}|{{ none or 'd' }}|{{ 0 and 1 }}|{{ 1 and 2 }}|{{ not none }}|{{ 1 < 2 < 3 }}|{{ 3 > 2 > 5 }}|{{ 'b' > 'a' }}|{{ [1,2] < [1,3] }}|{{ 1 == 1.0 }}|{{ true == 1 }}|{{ 'a' != 'b' }}",
     "|a|d|0|2|True|True|False|True|True|True|True|True", NULL},
    {"{{ 'a' in 'cat' }}|{{ 'x' not in 'cat' }}|{{ 1 in [1, 2] }}|{{ 'role' in messages[0] }}|{{ 'zz' in messages[0] }}|{{ 'a' in x }}",
     "True|True|True|True|False|False", NULL},
    {"{{ [3, 1, 2] | sort }}|{{ ['b', 'A', 'c'] | sort }}|{{ ['b', 'A', 'c'] | sort(case_sensitive=true) }}|{{ [3, 1, 2] | sort(reverse=true) }}|{{ messages | map(attribute='role') | join(',') }}|{{ messages | selectattr('role', 'equalto', 'user') | list | length }}|{{ messages | rejectattr('content') | map(attribute='role') | list }}",
     "[1, 2, 3]|['A', 'b', 'c']|['A', 'b', 'c']|[3, 2, 1]|system,user,assistant,user|2|['assistant']", NULL},
    {"{{ [1, 2, 3, 4] | select('odd') | list }}|{{ [1, 2, 3, 4] | reject('odd') | list }}|{{ ['a', 'b'] | map('upper') | list }}|{{ [1, 1, 2, 'a', 'A'] | unique | list }}|{{ [1, 5, 3] | max }}|{{ [1, 5, 3] | min }}|{{ [1, 2, 3] | sum }}|{{ [1, 2] | first }}|{{ [1, 2] | last }}|{{ 'abc' | first }}|{{ [] | first }}",
     "[1, 3]|[2, 4]|['A', 'B']|[1, 2, 'a']|5|1|6|1|2|a|", NULL},
    {"{{ x | default('dflt') }}|{{ '' | default('dflt') }}|{{ '' | default('dflt', true) }}|{{ none | default('d') }}|{{ x | d('y') }}",
     "dflt||dflt|None|y", NULL},
    {"{{ '  pad  ' | trim }}|{{ 'xxpadxx' | trim('x') }}|{{ 'a\\nb\\n\\nc' | indent(2) }}|{{ 'a\\nb' | indent(2, true) }}|{{ 'a\\n\\nb' | indent(2, blank=true) }}|{{ 'hello' | center(11) }}|{{ 'abc' | replace('b', 'X') }}|{{ 'hello' | capitalize }}|{{ 'x' | upper }}|{{ '<&>' | e }}|{{ '<&>' | safe }}",
     "pad|pad|a\n  b\n\n  c|  a\n  b|a\n  \n  b|   hello   |aXc|Hello|X|&lt;&amp;&gt;|<&>", NULL},
    {"{{ '42' | int }}|{{ '4.7' | int }}|{{ 'x' | int }}|{{ 'x' | int(7) }}|{{ 4.7 | int }}|{{ '2.5' | float }}|{{ 3 | float }}|{{ -3 | abs }}|{{ 2.567 | round(2) }}|{{ 2.5 | round }}|{{ 3.5 | round }}|{{ 2.1 | round(method='ceil') }}",
     "42|4|0|7|4|2.5|3.0|3|2.57|2.0|4.0|3.0", NULL},
    {"{{ messages[0].get('role') }}|{{ messages[0].get('nope') }}|{{ messages[0].get('nope', 'dd') }}|{{ messages[0].keys() | list }}|{{ messages[0].values() | list }}",
     "system|None|dd|['role', 'content']|['system', 'Be  brief.\\n']", NULL},
    {"{{ '%s and %d' % ('a', 3) }}|{{ '%05.2f' % 3.14159 }}|{{ '%s' | format('x') }}|{{ '%s-%s' | format(1, 2) }}|{{ '{} {}'.format('a', 1) }}",
     "a and 3|03.14|x|1-2|a 1", NULL},
    {"{{ strftime_now('%Y-%m-%d %A %B %d %j %H:%M') }}",
     "2026-01-15 Thursday January 15 015 10:00", NULL},
    {"{{ raise_exception('boom ' ~ 1) }}", NULL, "TemplateError"},
    {"{{ 'a' + none }}", NULL, "TypeError"},
    {"{{ 'x' in none }}", NULL, "TypeError"},
    {"{{ messages[1].content.items() }}", NULL, "UndefinedError"},
    {"{{ x.y }}", NULL, "UndefinedError"},
    {"{{ 1 / 0 }}", NULL, "ZeroDivisionError"},
    {"{{ none.x }}|{{ (none.x) is defined }}",
     "|False", NULL},
    {"{{ [1,2].append(3) }}", NULL, "SecurityError"},
    {"{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %}",
     "0134", NULL},
    {"  {% if true %}\n    x\n  {% endif %}\n  {{ 'y' }}\n  {%+ if true %}z{% endif %}\n{# comment #}\n  {#- c2 -#}   w",
     "    x\n  y\n  zw", NULL},
    {"a  {%- if true -%}  b  {%- endif -%}  c\n{{- ' d ' -}}\n  e",
     "abc d e", NULL},
    {"{% raw %}{{ not evaluated }} {% if %}{% endraw %}|{{ 'x' }}",
     "{{ not evaluated }} {% if %}|x", NULL},
    {"{% with a = 1, b = 2 %}{{ a + b }}{% endwith %}{{ a is defined }}",
     "3False", NULL},
    {"{% macro w(x) %}<{{ caller(x) }}>{% endmacro %}{% call(v) w(5) %}got {{ v }}{% endcall %}",
     "<got 5>", NULL},
    {"{% filter upper %}hello {{ 'world' }}{% endfilter %}",
     "HELLO WORLD", NULL},
    {"{{ range(5) | list }}|{{ range(2, 10, 3) | list }}|{{ range(5, 0, -2) | list }}",
     "[0, 1, 2, 3, 4]|[2, 5, 8]|[5, 3, 1]", NULL},
    {"{{ dict(a=1, b='x') }}|{{ namespace(a=1).a }}",
     "{'a': 1, 'b': 'x'}|1", NULL},
    {"{{ messages[2].content is none }}|{{ messages[2].content | string }}|{{ messages[2].tool_calls[0].function.arguments | string }}|{{ 1.0 | string }}|{{ true | string }}",
     "True|None|{'b': 2, 'a': [1, 2.5, True, None]}|1.0|True", NULL},
    {"{{ -(3) }}|{{ - 2 ** 2 }}|{{ (-2) ** 2 }}|{{ 2 ** -1 }}|{{ 10 - 3 - 2 }}|{{ 2 * 3 + 1 }}|{{ 1 + 2 * 3 }}|{{ 'a' ~ 1 + 2 }}", NULL, "TypeError"},
    {"{{ \"a\" \"b\" }}|{{ 'es\\x41\\u00e9\\n' }}|{{ '\\d' }}",
     "ab|esA\303\251\n|\\d", NULL},
    {"{{ messages[1].content.split('\\t')[1].strip() }}|{{ messages[1]['content'][0] }}|{{ messages[3].content[0].text }}|{{ messages[3].content.0.type }}",
     "end|H|part1|text", NULL},
    {"{%- for m in messages -%}\n{%- if m.content is string -%}{{ m.role }}: {{ m.content }}\n{% elif m.content is none -%}{{ m.role }}: <none>\n{% else -%}{{ m.role }}: {% for p in m.content %}{{ p.type }}{% if not loop.last %},{% endif %}{% endfor %}\n{% endif -%}\n{%- endfor -%}",
     "system: Be  brief.\n\nuser: H\303\251llo, \344\270\226\347\225\214! \"q\" 'a' \\ tab\t end  \nassistant: <none>\nuser: text,image", NULL},
    {"{{ 'abc'.upper().lower().title() }}|{{ ('a' ~ 'b').upper() }}|{{ ['x', 'y'][0].upper() }}",
     "Abc|AB|X", NULL},
    {"{{ 1.0e16 }}|{{ 123456789012345.6 }}|{{ 0.0001 }}|{{ 0.00001234 }}|{{ 1/3 }}|{{ 2.5e-300 * 1e-300 }}",
     "1e+16|123456789012345.6|0.0001|1.234e-05|0.3333333333333333|0.0", NULL},
    {"{{ messages|selectattr('tool_calls', 'defined')|list|length }}|{{ messages|selectattr('content', 'string')|map(attribute='role')|join('+') }}|{{ messages|map(attribute='nope', default='D')|list }}",
     "1|system+user|['D', 'D', 'D', 'D']", NULL},
    {"{{ messages[1] is mapping }}|{{ messages is sequence }}|{{ messages[1].content is sequence }}|{{ 3 is sequence }}|{{ x is undefined }}|{{ messages is callable }}|{{ range is callable }}",
     "True|True|True|False|True|False|True", NULL},
    {"{% for a in [1] %}{% for b in [2, 3] %}{{ loop.index }}{{ loop.length }}{% endfor %}{{ loop.index }}{{ loop.length }}{% endfor %}",
     "122211", NULL},
    {"{{ messages[0].nope.x }}", NULL, "UndefinedError"},
    {"{% if messages[0].nope.x %}a{% endif %}", NULL, "UndefinedError"},
    {"{% for x in none %}{% endfor %}", NULL, "TypeError"},
    {"{% for x in 5 %}{% endfor %}", NULL, "TypeError"},
    {"{% for x in nope %}a{% else %}b{% endfor %}",
     "b", NULL},
    {"{{ nope + 1 }}", NULL, "UndefinedError"},
    {"{{ nope ~ 'a' }}|{{ nope | string }}|{{ nope is none }}|{{ not nope }}|{{ nope == nope }}|{{ nope != 1 }}",
     "a||False|True|True|True", NULL},
    {"{{ nope.x is defined }}", NULL, "UndefinedError"},
    {"{{ messages[0].nope is defined }}|{{ messages[0]['nope'] is defined }}|{{ messages[9] is defined }}",
     "False|False|False", NULL},
    {"{{ 1 < 'a' }}", NULL, "TypeError"},
    {"{{ nope < 1 }}", NULL, "UndefinedError"},
    {"{{ 'a' - 1 }}", NULL, "TypeError"},
    {"{{ [1] + 'a' }}", NULL, "TypeError"},
    {"{{ 1 + 'a' }}", NULL, "TypeError"},
    {"{{ -'a' }}", NULL, "TypeError"},
    {"{{ 'abc'[1] }}{{ 'abc'[-1] }}|{{ 'abc'[10] }}|{{ 'abc'['x'] is defined }}|{{ {'a': 1}['a'] }}|{{ [1,2][true] }}",
     "bc||False|1|2", NULL},
    {"{% set ns = namespace() %}{% set ns.x = nope %}{{ ns.x is defined }}|{{ ns.y is defined }}",
     "False|False", NULL},
    {"{% set x = nope %}{{ x is defined }}",
     "False", NULL},
    {"{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1, 2) }}", NULL, "TypeError"},
    {"{% macro m(a) %}{{ a }}{% endmacro %}{{ m(b=2) }}", NULL, "TypeError"},
    {"{% macro m(a) %}{{ a is defined }}{% endmacro %}{{ m() }}",
     "False", NULL},
    {"{% macro m(a, b=a) %}{{ b }}{% endmacro %}{{ m(3) }}",
     "3", NULL},
    {"{% set g = 'G' %}{% macro m() %}{{ g }}{{ messages|length }}{% endmacro %}{{ m() }}",
     "G4", NULL},
    {"{% macro m() %}{% set g = 'in' %}{{ g }}{% endmacro %}{% set g = 'out' %}{{ m() }}{{ g }}",
     "inout", NULL},
    {"{% for i in [1, 2] %}{% macro m() %}{{ i }}{% endmacro %}{{ m() }}{% endfor %}",
     "12", NULL},
    {"{% set x = 'a' %}{% for i in [1] %}{% set x = 'b' %}{{ x }}{% endfor %}{{ x }}",
     "ba", NULL},
    {"{% set x = 'a' %}{% if true %}{% set x = 'b' %}{% endif %}{{ x }}",
     "b", NULL},
    {"{% for i in [1, 2] %}{% if loop.first %}{% set y = 'first' %}{% endif %}{{ y }};{% endfor %}",
     "first;;", NULL},
    {"{% set l = [1, 2] %}{% set l2 = l + [3] %}{{ l }}{{ l2 }}",
     "[1, 2][1, 2, 3]", NULL},
    {"{{ 'a' == 'a' and 'b' or 'c' }}|{{ false or false }}|{{ [] or {} }}|{{ '' and 'x' }}",
     "b|False|{}|", NULL},
    {"{{ 1 if 0 else 2 if 0 else 3 }}",
     "3", NULL},
    {"{{ \"\\u00e9\" | length }}|{{ '\346\227\245\346\234\254\350\252\236' | length }}|{{ '\346\227\245\346\234\254\350\252\236'[1] }}|{{ '\346\227\245\346\234\254\350\252\236'[::-1] }}|{{ '\360\237\221\250\342\200\215\360\237\221\251\342\200\215\360\237\221\247'|length }}|{{ '\360\237\221\250\342\200\215\360\237\221\251\342\200\215\360\237\221\247' }}|{{ ['\360\237\221\250\342\200\215\360\237\221\251\342\200\215\360\237\221\247'] }}|{{ ['\303\251', '\346\227\245'] }}|{{ ['\\u200b'] }}",
     "1|3|\346\234\254|\350\252\236\346\234\254\346\227\245|5|\360\237\221\250\342\200\215\360\237\221\251\342\200\215\360\237\221\247|['\360\237\221\250\\u200d\360\237\221\251\\u200d\360\237\221\247']|['\303\251', '\346\227\245']|['\\u200b']", NULL},
    {"{{ messages[1].content | tojson }}|{{ messages[1].content | tojson(ensure_ascii=true) }}|{{ '\360\237\230\200' | tojson(ensure_ascii=true) }}",
     "\"H\303\251llo, \344\270\226\347\225\214! \\\"q\\\" 'a' \\\\ tab\\t end  \"|\"H\\u00e9llo, \\u4e16\\u754c! \\\"q\\\" 'a' \\\\ tab\\t end  \"|\"\\ud83d\\ude00\"", NULL},
    {"{{ 3 | string | length }}|{{ 3.10 }}|{{ 100.0 }}|{{ 1e100 }}|{{ 1.5e16 }}|{{ 123e-10 }}",
     "1|3.1|100.0|1e+100|1.5e+16|1.23e-08", NULL},
    {"{{ {'a': {'b': [1, {'c': none}]}} | tojson(indent=2) }}|{{ [] | tojson(indent=2) }}|{{ {} | tojson(indent=2) }}",
     "{\n  \"a\": {\n    \"b\": [\n      1,\n      {\n        \"c\": null\n      }\n    ]\n  }\n}|[]|{}", NULL},
    {"{{ {'a': 1} | tojson(indent='\\t') }}",
     "{\n\t\"a\": 1\n}", NULL},
    {"{%- for m in messages -%}\n    {%- if m.role == 'user' -%}\n        U: {{ m.content if m.content is string else 'parts' }}\n    {% elif m.role == 'assistant' %}\n        A\n    {%- endif %}\n{% endfor %}",
     "U: H\303\251llo, \344\270\226\347\225\214! \"q\" 'a' \\ tab\t end  \n        AU: parts\n", NULL},
    {"    {% for i in [1] %}\n    x\n    {% endfor %}",
     "    x\n", NULL},
    {"{% for i in [1,2] -%}\n  {{ i }}\n{%- endfor %}",
     "12", NULL},
    {"  {%- set a = 1 %}  {{ a }}",
     "  1", NULL},
    {"text  {# c #}  more\n  {# c #}\nend",
     "text    more\nend", NULL},
    {"{% if true %}   {% endif %}|",
     "   |", NULL},
    {"a {%+ if true %}b{% endif %}",
     "a b", NULL},
    {"x\n{%- if true %}\ny\n{% endif %}\n\nz",
     "xy\n\nz", NULL},
    {"{{ 'a' }}\n{{ 'b' }}\n{% if true %}\nc\n{% endif %}",
     "a\nb\nc\n", NULL},
    {"line1\n{%- for i in [1, 2] %}\n  - {{ i }}\n{%- endfor %}",
     "line1  - 1  - 2", NULL},
    {"{{- '  a  ' -}}   b",
     "  a  b", NULL},
    {"{{ x|default }}|{{ none|default }}|{{ nope|default('') }}",
     "|None|", NULL},
    {"{{ messages|map(attribute='role')|unique|list }}|{{ messages|map(attribute='role')|first }}",
     "['system', 'user', 'assistant']|system", NULL},
    {"{{ messages | selectattr('role', 'in', ['user', 'system']) | list | length }}|{{ messages|selectattr('role', '==', 'user')|list|length }}",
     "3|2", NULL},
    {"{{ [1, 2, 3] | map('string') | join('-') }}|{{ [1.5, 2] | map('int') | list }}|{{ ['a', 'b'] | join }}|{{ [1, none] | join(',') }}",
     "1-2-3|[1, 2]|ab|1,None", NULL},
    {"{{ messages[2].tool_calls | map(attribute='function.name') | list }}|{{ messages | map(attribute='tool_calls.0.id', default='-') | list }}",
     "['f']|['-', '-', 'c1', '-']", NULL},
    {"{{ 'A' < 'a' }}|{{ 'ab' < 'abc' }}|{{ 1.5 > 1 }}|{{ true > false }}|{{ none == false }}|{{ 0 == false }}|{{ '1' == 1 }}|{{ [1] == [1.0] }}|{{ {'a':1} == {'a':1} }}",
     "True|True|True|True|False|True|False|True|True", NULL},
    {"{{ messages[0]['role'] | upper }}|{{ messages[0].role|replace('s', 'S') }}|{{ messages[0].role|title }}",
     "SYSTEM|SyStem|System", NULL},
    {"{{ 'a b' | wordcount }}|{{ 'hello world foo' | truncate(9) }}|{{ 'hello world foo' | truncate(9, true) }}|{{ 'hello' | truncate(3, leeway=0) }}",
     "2|hello...|hello ...|...", NULL},
    {"{% for x in 'ab' %}{{ x }}{{ loop.index }}{% endfor %}|{% for k in {'a': 1, 'b': 2} %}{{ k }}{% endfor %}",
     "a1b2|ab", NULL},
    {"{{ messages[1].content.split() | length }}|{{ messages[1].content.split(none, 1) }}|{{ 'a  b'.split(' ') }}|{{ ''.split() }}|{{ ''.split(',') }}|{{ '  a b  '.rsplit(none, 1) }}",
     "7|['H\303\251llo,', '\344\270\226\347\225\214! \"q\" \\'a\\' \\\\ tab\\t end  ']|['a', '', 'b']|[]|['']|['  a', 'b']", NULL},
    {"{{ 'abc'.strip('') }}|{{ 'a\\u3000'.strip() | length }}|{{ '\\xa0x\\xa0'.strip() }}|{{ 'xy'.lstrip('yx') }}",
     "abc|1|x|", NULL},
    {"{{ '%s' % none }}|{{ '%r' % 'x' }}|{{ '%d%%' % 50 }}|{{ '%(a)s-%(b)s' % {'a': 1, 'b': 2} }}|{{ '%x' % 255 }}|{{ '%5s|%-5s|' % ('a', 'b') }}|{{ '%.3f' % 2 }}|{{ '%e' % 12345.678 }}",
     "None|'x'|50%|1-2|ff|    a|b    ||2.000|1.234568e+04", NULL},
    {"{{ 7 % 3 }}|{{ -7 % 3 }}|{{ 7 % -3 }}|{{ 7.5 % 2 }}|{{ -7.5 // 2 }}|{{ 7 // 2.0 }}",
     "1|2|-2|1.5|-4.0|3.0", NULL},
    {"{% set a = [1, 2, 3] %}{{ a[1:] }}{{ a[:-1] }}{{ a[::-1] }}{{ a[-2:] }}{{ a[5:] }}{{ a[::-2] }}{{ a[1:2:0] is defined }}", NULL, "ValueError"},
    {"{{ messages | length > 2 }}|{{ (messages | length) - 1 }}|{{ messages|length - 1 }}",
     "True|3|3", NULL},
    {"{{ not true == false }}|{{ not 1 in [1] }}|{{ -1 is number }}|{{ 'x' is not string }}|{{ x is not defined and true }}",
     "True|False|True|False|True", NULL},
    {"{{ messages[-1].content[0]['text'] ~ '!' }}|{{ messages[-1]['content'][-1].type }}",
     "part1!|image", NULL},
    {"{% set x = {'a': [1, 2]} %}{{ x.a[1] }}{{ x['a'][0] }}{{ x.a | sum }}",
     "213", NULL},
    {"{{ messages[0].content.endswith('\\n') }}|{{ messages[0].content.rstrip('\\n') }}|{{ messages[0].content | trim }}",
     "True|Be  brief.|Be  brief.", NULL},
    {"{{ tools[0].function.parameters.properties.x.type }}|{{ tools[0]['function']['name'] }}|{{ tools | map(attribute='function') | map(attribute='name') | list }}",
     "integer|get|['get']", NULL},
    {"{{ 5 | tojson }}|{{ 'a' | tojson }}|{{ [1, 'b'] | tojson }}|{{ true | tojson }}|{{ 1.5 | tojson }}|{{ nope | tojson }}\n", NULL, "TypeError"},
};

static void test_semantics_table(void **state)
{
    (void)state;
    int bad = 0;
    for (size_t i = 0; i < sizeof S_TABLE / sizeof *S_TABLE; i++) {
        const struct table_case *c = &S_TABLE[i];
        char *out = NULL;
        err_t err = {0};
        int rc = s_render(c->src, S_CTX, &out, &err);
        if (c->want && rc != 0) {
            print_error("case %zu %s: failed: %s\n", i, c->src, err.msg);
            bad++;
        } else if (c->want && strcmp(out, c->want) != 0) {
            print_error("case %zu %s:\n got  '%s'\n want '%s'\n", i, c->src, out, c->want);
            bad++;
        } else if (!c->want && rc == 0) {
            print_error("case %zu %s: rendered '%s', want a %s\n", i, c->src, out,
                        c->error_type);
            bad++;
        }
        free(out);
    }
    assert_int_equal(bad, 0);
}

/* ---- features one by one ---------------------------------------------------------- */

static void test_whitespace(void **state)
{
    (void)state;
    /* trim_blocks, lstrip_blocks, '-' and '+' markers, comments, raw */
    s_expect("{% if true %}\nA\n{% endif %}\nB", "A\nB");
    s_expect("  {% if true %}\n  x\n  {% endif %}\n", "  x\n");
    s_expect("a {%+ if true %}b{% endif %}", "a b");
    s_expect("a  {%- if true -%}  b  {%- endif -%}  c", "abc");
    s_expect("{{- '  a  ' -}}   b", "  a  b");
    s_expect("x {# note #} y\n  {# c #}\nz", "x  y\nz");
    s_expect("{% raw %}{{ x }}{% endraw %}", "{{ x }}");
    s_expect("A{% raw %}\nX\n  {% endraw %}\nB", "A\nX\nB"); /* no trim after raw */
    s_expect("A{% raw -%}  X  {%- endraw %}B|{% raw %}x{% endraw %}  \t{% raw %}y{% endraw %}",
             "AXB|x  \ty");
    s_expect("{{ 'a' }}\n{{ 'b' }}\n", "a\nb"); /* one trailing newline dropped */
    s_expect("a\r\nb", "a\nb");
    s_expect("{{ 'x' }}  \n", "x  ");
}

static void test_values_and_operators(void **state)
{
    (void)state;
    s_expect("{{ none }}|{{ true }}|{{ 3 }}|{{ 2.50 }}|{{ 1e16 }}|{{ x }}", "None|True|3|2.5|1e+16|");
    s_expect("{{ 'a' ~ none ~ 1 }}|{{ 1 + 2 * 3 }}|{{ 7 // -2 }}|{{ -7 % 3 }}|{{ 2 ** 8 }}",
             "aNone1|7|-4|2|256");
    s_expect("{{ [] or 'e' }}|{{ {} and 1 }}|{{ '' or none }}|{{ 1 if [0] else 2 }}",
             "e|{}|None|1");
    s_expect("{{ 'ab' in 'cab' }}|{{ 'k' in {'k': 1} }}|{{ 2 in [1, 2] }}|{{ 3 not in [3] }}",
             "True|True|True|False");
    s_expect("{{ [1, 'a', none, true, {'k': 'v'}] }}|{{ 'it\\'s' }}|{{ [\"it's\"] }}",
             "[1, 'a', None, True, {'k': 'v'}]|it's|[\"it's\"]");
    s_expect("{{ '\\u00e9\\x41\\n' }}", "\xc3\xa9" "A\n");
    s_expect("{{ 1|round(1) }}|{{ true|round }}|{{ 2.5|round }}|{{ 3.5|round }}", "1|1|2.0|4.0");
}

static void test_errors_at_render(void **state)
{
    (void)state;
    s_expect_render_error("{{ 'a' + none }}", "can only concatenate str");
    s_expect_render_error("{{ 'x' in none }}", "NoneType");
    s_expect_render_error("{{ x.y }}", "'x' is undefined");
    s_expect_render_error("{% set s = 'abc' %}{{ s.items() }}", "'str object' has no attribute 'items'");
    s_expect_render_error("{{ 1 / 0 }}", "division by zero");
    s_expect_render_error("{{ x|int }}", "'x' is undefined"); /* int(Undefined) raises */
    /* the missing key of an undefined value outlives the computed key */
    s_expect_render_error("{% set d = {} %}{% set u = d['a' ~ 'b'] %}{{ u.x }}",
                          "'dict object' has no attribute 'ab'");
    s_expect_render_error("{{ [1].append(2) }}", "unsafe");
    s_expect_render_error("{% for x in 5 %}{% endfor %}", "not iterable");
    s_expect_render_error("{{ 1 < 'a' }}", "not supported");
    s_expect_render_error("{% set a, b = [1] %}", "not enough values to unpack");
    s_expect_render_error("{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}", "argument");
    s_expect_render_error("{% set ns = 1 %}{% set ns.a = 2 %}", "non-namespace");
    /* raise_exception's message is the whole error */
    char *out = NULL;
    err_t err = {0};
    assert_int_equal(s_render("{{ raise_exception('Roles must alternate') }}", "{}", &out, &err),
                     -1);
    assert_string_equal(err.msg, "Roles must alternate");
}

static void test_unsupported_at_parse(void **state)
{
    (void)state;
    s_expect_parse_error("a\n\n{{ x | wordwrap }}", "chat template line 3: filter 'wordwrap' is not supported");
    s_expect_parse_error("{% include 'x.jinja' %}", "statement 'include' is not supported");
    s_expect_parse_error("{% extends 'x' %}", "statement 'extends' is not supported");
    s_expect_parse_error("{{ x is prime }}", "test 'prime' is not supported");
    s_expect_parse_error("{{ x.encode('utf-8') }}", "method 'encode' is not supported");
    s_expect_parse_error("{{ lipsum(2) }}", "function 'lipsum' is not supported");
    s_expect_parse_error("{% for x in y recursive %}{% endfor %}", "recursive");
    s_expect_parse_error("{{ f(*args) }}", "*args");
    /* syntax errors, with their line */
    s_expect_parse_error("\n{% if x %}", "line 2: unexpected end of template: missing '{% endif %}'");
    s_expect_parse_error("{% endif %}", "unexpected 'endif'");
    s_expect_parse_error("{{ 1 + }}", "unexpected '}}'");
    s_expect_parse_error("{{ 'abc }}", "unterminated string");
    s_expect_parse_error("{{ x ", "missing '}}'");
    s_expect_parse_error("{# x", "unterminated comment");
    s_expect_parse_error("{% break %}", "outside a for loop");
    s_expect_parse_error("{{ 99999999999999999999 }}", "too large");
    s_expect_parse_error("{{ x $ y }}", "unexpected character '$'");
    s_expect_parse_error("{{ '\\Uffffffff' }}", "bad \\U escape"); /* fuzz: hex overflow */
    s_expect_parse_error("{{ '\\ud800' }}", "bad \\u escape");
    s_expect_parse_error("ok\n\xff\xfe", "line 2: not UTF-8 (byte 0xff");
}

static void test_scoping_and_macros(void **state)
{
    (void)state;
    /* set in a loop lives one iteration; namespace() carries state out */
    s_expect("{% set x = 1 %}{% for i in [1, 2] %}{% set x = x + i %}{{ x }}{% endfor %}{{ x }}",
             "231");
    s_expect("{% set ns = namespace(n=0) %}{% for i in [1, 2] %}{% set ns.n = ns.n + i %}"
             "{% endfor %}{{ ns.n }}", "3");
    s_expect("{% if true %}{% set y = 5 %}{% endif %}{{ y }}", "5");
    /* macros: defaults, keywords, recursion, output captured, caller */
    s_expect("{% macro m(a, b=2) %}{{ a }}{{ b }}{% endmacro %}{{ m(1) }}{{ m(1, b=3) }}", "1213");
    s_expect("{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
             "{% set s = f(3) %}[{{ s }}]", "[321]");
    s_expect("{% macro w() %}<{{ caller() }}>{% endmacro %}{% call w() %}in{% endcall %}", "<in>");
    s_expect("{% macro l() %}{% for i in [1] %}{{ loop.length }}{% endfor %}{% endmacro %}"
             "{% for j in [1, 2, 3] %}{{ l() }}{{ loop.length }}{% endfor %}", "131313");
    /* loop controls, loop variables, for-else, filtered loops */
    s_expect("{% for i in range(9) %}{% if i == 1 %}{% continue %}{% endif %}"
             "{% if i == 4 %}{% break %}{% endif %}{{ i }}{% endfor %}", "023");
    s_expect("{% for i in [5, 6, 7] if i != 6 %}{{ loop.index }}{{ loop.last }}{% endfor %}",
             "1False2True");
    s_expect("{% for i in [] %}x{% else %}empty{% endfor %}", "empty");
    s_expect("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}{{ v }}{% endfor %}", "a1b2");
    s_expect("{% set b %}x{{ 1 }}{% endset %}{{ b }}|{% filter upper %}ab{% endfilter %}", "x1|AB");
    s_expect("{% with a = 2 %}{{ a }}{% endwith %}{{ a is defined }}", "2False");
    s_expect("{% generation %}gen{% endgeneration %}", "gen");
}

static void test_hostile_templates(void **state)
{
    (void)state;
    /* deep nesting: refused at parse, no stack overflow */
    size_t n = 100000;
    char *deep = malloc(2 * n + 16);
    assert_non_null(deep);
    strcpy(deep, "{{ ");
    memset(deep + 3, '(', n);
    deep[3 + n] = '1';
    memset(deep + 4 + n, ')', n);
    strcpy(deep + 4 + 2 * n, " }}");
    s_expect_parse_error(deep, "deeper than");
    strcpy(deep, "{{ 1");
    for (size_t i = 0; i < 20000; i++)
        memcpy(deep + 4 + i * 5, "|trim", 5);
    strcpy(deep + 4 + 20000 * 5, " }}");
    s_expect_parse_error(deep, "deeper than");
    deep[0] = '\0';
    for (size_t i = 0; i < 5000; i++)
        strcat(deep + i * 10, "{% if 1 %}");
    s_expect_parse_error(deep, "deeper than");
    free(deep);
    /* runaway recursion, loops, strings: an error, bounded */
    s_expect_render_error("{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}", "recursion");
    s_expect_render_error("{% for i in range(100000) %}{% for j in range(100000) %}"
                          "{% endfor %}{% endfor %}", "steps");
    s_expect_render_error("{{ 'a' * 1000000000 }}", "longer than");
    /* strings made count as steps: doubling ends on the budget */
    s_expect_render_error("{% set ns = namespace(s='ab') %}{% for i in range(64) %}"
                          "{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "steps");
    /* list operations count the elements they walk: no quadratic hang */
    s_expect_render_error("{% set ns = namespace(l=[]) %}{% for i in range(100000) %}"
                          "{% set ns.l = ns.l + [i] %}{% endfor %}", "steps");
    s_expect_render_error("{% set l = range(100000) | list %}{% for i in l %}"
                          "{% if i in l %}{% endif %}{% endfor %}", "steps");
    s_expect_render_error("{{ ('a' * 1000000) | join(',') | join(',') }}", "steps");
    s_expect_render_error("{% set ns = namespace(x=[]) %}{% for i in range(1000) %}"
                          "{% set ns.x = [ns.x] %}{% endfor %}", "nested deeper");
    s_expect_render_error("{{ range(1000000000) | length }}", "range");
    s_expect_render_error("{{ 9223372036854775807 + 1 }}", "overflow");
    /* a smaller budget */
    err_t err = {0};
    chat_template_t *t = s_new("{% for i in range(1000) %}{{ i }}{% endfor %}", &err);
    assert_non_null(t);
    json_t *ctx = json_object();
    char *out = NULL;
    size_t len;
    assert_int_equal(chat_template_render(t, ctx, &out, &len, &err), 0);
    free(out);
    chat_template_set_max_steps(t, 500);
    assert_int_equal(chat_template_render(t, ctx, &out, &len, &err), -1);
    assert_non_null(strstr(err.msg, "more than 500 steps"));
    json_decref(ctx);
    chat_template_destroy(&t);
    s_expect_render_error("{{ 1e308 * 10 }}", "infinite");
}

/* ---- API ------------------------------------------------------------------------- */

static void test_render_chat(void **state)
{
    (void)state;
    err_t err = {0};
    chat_template_t *t = s_new(
        "{{ bos_token is defined }}{{ tools is none }}{{ documents is none }}"
        "{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}"
        "{% if add_generation_prompt %}{{ eos_token }}{% endif %}", &err);
    assert_non_null(t);
    json_t *msgs = json_loads("[{\"role\": \"user\", \"content\": \"hi\"}]", 0, NULL);
    char *out = NULL;
    size_t len;
    assert_int_equal(chat_template_render_chat(t, msgs, NULL, false, &out, &len, &err), 0);
    assert_string_equal(out, "FalseTrueTrue[user:hi]");
    free(out);
    assert_int_equal(chat_template_set_tokens(t, "<s>", "</s>"), 0);
    assert_string_equal(chat_template_bos(t), "<s>");
    json_t *tools = json_loads("[{\"type\": \"function\"}]", 0, NULL);
    assert_int_equal(chat_template_render_chat(t, msgs, tools, true, &out, &len, &err), 0);
    assert_string_equal(out, "TrueFalseTrue[user:hi]</s>");
    assert_int_equal(len, strlen(out));
    free(out);
    /* a context that is not an object */
    assert_int_equal(chat_template_render(t, msgs, &out, &len, &err), -1);
    assert_int_equal(errno, EINVAL);
    assert_null(out);
    json_decref(tools);
    json_decref(msgs);
    chat_template_destroy(&t);
    assert_null(t);
    chat_template_destroy(&t);
    chat_template_destroy(NULL);
    /* strftime_now: the fixed time, or now */
    assert_int_equal(s_render("{{ strftime_now('%A %d %B %Y') }}", "{}", &out, &err), 0);
    assert_string_equal(out, "Thursday 15 January 2026");
    free(out);
}

static void s_write(const char *dir, const char *name, const char *text)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    assert_int_equal(testutil_write_file(path, text, strlen(text)), 0);
}

static void s_expect_load(const char *dir, const char *want)
{
    err_t err = {0};
    chat_template_t *t = chat_template_load(dir, &err);
    if (!t)
        fail_msg("load %s: %s", dir, err.msg);
    json_t *msgs = json_loads("[{\"role\": \"user\", \"content\": \"hi\"}]", 0, NULL);
    char *out = NULL;
    size_t len;
    assert_int_equal(chat_template_render_chat(t, msgs, NULL, true, &out, &len, &err), 0);
    assert_string_equal(out, want);
    free(out);
    json_decref(msgs);
    chat_template_destroy(&t);
}

static void test_load(void **state)
{
    char *dir = *state;
    err_t err = {0};
    /* nothing there: ENOENT */
    assert_null(chat_template_load(dir, &err));
    assert_int_equal(errno, ENOENT);
    /* chat_template.jinja beside a config without one; tokens as objects */
    s_write(dir, "tokenizer_config.json",
            "{\"bos_token\": {\"content\": \"<s>\", \"lstrip\": false}, \"eos_token\": \"</s>\","
            " \"pad_token\": \"<pad>\", \"unk_token\": {\"content\": \"<unk>\"}}");
    s_write(dir, "chat_template.jinja", "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}"
            "{{ pad_token }}{{ unk_token }}{{ mask_token is defined }}\n");
    s_expect_load(dir, "<s>hi</s><pad><unk>False");
    /* the config's string wins */
    s_write(dir, "tokenizer_config.json",
            "{\"chat_template\": \"A{{ messages|length }}{{ bos_token is defined }}\"}");
    s_expect_load(dir, "A1False");
    /* a list: the one named default */
    s_write(dir, "tokenizer_config.json",
            "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"},"
            " {\"name\": \"default\", \"template\": \"D\"}], \"eos_token\": null}");
    s_expect_load(dir, "D");
    s_write(dir, "tokenizer_config.json",
            "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"}]}");
    assert_null(chat_template_load(dir, &err));
    assert_int_equal(errno, EINVAL);
    assert_non_null(strstr(err.msg, "default"));
    /* a template it cannot handle: EINVAL, naming the file and the construct */
    s_write(dir, "tokenizer_config.json", "{\"chat_template\": \"{{ x|wordwrap }}\"}");
    assert_null(chat_template_load(dir, &err));
    assert_int_equal(errno, EINVAL);
    assert_non_null(strstr(err.msg, "tokenizer_config.json"));
    assert_non_null(strstr(err.msg, "filter 'wordwrap' is not supported"));
    s_write(dir, "tokenizer_config.json", "{\"chat_template\": 5}");
    assert_null(chat_template_load(dir, &err));
    assert_int_equal(errno, EINVAL);
    s_write(dir, "tokenizer_config.json", "{not json");
    assert_null(chat_template_load(dir, &err));
    assert_int_equal(errno, EINVAL);
    assert_non_null(strstr(err.msg, "tokenizer_config.json"));
}

typedef struct oom_ctx {
    const char *src;
    const char *ctx;
} oom_ctx_t;

static int s_oom_attempt(void *arg, err_t *err)
{
    oom_ctx_t *c = arg;
    char *out = NULL;
    int rc = s_render(c->src, c->ctx, &out, err);
    free(out);
    return rc;
}

static void test_out_of_memory(void **state)
{
    (void)state;
    oom_ctx_t c = {
        .src = "{%- set ns = namespace(n=0) -%}{%- macro m(x) -%}<{{ x | upper }}>{%- endmacro -%}"
               "{%- for msg in messages if msg.role != 'x' -%}{% set ns.n = ns.n + 1 %}"
               "{{ m(msg.content) }}{{ msg | tojson }}{{ msg.content.split(' ') }}"
               "{{ [loop.index, msg.role[1:]] }}{% endfor %}{{ ns.n }}{{ 'abc' * 3 }}",
        .ctx = "{\"messages\": [{\"role\": \"user\", \"content\": \"a b\"},"
               " {\"role\": \"assistant\", \"content\": \"c d\"}]}",
    };
    int n = testutil_oom_sweep(2000, s_oom_attempt, &c);
    assert_true(n > 10);
}

/* ---- programs ------------------------------------------------------------------------ */

static void test_moe_template_program(void **state)
{
    char *dir = *state;
    char bin[4096];
    testutil_program("moe-template", bin, sizeof bin);
    const char *tdir = s_templates_dir();
    char cases[4096], tpl[4096];
    snprintf(cases, sizeof cases, "%s/Qwen-Qwen3-0.6B.cases.json", tdir);
    snprintf(tpl, sizeof tpl, "%s/Qwen-Qwen3-0.6B.jinja", tdir);
    FILE *probe = fopen(cases, "r");
    if (!probe)
        testutil_skip_unless_possible(false, "no %s", cases);
    fclose(probe);
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "'%s' --template '%s' < '%s'", bin, tpl, cases);
    char *out = NULL;
    assert_int_equal(testutil_run(cmd, &out), 0);
    json_t *got = json_loads(out, 0, NULL);
    json_t *want = json_load_file(cases, 0, NULL);
    assert_true(json_is_array(got) && json_is_array(want));
    assert_int_equal(json_array_size(got), json_array_size(want));
    int n_err = 0;
    for (size_t i = 0; i < json_array_size(want); i++) {
        json_t *w = json_array_get(want, i), *g = json_array_get(got, i);
        json_t *exp = json_object_get(w, "expected");
        if (exp) {
            assert_true(json_equal(json_object_get(g, "rendered"), exp));
        } else {
            assert_non_null(json_object_get(g, "error"));
            n_err++;
        }
    }
    assert_true(n_err > 0);
    free(out);
    json_decref(got);
    json_decref(want);
    /* --help; a template that cannot be parsed: one error, exit 2; bad input: 1 */
    snprintf(cmd, sizeof cmd, "'%s' --help", bin);
    assert_int_equal(testutil_run(cmd, &out), 0);
    assert_non_null(strstr(out, "--template"));
    free(out);
    char bad[4096];
    snprintf(bad, sizeof bad, "%s/bad.jinja", dir);
    s_write(dir, "bad.jinja", "ok\n{{ x | wordwrap }}");
    char args[4200];
    snprintf(args, sizeof args, "--template '%s'", bad);
    testutil_expect_error(NULL, bin, args, 2, "line 2: filter 'wordwrap' is not supported");
    testutil_expect_error(NULL, bin, "--template /nonexistent/t.jinja", 1, "cannot open");
    testutil_expect_error(NULL, bin, "", 2, "--template");
    s_write(dir, "ok.jinja", "{{ messages | length }}");
    snprintf(cmd, sizeof cmd, "echo '{\"a\": 1}' | '%s' --template '%s/ok.jinja'", bin, dir);
    assert_int_equal(testutil_run(cmd, NULL), 1);
    snprintf(cmd, sizeof cmd, "echo '[{\"messages\": [], \"bos_token\": null}, "
             "{\"messages\": 5}]' | '%s' --template '%s/ok.jinja'", bin, dir);
    assert_int_equal(testutil_run(cmd, NULL), 1);
    snprintf(cmd, sizeof cmd, "echo '[{\"messages\": [1, 2]}]' | '%s' --template '%s/ok.jinja'",
             bin, dir);
    assert_int_equal(testutil_run(cmd, &out), 0);
    assert_string_equal(out, "[{\"rendered\":\"2\"}]\n");
    free(out);
}

/* The templates moe-mkmodel writes: each parses and renders a conversation
 * with the made tokenizer's tokens, ending assistant turns with EOS. */
static void test_family_templates(void **state)
{
    (void)state;
    static const char *const archs[] = {"mixtral", "qwen2_moe", "qwen3_moe", "olmoe",
                                        "hunyuan_v1_moe", "deepseek_v2", "deepseek_v3",
                                        "gpt_oss", "unknown"};
    json_t *msgs = json_loads(
        "[{\"role\": \"system\", \"content\": \"Be brief.\"},"
        " {\"role\": \"user\", \"content\": \"Hello?\"},"
        " {\"role\": \"assistant\", \"content\": \"Hi.\"},"
        " {\"role\": \"user\", \"content\": \"More\"}]", 0, NULL);
    assert_non_null(msgs);
    for (size_t i = 0; i < sizeof archs / sizeof *archs; i++) {
        const char *src = chat_template_for_family(archs[i]);
        err_t err = {0};
        chat_template_t *t = chat_template_new(src, strlen(src), &err);
        if (!t)
            fail_msg("%s: %s", archs[i], err.msg);
        assert_int_equal(chat_template_set_tokens(t, "<|startoftext|>", "<|endoftext|>"), 0);
        for (int agp = 0; agp < 2; agp++) {
            char *out = NULL;
            size_t len;
            if (chat_template_render_chat(t, msgs, NULL, agp, &out, &len, &err) != 0)
                fail_msg("%s: %s", archs[i], err.msg);
            if (!strstr(out, "Be brief.") || !strstr(out, "Hello?") ||
                !strstr(out, "Hi.<|endoftext|>") || !strstr(out, "More"))
                fail_msg("%s: rendered '%s'", archs[i], out);
            free(out);
        }
        chat_template_destroy(&t);
    }
    json_decref(msgs);
}

static void test_mkmodel_writes_template(void **state)
{
    char *dir = *state;
    char bin[4096];
    testutil_program("moe-mkmodel", bin, sizeof bin);
    char args[4200];
    snprintf(args, sizeof args, "--arch qwen2_moe --preset tiny --out '%s/qwen' >/dev/null", dir);
    char cmd[8400];
    snprintf(cmd, sizeof cmd, "'%s' %s", bin, args);
    assert_int_equal(testutil_run(cmd, NULL), 0);
    char model[4200];
    snprintf(model, sizeof model, "%s/qwen", dir);
    s_expect_load(model, "<|im_start|>system\nYou are a helpful assistant.<|endoftext|>\n"
                         "<|im_start|>user\nhi<|endoftext|>\n<|im_start|>assistant\n");
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, testutil_tmpdir_setup, testutil_tmpdir_teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_cases),
        cmocka_unit_test(test_semantics_table),
        cmocka_unit_test(test_whitespace),
        cmocka_unit_test(test_values_and_operators),
        cmocka_unit_test(test_errors_at_render),
        cmocka_unit_test(test_unsupported_at_parse),
        cmocka_unit_test(test_scoping_and_macros),
        cmocka_unit_test(test_hostile_templates),
        cmocka_unit_test(test_render_chat),
        T(test_load),
        cmocka_unit_test(test_out_of_memory),
        T(test_moe_template_program),
        cmocka_unit_test(test_family_templates),
        T(test_mkmodel_writes_template),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
