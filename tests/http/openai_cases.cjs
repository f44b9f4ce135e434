// The official OpenAI client library (npm "openai") against moecluster's
// HTTP API: one case per run, as tests/test_http_clients.c asks.
//
//   node openai_cases.cjs BASE_URL API_KEY MODEL CASE [ARG]
//
// BASE_URL: http://127.0.0.1:PORT/v1. Prints one JSON line of what the case
// saw (for the C test's own checks) and exits 0, or prints "FAIL: why" on
// stderr and exits 1. Every request has a timeout and no retries, so a
// case ends within a bounded time whatever the server does.
'use strict';

const assert = require('node:assert/strict');
const OpenAI = require('openai');

const [baseURL, apiKey, model, caseName, arg] = process.argv.slice(2);
if (!caseName) {
    console.error('usage: node openai_cases.cjs BASE_URL API_KEY MODEL CASE [ARG]');
    process.exit(2);
}
const client = new OpenAI({ baseURL, apiKey, timeout: 120000, maxRetries: 0 });

const PROMPT = 'Experts live on many machines.';
const MESSAGES = [
    { role: 'system', content: 'You are a terse assistant.' },
    { role: 'user', content: 'Say something about experts.' },
];

function checkUsage(usage, maxTokens) {
    assert.ok(usage, 'usage present');
    assert.ok(Number.isInteger(usage.prompt_tokens) && usage.prompt_tokens > 0,
        `usage.prompt_tokens ${usage.prompt_tokens}`);
    assert.ok(Number.isInteger(usage.completion_tokens) && usage.completion_tokens >= 1 &&
        usage.completion_tokens <= maxTokens, `usage.completion_tokens ${usage.completion_tokens}`);
    assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens,
        'total_tokens = prompt + completion');
}

function checkFinish(reason, usage, maxTokens) {
    assert.ok(reason === 'stop' || reason === 'length', `finish_reason ${reason}`);
    if (reason === 'length')
        assert.equal(usage.completion_tokens, maxTokens, 'length: max_tokens generated');
}

// The piece of text to stop at: two visible characters
// that first occur after the start of text (null when there are none).
function stopPiece(text) {
    for (let i = 1; i + 2 <= text.length; i++) {
        const s = text.slice(i, i + 2);
        if (/^\S\S$/.test(s) && text.indexOf(s) === i)
            return s;
    }
    return null;
}

// The tokens spell the text (the bytes of an unfinished character held to
// the end go with the last token).
function spells(tokens, text) {
    assert.equal(tokens.join(''), text, 'the tokens spell the text');
}

