/* chat_family: the chat templates moe-mkmodel writes into a made model's
 * tokenizer_config.json, one per family, in the style of the family's real
 * template but small, and built on the special tokens the made tokenizer
 * has (bos_token <|startoftext|>, eos_token <|endoftext|>): a turn that the
 * model must end closes with eos_token, so that generation stops there.
 * Role markers the made tokenizer lacks as special tokens ([INST],
 * <|im_start|>, ...) are plain text to it. Each renders with chat/'s
 * interpreter (tests/test_chat_template.c renders every one).
 */
#include <string.h>

#include "chat/chat_template.h"

/* Shared: a message's text ("" for a null or non-string content). */
#define CONTENT "(message.content if message.content is string else '')"

/* Mistral / Mixtral: [INST] ... [/INST] answer</s>; a system message goes in
 * front of the next user message. */
static const char s_mixtral[] =
    "{%- set ns = namespace(system='') -%}\n"
    "{{- bos_token -}}\n"
    "{%- for message in messages -%}\n"
    "    {%- if message.role == 'system' -%}\n"
    "        {%- set ns.system = " CONTENT " ~ '\\n\\n' -%}\n"
    "    {%- elif message.role == 'user' -%}\n"
    "        {{- '[INST] ' ~ ns.system ~ " CONTENT " ~ ' [/INST]' -}}\n"
    "        {%- set ns.system = '' -%}\n"
    "    {%- elif message.role == 'assistant' -%}\n"
    "        {{- ' ' ~ " CONTENT " ~ eos_token -}}\n"
    "    {%- else -%}\n"
    "        {{- raise_exception('Only system, user and assistant roles are supported, not ' ~ message.role) -}}\n"
    "    {%- endif -%}\n"
    "{%- endfor -%}\n";

/* Qwen: ChatML, a default system message, tools listed in it. */
static const char s_qwen[] =
    "{%- for message in messages -%}\n"
    "    {%- if loop.first and (message.role != 'system' or tools) -%}\n"
    "        {{- '<|im_start|>system\\n' -}}\n"
    "        {%- if message.role == 'system' -%}{{- " CONTENT " -}}\n"
    "        {%- else -%}{{- 'You are a helpful assistant.' -}}{%- endif -%}\n"
    "        {%- if tools -%}\n"
    "            {{- '\\n\\n# Tools\\n\\n<tools>' -}}\n"
    "            {%- for tool in tools -%}{{- '\\n' ~ tool | tojson -}}{%- endfor -%}\n"
    "            {{- '\\n</tools>' -}}\n"
    "        {%- endif -%}\n"
    "        {{- eos_token ~ '\\n' -}}\n"
    "        {%- if message.role == 'system' -%}{%- continue -%}{%- endif -%}\n"
    "    {%- endif -%}\n"
    "    {%- if message.role == 'tool' -%}\n"
    "        {{- '<|im_start|>user\\n<tool_response>\\n' ~ " CONTENT " ~ '\\n</tool_response>' ~ eos_token ~ '\\n' -}}\n"
    "    {%- else -%}\n"
    "        {{- '<|im_start|>' ~ message.role ~ '\\n' ~ " CONTENT " -}}\n"
    "        {%- for call in message.tool_calls or [] -%}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' ~ call.function.name ~ '\", \"arguments\": ' -}}\n"
    "            {{- (call.function.arguments if call.function.arguments is string else call.function.arguments | tojson) ~ '}\\n</tool_call>' -}}\n"
    "        {%- endfor -%}\n"
    "        {{- eos_token ~ '\\n' -}}\n"
    "    {%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}\n";

/* DeepSeek: <｜User｜> / <｜Assistant｜> markers, system text first. */
static const char s_deepseek[] =
    "{%- set ns = namespace(system='') -%}\n"
    "{%- for message in messages if message.role == 'system' -%}\n"
    "    {%- set ns.system = ns.system ~ " CONTENT " -%}\n"
    "{%- endfor -%}\n"
    "{{- bos_token ~ ns.system -}}\n"
    "{%- for message in messages -%}\n"
    "    {%- if message.role == 'user' or message.role == 'tool' -%}\n"
    "        {{- '<\xef\xbd\x9cUser\xef\xbd\x9c>' ~ " CONTENT " -}}\n"
    "    {%- elif message.role == 'assistant' -%}\n"
    "        {{- '<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>' ~ " CONTENT " ~ eos_token -}}\n"
    "    {%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}{{- '<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>' -}}{%- endif -%}\n";

/* gpt-oss: harmony-like <|start|>role<|message|>text<|end|>; an answer ends
 * with eos_token (harmony's <|return|>). */
static const char s_gpt_oss[] =
    "{{- '<|start|>system<|message|>You are a helpful assistant.\\nCurrent date: ' ~ strftime_now('%Y-%m-%d') ~ '<|end|>' -}}\n"
    "{%- for message in messages -%}\n"
    "    {%- if message.role == 'system' -%}\n"
    "        {{- '<|start|>developer<|message|># Instructions\\n\\n' ~ " CONTENT " ~ '<|end|>' -}}\n"
    "    {%- elif message.role == 'assistant' -%}\n"
    "        {{- '<|start|>assistant<|channel|>final<|message|>' ~ " CONTENT " -}}\n"
    "        {{- eos_token -}}\n"
    "    {%- else -%}\n"
    "        {{- '<|start|>' ~ message.role ~ '<|message|>' ~ " CONTENT " ~ '<|end|>' -}}\n"
    "    {%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}{{- '<|start|>assistant' -}}{%- endif -%}\n";

/* OLMoE (Tulu): <|role|> lines, eos after each assistant turn. */
static const char s_olmoe[] =
    "{{- bos_token -}}\n"
    "{%- for message in messages -%}\n"
    "    {{- '<|' ~ message.role ~ '|>\\n' ~ " CONTENT " -}}\n"
    "    {%- if message.role == 'assistant' -%}{{- eos_token -}}{%- endif -%}\n"
    "    {%- if not loop.last or message.role != 'assistant' -%}{{- '\\n' -}}{%- endif -%}\n"
    "    {%- if loop.last and add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}\n"
    "{%- endfor -%}\n";

/* Hunyuan: <|startoftext|> system <|extra_4|> user <|extra_0|> answer eos. */
static const char s_hunyuan[] =
    "{{- bos_token -}}\n"
    "{%- for message in messages -%}\n"
    "    {%- if message.role == 'system' -%}\n"
    "        {{- " CONTENT " ~ '<|extra_4|>' -}}\n"
    "    {%- elif message.role == 'assistant' -%}\n"
    "        {{- " CONTENT " ~ eos_token -}}\n"
    "    {%- else -%}\n"
    "        {{- " CONTENT " ~ '<|extra_0|>' -}}\n"
    "    {%- endif -%}\n"
    "{%- endfor -%}\n";

const char *chat_template_for_family(const char *arch)
{
    if (!arch)
        return s_qwen;
    if (!strncmp(arch, "mixtral", 7) || !strncmp(arch, "mistral", 7))
        return s_mixtral;
    if (!strncmp(arch, "deepseek", 8))
        return s_deepseek;
    if (!strncmp(arch, "gpt_oss", 7) || !strncmp(arch, "gpt-oss", 7))
        return s_gpt_oss;
    if (!strncmp(arch, "olmoe", 5))
        return s_olmoe;
    if (!strncmp(arch, "hunyuan", 7))
        return s_hunyuan;
    return s_qwen;
}
