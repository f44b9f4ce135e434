/* chat_template: a model's chat template (Jinja2, as Hugging Face
 * transformers' apply_chat_template runs it) turned into prompt text.
 *
 * The template is parsed once, at load: a construct the interpreter does not
 * support (a filter, test, statement, method or function outside the subset
 * that chat templates use; docs/CHAT_TEMPLATES.md lists it) is refused there,
 * named with its line, never at the first request. Rendering is pure: a
 * chat_template_t may be rendered from several threads at once.
 *
 * The render environment is transformers' _compile_jinja_template:
 * trim_blocks, lstrip_blocks, loop controls, no autoescape,
 * raise_exception(msg), strftime_now(fmt), tojson = json.dumps
 * (ensure_ascii=False; keys in insertion order). Bounds: nesting, evaluation
 * steps, string and output sizes are limited (chat/jinja_private.h), so a
 * hostile template or context ends with an error, not a hang or a crash.
 */
#ifndef MOE_CHAT_CHAT_TEMPLATE_H
#define MOE_CHAT_CHAT_TEMPLATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "core/err.h"

typedef struct chat_template chat_template_t;

/* Parses a template (source[0..len), UTF-8; need not be NUL-terminated).
 * NULL with errno EINVAL and err naming the unsupported construct or the
 * syntax error with its line ("chat template line 12: filter 'wordwrap' is
 * not supported"); ENOMEM. */
chat_template_t *chat_template_new(const char *source, size_t len, err_t *err);

/* The model's template: tokenizer_config.json "chat_template" (a string, or
 * a list of {"name", "template"}: the one named "default"), else
 * chat_template.jinja beside it, else chat_template.json's "chat_template";
 * bos_token / eos_token from tokenizer_config.json (a string or
 * {"content": ...}; unk/pad/sep/cls/mask_token too, passed by
 * chat_template_render_chat as transformers does). NULL with ENOENT when the model has no template, EINVAL
 * when it cannot be handled (err names the file and the construct). */
chat_template_t *chat_template_load(const char *model_dir, err_t *err);

/* Accepts NULL; sets *self_p to NULL. */
void chat_template_destroy(chat_template_t **self_p);

/* The special tokens chat_template_render_chat passes (from
 * chat_template_load; NULL: undefined in the template). Borrowed. */
const char *chat_template_bos(const chat_template_t *self);
const char *chat_template_eos(const chat_template_t *self);
/* Sets them (copied; NULL makes the variable undefined). -1 ENOMEM. */
int chat_template_set_tokens(chat_template_t *self, const char *bos, const char *eos);

/* The time strftime_now() formats: NULL (the default) is the current local
 * time at each render; else this fixed broken-down time (copied). */
void chat_template_set_now(chat_template_t *self, const struct tm *now);

/* A smaller budget of evaluation steps per render than the default
 * (1 000 000; a real template takes a few thousand per conversation);
 * 0 or more than the default: the default. */
void chat_template_set_max_steps(chat_template_t *self, long max_steps);

/* Renders with a JSON object as the context: each key a top-level variable;
 * a key that is absent is undefined. *out is malloc'd (caller frees with
 * free(); NUL-terminated), *out_len its length. -1 with errno EINVAL and
 * err's message = the raise_exception message, or a description of the type
 * / undefined error ("chat template line 7: ..."); ENOMEM. */
int chat_template_render(const chat_template_t *self, const json_t *context, char **out,
                         size_t *out_len, err_t *err);

/* The chat case of transformers' apply_chat_template: messages (an array),
 * tools (NULL: none), add_generation_prompt, bos_token / eos_token as set
 * (undefined when none), the config's other special tokens, documents = none. Errors as chat_template_render. */
int chat_template_render_chat(const chat_template_t *self, const json_t *messages,
                              const json_t *tools, bool add_generation_prompt, char **out,
                              size_t *out_len, err_t *err);

/* Like chat_template_render, and says whether the failure came from the
 * template's raise_exception() (a refusal of the conversation) rather than
 * from a type or undefined error. */
int chat_template_render_ex(const chat_template_t *self, const json_t *context, char **out,
                            size_t *out_len, bool *raised, err_t *err);

/* A small chat template for a moe-mkmodel family ("mixtral", "qwen",
 * "deepseek", "gpt_oss", "olmoe", "hunyuan", ...; others get a ChatML one):
 * static text, never NULL. It uses bos_token / eos_token and plain-text role
 * markers, and renders with this interpreter. */
const char *chat_template_for_family(const char *arch);

#endif /* MOE_CHAT_CHAT_TEMPLATE_H */