const cases = {
    async models() {
        const page = await client.models.list();
        const ids = page.data.map((m) => m.id);
        assert.ok(ids.includes(model), `${model} among the models ${JSON.stringify(ids)}`);
        for (const m of page.data) {
            assert.equal(m.object, 'model');
            assert.equal(typeof m.owned_by, 'string');
            assert.ok(Number.isInteger(m.created));
        }
        const one = await client.models.retrieve(model).catch((e) => e);
        return { ids, retrieve: one instanceof Error ? String(one.status) : one.id };
    },

    async completion_text() {
        const r = await client.completions.create({ model, prompt: PROMPT, max_tokens: 8,
            temperature: 0 });
        assert.equal(r.object, 'text_completion');
        assert.equal(typeof r.id, 'string');
        assert.equal(r.model, model);
        assert.equal(r.choices.length, 1);
        assert.equal(r.choices[0].index, 0);
        assert.equal(typeof r.choices[0].text, 'string');
        checkUsage(r.usage, 8);
        checkFinish(r.choices[0].finish_reason, r.usage, 8);
        return { text: r.choices[0].text, usage: r.usage, finish: r.choices[0].finish_reason };
    },

    // ARG: the prompt ids "5,17,2"; greedy. The C test compares the text and
    // the count with moe-run's for the same ids.
    async completion_ids() {
        const ids = arg.split(',').map(Number);
        const r = await client.completions.create({ model, prompt: ids, max_tokens: 12,
            temperature: 0, logprobs: 1 });
        assert.equal(r.usage.prompt_tokens, ids.length, 'prompt_tokens: the ids given');
        checkUsage(r.usage, 12);
        checkFinish(r.choices[0].finish_reason, r.usage, 12);
        const lp = r.choices[0].logprobs;
        assert.ok(lp, 'logprobs present');
        assert.equal(lp.tokens.length, r.usage.completion_tokens, 'one logprob per token');
        return { text: r.choices[0].text, completion_tokens: r.usage.completion_tokens,
            finish: r.choices[0].finish_reason, tokens: lp.tokens };
    },

    async chat() {
        const r = await client.chat.completions.create({ model, messages: MESSAGES,
            max_tokens: 8, temperature: 0 });
        assert.equal(r.object, 'chat.completion');
        assert.equal(r.choices.length, 1);
        const c = r.choices[0];
        assert.equal(c.message.role, 'assistant');
        assert.equal(typeof c.message.content, 'string');
        checkUsage(r.usage, 8);
        checkFinish(c.finish_reason, r.usage, 8);
        return { content: c.message.content, usage: r.usage, finish: c.finish_reason };
    },

    // Deltas put together are the unstreamed answer; the last choice chunk
    // names the finish reason; with include_usage one last chunk with no
    // choices carries the usage.
    async chat_stream() {
        const whole = await client.chat.completions.create({ model, messages: MESSAGES,
            max_tokens: 10, temperature: 0 });
        const stream = await client.chat.completions.create({ model, messages: MESSAGES,
            max_tokens: 10, temperature: 0, stream: true,
            stream_options: { include_usage: true } });
        let content = '', finish = null, usage = null, chunks = 0, id = null, role = null;
        for await (const chunk of stream) {
            chunks++;
            assert.equal(chunk.object, 'chat.completion.chunk');
            id = id ?? chunk.id;
            assert.equal(chunk.id, id, 'one id for all chunks');
            if (chunk.usage)
                usage = chunk.usage;
            if (chunk.choices.length === 0) {
                assert.ok(chunk.usage, 'a chunk without choices carries the usage');
                continue;
            }
            assert.equal(usage, null, 'the usage chunk comes last');
            const c = chunk.choices[0];
            if (c.delta.role)
                role = c.delta.role;
            if (c.delta.content)
                content += c.delta.content;
            if (c.finish_reason) {
                assert.equal(finish, null, 'one finish_reason');
                finish = c.finish_reason;
            }
        }
        assert.ok(chunks >= 2, `${chunks} chunks`);
        assert.equal(role, 'assistant');
        assert.ok(finish, 'a finish_reason');
        checkUsage(usage, 10);
        checkFinish(finish, usage, 10);
        assert.equal(content, whole.choices[0].message.content, 'streamed = whole');
        assert.equal(finish, whole.choices[0].finish_reason);
        assert.deepEqual(usage, whole.usage);
        return { content, finish, usage, chunks };
    },

    async completion_stream() {
        const whole = await client.completions.create({ model, prompt: PROMPT, max_tokens: 10,
            temperature: 0 });
        const stream = await client.completions.create({ model, prompt: PROMPT, max_tokens: 10,
            temperature: 0, stream: true, stream_options: { include_usage: true } });
        let text = '', finish = null, usage = null;
        for await (const chunk of stream) {
            assert.equal(chunk.object, 'text_completion');
            if (chunk.usage)
                usage = chunk.usage;
            for (const c of chunk.choices) {
                text += c.text;
                if (c.finish_reason)
                    finish = c.finish_reason;
            }
        }
        assert.equal(text, whole.choices[0].text, 'streamed = whole');
        assert.equal(finish, whole.choices[0].finish_reason);
        assert.deepEqual(usage, whole.usage);
        return { text, finish };
    },

    // A stop string cut from the greedy answer: the answer ends before it,
    // finish_reason "stop", and the text does not hold it; also streamed.
    async stop() {
        const free = await client.completions.create({ model, prompt: PROMPT, max_tokens: 16,
            temperature: 0 });
        const text = free.choices[0].text;
        const piece = stopPiece(text);
        assert.ok(piece, `no stop piece in the greedy answer ${JSON.stringify(text)}`);
        const want = text.slice(0, text.indexOf(piece));
        const r = await client.completions.create({ model, prompt: PROMPT, max_tokens: 16,
            temperature: 0, stop: [piece, 'never-in-the-output-zq'] });
        assert.equal(r.choices[0].finish_reason, 'stop');
        assert.ok(!r.choices[0].text.includes(piece), 'the stop string is not in the text');
        assert.equal(r.choices[0].text, want);
        assert.ok(r.usage.completion_tokens < free.usage.completion_tokens ||
            free.choices[0].finish_reason === 'stop', 'fewer tokens when stopped early');
        let streamed = '', finish = null;
        const stream = await client.completions.create({ model, prompt: PROMPT, max_tokens: 16,
            temperature: 0, stop: piece, stream: true });
        for await (const chunk of stream) {
            for (const c of chunk.choices) {
                streamed += c.text;
                if (c.finish_reason)
                    finish = c.finish_reason;
            }
        }
        assert.equal(streamed, want, 'streamed text stops before the stop string too');
        assert.equal(finish, 'stop');
        return { text, piece, stopped: r.choices[0].text };
    },

    // A stop string cut from the greedy chat answer.
    async chat_stop() {
        const free = await client.chat.completions.create({ model, messages: MESSAGES,
            max_tokens: 16, temperature: 0 });
        const text = free.choices[0].message.content;
        const piece = stopPiece(text);
        assert.ok(piece, `no stop piece in the greedy answer ${JSON.stringify(text)}`);
        const r = await client.chat.completions.create({ model, messages: MESSAGES,
            max_tokens: 16, temperature: 0, stop: piece });
        assert.equal(r.choices[0].finish_reason, 'stop');
        assert.equal(r.choices[0].message.content, text.slice(0, text.indexOf(piece)));
        return { text, piece, stopped: r.choices[0].message.content };
    },

    // Refusals come as the client's typed errors with OpenAI-shaped bodies.
    async errors() {
        const seen = {};
        const expect = async (name, status, cls, call) => {
            let err = null;
            try {
                await call();
            } catch (e) {
                err = e;
            }
            assert.ok(err, `${name}: no error`);
            assert.ok(err instanceof OpenAI.APIError, `${name}: ${err} is not an APIError`);
            assert.equal(err.status, status, `${name}: status ${err.status}: ${err.message}`);
            assert.ok(err instanceof cls, `${name}: not a ${cls.name}`);
            assert.equal(typeof err.error?.message, 'string', `${name}: error.message`);
            assert.ok(err.error.message.length > 0);
            assert.equal(typeof err.error.type, 'string', `${name}: error.type`);
            seen[name] = { status: err.status, type: err.error.type, message: err.error.message };
        };
        await expect('unknown model', 404, OpenAI.NotFoundError, () =>
            client.completions.create({ model: 'no-such-model', prompt: 'x', max_tokens: 1 }));
        await expect('unknown chat model', 404, OpenAI.NotFoundError, () =>
            client.chat.completions.create({ model: 'no-such-model', messages: MESSAGES }));
        const bad = new OpenAI({ baseURL, apiKey: apiKey + '-wrong', timeout: 30000,
            maxRetries: 0 });
        await expect('bad key', 401, OpenAI.AuthenticationError, () => bad.models.list());
        await expect('bad key completion', 401, OpenAI.AuthenticationError, () =>
            bad.completions.create({ model, prompt: 'x', max_tokens: 1 }));
        await expect('negative max_tokens', 400, OpenAI.BadRequestError, () =>
            client.completions.create({ model, prompt: 'x', max_tokens: -1 }));
        await expect('temperature a string', 400, OpenAI.BadRequestError, () =>
            client.completions.create({ model, prompt: 'x', max_tokens: 1, temperature: 'hot' }));
        await expect('token id out of vocabulary', 400, OpenAI.BadRequestError, () =>
            client.completions.create({ model, prompt: [1, 999999999], max_tokens: 1 }));
        await expect('no messages', 400, OpenAI.BadRequestError, () =>
            client.chat.completions.create({ model, messages: [] }));
        return seen;
    },

    async logprobs() {
        const r = await client.completions.create({ model, prompt: PROMPT, max_tokens: 6,
            temperature: 0, logprobs: 3 });
        const lp = r.choices[0].logprobs;
        const n = r.usage.completion_tokens;
        assert.equal(lp.tokens.length, n);
        assert.equal(lp.token_logprobs.length, n);
        assert.equal(lp.top_logprobs.length, n);
        assert.equal(lp.text_offset.length, n);
        spells(lp.tokens, r.choices[0].text);
        for (let i = 0; i < n; i++) {
            assert.ok(lp.token_logprobs[i] <= 0, `logprob ${lp.token_logprobs[i]} <= 0`);
            const top = lp.top_logprobs[i];
            const entries = Object.entries(top);
            assert.ok(entries.length >= 1 && entries.length <= 3, `top ${entries.length}`);
            // greedy: the chosen token is the most likely one
            const best = Math.max(...entries.map((e) => e[1]));
            assert.ok(Math.abs(best - lp.token_logprobs[i]) < 1e-4, 'greedy picks the top');
            if (i > 0)
                assert.ok(lp.text_offset[i] >= lp.text_offset[i - 1]);
        }
        return { tokens: lp.tokens };
    },

    async chat_logprobs() {
        const c = await client.chat.completions.create({ model, messages: MESSAGES,
            max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 2 });
        const content = c.choices[0].logprobs.content;
        assert.equal(content.length, c.usage.completion_tokens);
        for (const t of content) {
            assert.equal(typeof t.token, 'string');
            assert.ok(t.logprob <= 0);
            assert.ok(Array.isArray(t.bytes) || t.bytes === null);
            assert.ok(t.top_logprobs.length >= 1 && t.top_logprobs.length <= 2);
            for (const e of t.top_logprobs) {
                assert.equal(typeof e.token, 'string');
                assert.ok(e.logprob <= 0);
            }
            assert.ok(Math.abs(t.top_logprobs[0].logprob - t.logprob) < 1e-4);
        }
        spells(content.map((t) => t.token), c.choices[0].message.content);
        return { tokens: content.map((t) => t.token) };
    },

    // A seeded sampled request repeats; top_p near 0 is greedy.
    async seed() {
        const req = { model, prompt: PROMPT, max_tokens: 12, temperature: 0.9, seed: 1234 };
        const a = await client.completions.create(req);
        const b = await client.completions.create(req);
        assert.equal(a.choices[0].text, b.choices[0].text, 'same seed, same text');
        const g = await client.completions.create({ model, prompt: PROMPT, max_tokens: 12,
            temperature: 0 });
        const p = await client.completions.create({ model, prompt: PROMPT, max_tokens: 12,
            temperature: 1, top_p: 1e-9, seed: 7 });
        assert.equal(p.choices[0].text, g.choices[0].text, 'top_p ~ 0 is greedy');
        return { sampled: a.choices[0].text, greedy: g.choices[0].text };
    },
};

async function main() {
    const run = cases[caseName];
    if (!run) {
        console.error(`FAIL: no case ${caseName} (cases: ${Object.keys(cases).join(' ')})`);
        process.exit(2);
    }
    try {
        const seen = await run();
        console.log(JSON.stringify(seen));
    } catch (e) {
        const body = e && e.error ? ` body ${JSON.stringify(e.error)}` : '';
        console.error(`FAIL: ${caseName}: ${e && e.message ? e.message : e}${body}`);
        process.exit(1);
    }
}

main();
