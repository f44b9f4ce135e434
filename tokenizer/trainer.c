/* trainer: see trainer.h.
 *
 * The text is cut into words by the same ByteLevel pre-tokenizer the written
 * file names (pretok.h), and equal words are counted once with their
 * frequency. Each distinct word is a run of symbol ids in one array; a
 * symbol is an index into the learned tokens (0..255 the bytes, then one per
 * merge), and its tokenizer id is n_specials + symbol. Every round recounts
 * the adjacent pairs from scratch in an open-addressed table: a few KB of
 * text has a few thousand symbols, so a round costs microseconds and the
 * simple count is easier to trust than incremental bookkeeping.
 */
#include "tokenizer/trainer.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "core/path.h"
#include "core/timer.h"
#include "tokenizer/pretok.h"
#include "tokenizer/tokenizer_private.h"

/* The ByteLevel pre-tokenizer, post-processor and decoder of the written
 * file: GPT-2's, with no prefix space, so decode(encode(text)) == text.
 * NULL when out of memory. */
static json_t *s_bytelevel(int trim_offsets)
{
    return json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel",
                     "add_prefix_space", 0, "trim_offsets", trim_offsets,
                     "use_regex", 1);
}

static const char s_reserved_fmt[] = "<|reserved_special_token_%d|>";

/* Original text, written for this trainer (public domain). */
static const char s_corpus[] =
    "Serving a mixture-of-experts model\n\n"
    "A mixture-of-experts model replaces the single feed-forward block of "
    "each transformer layer with many smaller blocks, the experts, and a "
    "router that picks a few of them for every token. The router is a small"
    " linear layer: it reads the hidden state of the token, scores every "
    "expert, and keeps the best two. The chosen experts run on the token, "
    "and their outputs are added together, each weighted by the router's "
    "softmax probability. The other experts do nothing for that token. This"
    " is why a model with eight experts of two billion parameters each can "
    "answer about as fast as a dense model of four billion parameters: most"
    " of the weights sit idle on any given step.\n\n"
    "Idle weights still need a home. A large model does not fit in the "
    "memory of one machine, so the experts are spread over several "
    "machines, the expert nodes, while a coordinator keeps the parts that "
    "every token needs: the embeddings, the attention layers, the router "
    "and the final projection to the vocabulary. For each layer, the "
    "coordinator runs attention, asks the router which experts each token "
    "wants, and sends the hidden states of those tokens to the nodes that "
    "hold them. Each node multiplies what it receives by its expert weights"
    " and sends the results back. The coordinator adds them up and moves on"
    " to the next layer.\n\n"
    "The network is now part of the model. Every layer of every step costs "
    "a round trip, so the coordinator batches its messages: one request per"
    " node per layer, carrying the rows of all the tokens that node must "
    "serve. A node answers as soon as its rows are done. When a node is "
    "slow, the whole step waits for it, which is why placement matters. The"
    " placement decides which node holds which experts. A good placement "
    "balances the load, so that popular experts do not all land on the same"
    " machine, and it keeps a second copy of each expert somewhere else, so"
    " that the loss of one node does not stop the cluster.\n\n"
    "Failures are normal in a cluster. A node can crash, lose its network, "
    "or fall behind because another program took its processor. The "
    "coordinator sends heartbeats and notices when a node stops answering. "
    "Then it marks the node as dead and reroutes its rows to the replicas "
    "that hold the same experts. The tokens in flight are computed again on"
    " the new nodes, and the client sees a short pause rather than an "
    "error. When the node comes back, it loads its weights, says hello, and"
    " rejoins the rotation.\n\n"
    "Batching is the other half of the story. A single sequence leaves most"
    " of the hardware idle, because each step reads all the weights it "
    "touches from memory to compute one row. Many sequences at once share "
    "those reads: sixteen rows cost little more than one. The scheduler "
    "therefore collects the requests of many clients, runs their prompts, "
    "and then steps all the running sequences together, one token each. New"
    " requests join at the next step, and finished ones leave, so that "
    "nobody waits for the longest answer in the batch.\n\n"
    "Each sequence keeps a cache of the keys and values of its past tokens,"
    " one entry per layer and position. The cache grows with the length of "
    "the conversation, and it is the main reason memory runs out. The "
    "coordinator sizes it at startup from the model's dimensions and the "
    "largest batch it accepts, and it refuses a request that would not fit "
    "rather than failing halfway through.\n\n"
    "Text enters and leaves the system as tokens. A tokenizer cuts the "
    "prompt into pieces, maps each piece to a number, and later turns the "
    "generated numbers back into text. Byte-level tokenizers start from the"
    " 256 possible bytes, so any string can be encoded, and then learn "
    "merges: pairs of tokens that often appear together become one new "
    "token. Common words such as the, model and expert end up as single "
    "tokens, while rare words are spelled out from smaller parts. Special "
    "tokens mark the start and the end of a text; when the model produces "
    "the end token, generation stops.\n\n"
    "To measure a serving system, count what the user feels. Time to first "
    "token is how long a client waits before the answer starts. Time "
    "between tokens is how smooth the stream is. Throughput is how many "
    "tokens the whole cluster produces per second. A change that doubles "
    "throughput but makes the first token ten times slower is not an "
    "improvement for a chat, though it may be one for a batch job that "
    "summarizes a million documents overnight.\n\n"
    "Random weights are enough to test all of this. A model whose experts "
    "were drawn from a normal distribution has the same shapes, the same "
    "memory traffic and the same routing decisions as a trained one, so it "
    "exercises every path of the system. Its answers are nonsense, of "
    "course, but they are deterministic nonsense: the same seed gives the "
    "same weights, the same prompt gives the same tokens, and a test can "
    "compare the cluster's answer with a single-process reference, token by"
    " token, to prove that nothing was lost on the way.\n";

/* The learned tokens: symbol s has text (byte-level characters, as in
 * tokenizer.json) arena.v[off[s] .. off[s] + len[s]). */
typedef struct s_tokens {
    tok_bytes_t arena;  /* every token text, back to back */
    size_t *off;        /* (cap) arena offset per symbol */
    size_t *len;        /* (cap) text bytes per symbol */
    int32_t n;          /* symbols so far */
    int32_t cap;        /* symbols allocated: 256 + the most merges */
    int32_t *slots;     /* (n_slots) symbol per hash slot, -1 when empty */
    size_t n_slots;     /* power of two, above 2 * cap */
} s_tokens_t;

/* The distinct words: word w is syms[start[w] .. start[w] + n[w]). */
typedef struct s_words {
    int32_t *syms;      /* (n_syms) symbols of all words */
    size_t n_syms;      /* symbols at the start (bytes of all words) */
    size_t *start;      /* (n) offset of each word in syms */
    size_t *len;        /* (n) symbols of each word now */
    int64_t *freq;      /* (n) occurrences of each word in the text */
    size_t n;
} s_words_t;

/* One slot of the pair counter. */
typedef struct s_pair {
    uint64_t key;       /* (a << 32) | b, UINT64_MAX when empty */
    int64_t count;      /* occurrences, weighted by word frequency */
} s_pair_t;

const char *trainer_corpus(size_t *len)
{
    if (len)
        *len = sizeof s_corpus - 1;
    return s_corpus;
}

/* ---- tokens --------------------------------------------------------------- */

static void s_tokens_fini(s_tokens_t *t)
{
    tok_bytes_fini(&t->arena);
    mem_free(t->off);
    mem_free(t->len);
    mem_free(t->slots);
    memset(t, 0, sizeof *t);
}

/* The symbol whose text is s[0..n), or -1. */
static int32_t s_tokens_find(const s_tokens_t *t, const char *s, size_t n)
{
    size_t mask = t->n_slots - 1;
    for (size_t i = tok_hash_bytes(s, n) & mask;; i = (i + 1) & mask) {
        int32_t k = t->slots[i];
        if (k < 0)
            return -1;
        if (t->len[k] == n && memcmp(t->arena.v + t->off[k], s, n) == 0)
            return k;
    }
}

/* Adds a symbol with text s[0..n) (not yet present; room for it). */
static int s_tokens_add(s_tokens_t *t, const char *s, size_t n)
{
    size_t at = t->arena.n;
    if (tok_bytes_push(&t->arena, s, n) < 0)
        return -1;
    t->off[t->n] = at;
    t->len[t->n] = n;
    size_t mask = t->n_slots - 1, i = tok_hash_bytes(s, n) & mask;
    while (t->slots[i] >= 0)
        i = (i + 1) & mask;
    t->slots[i] = t->n++;
    return 0;
}

static int s_tokens_init(s_tokens_t *t, int32_t cap)
{
    memset(t, 0, sizeof *t);
    t->cap = cap;
    t->n_slots = tok_pow2_above((size_t)cap);
    t->off = mem_alloc((size_t)cap * sizeof *t->off);
    t->len = mem_alloc((size_t)cap * sizeof *t->len);
    t->slots = mem_alloc(t->n_slots * sizeof *t->slots);
    if (!t->off || !t->len || !t->slots)
        return -1;
    memset(t->slots, 0xFF, t->n_slots * sizeof *t->slots);
    for (int b = 0; b < 256; b++) {
        const char *c = pretok_byte_char((unsigned char)b);
        if (s_tokens_add(t, c, strlen(c)) < 0)
            return -1;
    }
    return 0;
}

/* ---- words ---------------------------------------------------------------- */

static void s_words_fini(s_words_t *w)
{
    mem_free(w->syms);
    mem_free(w->start);
    mem_free(w->len);
    mem_free(w->freq);
    memset(w, 0, sizeof *w);
}

/* Distinct words of the pieces (byte-level text) with their frequencies, in
 * order of first appearance. */
static int s_words_build(s_words_t *w, const tok_pieces_t *ps)
{
    size_t total = ps->bytes.n; /* symbols never outnumber the bytes */
    size_t n_slots = tok_pow2_above(ps->n + 1);
    size_t *slots = mem_alloc(n_slots * sizeof *slots); /* word + 1, 0 empty */
    size_t *piece_of = mem_alloc((ps->n + 1) * sizeof *piece_of);
    w->syms = mem_alloc((total + 1) * sizeof *w->syms);
    w->start = mem_alloc((ps->n + 1) * sizeof *w->start);
    w->len = mem_alloc((ps->n + 1) * sizeof *w->len);
    w->freq = mem_alloc((ps->n + 1) * sizeof *w->freq);
    int rc = -1;
    if (!slots || !piece_of || !w->syms || !w->start || !w->len || !w->freq)
        goto cleanup;
    memset(slots, 0, n_slots * sizeof *slots);
    for (size_t k = 0; k < ps->n; k++) {
        const char *p = ps->bytes.v + ps->off[k];
        size_t n = ps->len[k], mask = n_slots - 1;
        size_t i = tok_hash_bytes(p, n) & mask;
        for (; slots[i]; i = (i + 1) & mask) {
            size_t q = piece_of[slots[i] - 1];
            if (ps->len[q] == n && memcmp(ps->bytes.v + ps->off[q], p, n) == 0)
                break;
        }
        if (slots[i]) {
            w->freq[slots[i] - 1]++;
            continue;
        }
        /* a new word: its byte-level characters back to byte symbols */
        size_t at = w->n_syms;
        for (size_t j = 0; j < n;) {
            size_t used = 0;
            int b = pretok_char_byte(p + j, n - j, &used);
            if (b < 0) { /* cannot happen: ByteLevel made these characters */
                errno = EINVAL;
                goto cleanup;
            }
            w->syms[w->n_syms++] = b;
            j += used;
        }
        piece_of[w->n] = k;
        w->start[w->n] = at;
        w->len[w->n] = w->n_syms - at;
        w->freq[w->n] = 1;
        slots[i] = ++w->n;
    }
    rc = 0;
cleanup:
    tok_free(piece_of);
    tok_free(slots);
    return rc;
}

/* ---- training --------------------------------------------------------------- */

/* The most frequent adjacent pair (ties: smaller a, then smaller b) with its
 * count in *best_count; UINT64_MAX when no word has two symbols. pairs has
 * n_pairs slots, a power of two above twice the symbols. */
static uint64_t s_best_pair(const s_words_t *w, s_pair_t *pairs,
                            size_t n_pairs, int64_t *best_count)
{
    memset(pairs, 0xFF, n_pairs * sizeof *pairs);
    size_t mask = n_pairs - 1;
    uint64_t best = UINT64_MAX;
    int64_t best_n = 0;
    for (size_t k = 0; k < w->n; k++) {
        const int32_t *s = w->syms + w->start[k];
        for (size_t j = 0; j + 1 < w->len[k]; j++) {
            uint64_t key = ((uint64_t)(uint32_t)s[j] << 32) | (uint32_t)s[j + 1];
            size_t i = tok_hash_u64(key) & mask;
            while (pairs[i].key != UINT64_MAX && pairs[i].key != key)
                i = (i + 1) & mask;
            if (pairs[i].key == UINT64_MAX) {
                pairs[i].key = key;
                pairs[i].count = 0;
            }
            int64_t c = pairs[i].count += w->freq[k];
            if (c > best_n || (c == best_n && key < best)) {
                best = key;
                best_n = c;
            }
        }
    }
    *best_count = best_n;
    return best;
}

/* Replaces every (a, b) in the words, left to right, by sym. */
static void s_apply(s_words_t *w, int32_t a, int32_t b, int32_t sym)
{
    for (size_t k = 0; k < w->n; k++) {
        int32_t *s = w->syms + w->start[k];
        size_t n = w->len[k], out = 0;
        for (size_t j = 0; j < n; j++) {
            if (j + 1 < n && s[j] == a && s[j + 1] == b) {
                s[out++] = sym;
                j++;
            } else {
                s[out++] = s[j];
            }
        }
        w->len[k] = out;
    }
}

/* Learns up to max_merges merges into tok; the merges' symbol pairs go to
 * merges[2 * m], merges[2 * m + 1]. *n_merges gets their count. */
static int s_train(s_tokens_t *tok, s_words_t *w, int64_t min_freq,
                   int32_t max_merges, int32_t *merges, int32_t *n_merges,
                   err_t *err)
{
    size_t n_pairs = tok_pow2_above(w->n_syms + 1);
    s_pair_t *pairs = mem_alloc(n_pairs * sizeof *pairs);
    tok_bytes_t joined = {0};
    int rc = -1;
    if (!pairs) {
        err_set(err, ENOMEM, "out of memory");
        goto cleanup;
    }
    *n_merges = 0;
    while (*n_merges < max_merges) {
        int64_t count;
        uint64_t key = s_best_pair(w, pairs, n_pairs, &count);
        if (key == UINT64_MAX || count < min_freq)
            break;
        int32_t a = (int32_t)(key >> 32), b = (int32_t)(key & 0xFFFFFFFFu);
        joined.n = 0;
        if (tok_bytes_push(&joined, tok->arena.v + tok->off[a], tok->len[a]) < 0 ||
            tok_bytes_push(&joined, tok->arena.v + tok->off[b], tok->len[b]) < 0) {
            err_set(err, ENOMEM, "out of memory");
            goto cleanup;
        }
        /* Why: two merge paths can spell one text ("ab"+"c", "a"+"bc"); as
         * in HF's trainer, the merge then reuses the token. */
        int32_t sym = s_tokens_find(tok, joined.v, joined.n);
        if (sym < 0) {
            sym = tok->n;
            if (s_tokens_add(tok, joined.v, joined.n) < 0) {
                err_set(err, ENOMEM, "out of memory");
                goto cleanup;
            }
        }
        s_apply(w, a, b, sym);
        merges[2 * *n_merges] = a;
        merges[2 * *n_merges + 1] = b;
        ++*n_merges;
    }
    rc = 0;
cleanup:
    tok_bytes_fini(&joined);
    tok_free(pairs);
    return rc;
}

/* ---- JSON ------------------------------------------------------------------ */

/* Appends one added-token object. 0, or -1 (out of memory). */
static int s_added_push(json_t *list, int32_t id, const char *content)
{
    json_t *o = json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", (json_int_t)id,
                          "content", content, "single_word", 0, "lstrip", 0,
                          "rstrip", 0, "normalized", 0, "special", 1);
    return o ? json_array_append_new(list, o) : -1;
}

static json_t *s_text(const s_tokens_t *t, int32_t sym)
{
    return json_stringn(t->arena.v + t->off[sym], t->len[sym]);
}

/* The k-th filler word (k >= 0) in byte-level text: a space (U+0120, the
 * ByteLevel spelling of byte 0x20) and two or more consonant-vowel
 * syllables, k + 70 written in base 70, so different k give different words
 * ("Ġbaba", "Ġbabe", ...). Returns its length in bytes. */
static size_t s_filler_word(int32_t k, char *out, size_t size)
{
    static const char consonants[] = "bdfgklmnprstvz", vowels[] = "aeiou";
    enum { N_SYLLABLES = (sizeof consonants - 1) * (sizeof vowels - 1) };
    char digits[16];
    int n_digits = 0;
    for (uint64_t v = (uint64_t)k + N_SYLLABLES; v > 0 && n_digits < 16; v /= N_SYLLABLES)
        digits[n_digits++] = (char)(v % N_SYLLABLES);
    size_t n = 0;
    out[n++] = '\xC4';
    out[n++] = '\xA0';
    for (int i = n_digits - 1; i >= 0 && n + 2 < size; i--) {
        out[n++] = consonants[digits[i] / (sizeof vowels - 1)];
        out[n++] = vowels[digits[i] % (sizeof vowels - 1)];
    }
    out[n] = '\0';
    return n;
}

/* The tokenizer.json document; NULL when out of memory. */
static json_t *s_tokenizer_json(const trainer_opts_t *o, const s_tokens_t *t,
                                const int32_t *merges, int32_t n_merges)
{
    int32_t ns = o->n_specials;
    json_t *added = json_array(), *vocab = json_object(),
           *mlist = json_array();
    json_t *root = NULL;
    if (!added || !vocab || !mlist)
        goto fail;
    for (int32_t i = 0; i < ns; i++)
        if (s_added_push(added, i, o->specials[i]) < 0 ||
            json_object_set_new(vocab, o->specials[i], json_integer(i)) < 0)
            goto fail;
    for (int32_t s = 0; s < t->n; s++) {
        json_t *key = s_text(t, s);
        int bad = !key || json_object_set_new(vocab, json_string_value(key),
                                              json_integer(ns + s)) < 0;
        json_decref(key);
        if (bad)
            goto fail;
    }
    for (int32_t m = 0; m < n_merges; m++) {
        json_t *pair = json_pack("[o, o]", s_text(t, merges[2 * m]),
                                 s_text(t, merges[2 * m + 1]));
        if (!pair || json_array_append_new(mlist, pair) < 0)
            goto fail;
    }
    char name[64];
    for (int32_t id = ns + t->n, k = 0; id < o->vocab_size; id++, k++) {
        if (o->fill_words) {
            size_t n;
            do /* skip the words the text taught already */
                n = s_filler_word(k++, name, sizeof name);
            while (s_tokens_find(t, name, n) >= 0);
            k--;
            if (json_object_set_new(vocab, name, json_integer(id)) < 0)
                goto fail;
            continue;
        }
        snprintf(name, sizeof name, s_reserved_fmt, (int)k);
        if (s_added_push(added, id, name) < 0)
            goto fail;
    }
    /* json_pack's "o" takes the references, also when it fails (2.11+) */
    root = json_pack(
        "{s:s, s:n, s:n, s:o, s:n, s:o, s:o, s:o, s:{s:s, s:n, s:n, s:n, s:n,"
        " s:b, s:b, s:b, s:o, s:o}}",
        "version", "1.0", "truncation", "padding", "added_tokens", added,
        "normalizer", "pre_tokenizer", s_bytelevel(1), "post_processor",
        s_bytelevel(0), "decoder", s_bytelevel(1), "model", "type", "BPE",
        "dropout", "unk_token", "continuing_subword_prefix",
        "end_of_word_suffix", "fuse_unk", 0, "byte_fallback", 0,
        "ignore_merges", 0, "vocab", vocab, "merges", mlist);
    return root;
fail:
    json_decref(added);
    json_decref(vocab);
    json_decref(mlist);
    return NULL;
}

static json_t *s_special_or_null(const trainer_opts_t *o, int i)
{
    return i >= 0 ? json_string(o->specials[i]) : json_null();
}

/* The tokenizer_config.json document; NULL when out of memory. */
static json_t *s_config_json(const trainer_opts_t *o)
{
    json_t *root = json_pack(
        "{s:b, s:b, s:o, s:b, s:o, s:o, s:s, s:n}", "add_bos_token", 0,
        "add_eos_token", 0, "bos_token", s_special_or_null(o, o->bos),
        "clean_up_tokenization_spaces", 0, "eos_token",
        s_special_or_null(o, o->eos), "pad_token", s_special_or_null(o, o->pad),
        "tokenizer_class", "PreTrainedTokenizerFast", "unk_token");
    if (root && o->model_max_length > 0 &&
        json_object_set_new(root, "model_max_length",
                            json_integer(o->model_max_length)) < 0) {
        json_decref(root);
        root = NULL;
    }
    if (root && o->chat_template &&
        json_object_set_new(root, "chat_template", json_string(o->chat_template)) < 0) {
        json_decref(root);
        root = NULL;
    }
    return root;
}

/* Writes doc to dir/name, keys in insertion order (sorted when sort). */
static int s_dump(const char *dir, const char *name, const json_t *doc,
                  int sort, err_t *err)
{
    char *path = path_join(dir, name);
    char *text = doc ? json_dumps(doc, JSON_INDENT(2) |
                                           (sort ? JSON_SORT_KEYS : 0))
                     : NULL;
    FILE *f = NULL;
    int rc = -1;
    if (!path || !text) {
        err_set(err, ENOMEM, "out of memory writing %s", name);
        goto cleanup;
    }
    if (!(f = fopen(path, "w"))) {
        err_set(err, errno, "cannot create %s: %s", path, strerror(errno));
        goto cleanup;
    }
    errno = 0;
    int ok = fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    int closed = fclose(f);
    if (!ok || closed != 0) {
        int e = errno ? errno : EIO;
        err_set(err, e, "cannot write %s: %s", path, strerror(e));
        goto cleanup;
    }
    rc = 0;
cleanup:;
    int saved = errno;
    free(text); /* json_dumps allocates with jansson's malloc */
    mem_free(path);
    errno = saved;
    return rc;
}

/* ---- public ------------------------------------------------------------------ */

static int s_utf8_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        int k = tok_utf8_step((const unsigned char *)s + i, n - i);
        if (k < 0)
            return 0;
        i += (size_t)k;
    }
    return 1;
}

static int s_check_opts(const trainer_opts_t *o, err_t *err)
{
    if (o->n_specials < 0 || o->n_specials > TRAINER_SPECIALS_MAX)
        return err_set(err, EINVAL, "%d special tokens (at most %d)",
                       o->n_specials, TRAINER_SPECIALS_MAX);
    if (o->vocab_size < o->n_specials + 256)
        return err_set(err, EINVAL, "vocab_size %d leaves no room for %d special "
                       "and 256 byte tokens", (int)o->vocab_size, o->n_specials);
    for (int i = 0; i < o->n_specials; i++) {
        const char *s = o->specials[i];
        if (!s || !*s || !s_utf8_ok(s, strlen(s)))
            return err_set(err, EINVAL, "special token %d is empty or not UTF-8", i);
        for (int j = 0; j < i; j++)
            if (strcmp(s, o->specials[j]) == 0)
                return err_set(err, EINVAL, "special token '%s' given twice", s);
        int k;
        char tail;
        if (sscanf(s, "<|reserved_special_token_%d|%c", &k, &tail) == 2)
            return err_set(err, EINVAL, "special token '%s' looks like a "
                           "reserved one", s);
    }
    const int idx[3] = {o->bos, o->eos, o->pad};
    for (int i = 0; i < 3; i++)
        if (idx[i] < -1 || idx[i] >= o->n_specials)
            return err_set(err, EINVAL, "%s index %d is not a special token",
                           i == 0 ? "bos" : i == 1 ? "eos" : "pad", idx[i]);
    if (o->min_frequency < 0)
        return err_set(err, EINVAL, "min_frequency %d < 0", o->min_frequency);
    return 0;
}

int trainer_write(const char *dir, const char *text, size_t len,
                  const trainer_opts_t *opts, trainer_stats_t *stats,
                  err_t *err)
{
    s_tokens_t tok = {0};
    s_words_t words = {0};
    tok_pieces_t pieces = {0};
    pretok_t *pre = NULL;
    json_t *spec = NULL, *doc = NULL, *cfg = NULL;
    int32_t *merges = NULL;
    int rc = -1;

    if (s_check_opts(opts, err) < 0)
        return -1;
    if (!s_utf8_ok(text, len))
        return err_set(err, EINVAL, "training text is not UTF-8");
    double t0 = timer_now();
    spec = s_bytelevel(1);
    if (!spec) {
        err_set(err, ENOMEM, "out of memory");
        goto cleanup;
    }
    if (!(pre = pretok_new(spec, err)) ||
        pretok_run(pre, text, len, &pieces, err) < 0)
        goto cleanup;
    if (s_words_build(&words, &pieces) < 0) {
        err_set(err, errno, "counting words: %s", strerror(errno));
        goto cleanup;
    }
    /* Merges are bounded by the room left and by the symbols: each merge
     * shortens at least one word. */
    int32_t room = opts->vocab_size - opts->n_specials - 256;
    int32_t max_merges =
        (size_t)room < words.n_syms ? room : (int32_t)words.n_syms;
    merges = mem_alloc(2 * ((size_t)max_merges + 1) * sizeof *merges);
    if (!merges || s_tokens_init(&tok, 256 + max_merges) < 0) {
        err_set(err, ENOMEM, "out of memory");
        goto cleanup;
    }
    int32_t n_merges = 0;
    int64_t min_freq = opts->min_frequency ? opts->min_frequency : 2;
    if (s_train(&tok, &words, min_freq, max_merges, merges, &n_merges, err) < 0)
        goto cleanup;
    double t1 = timer_now();
    for (int i = 0; i < opts->n_specials; i++)
        if (s_tokens_find(&tok, opts->specials[i], strlen(opts->specials[i])) >= 0) {
            err_set(err, EINVAL, "special token '%s' is also a learned token",
                    opts->specials[i]);
            goto cleanup;
        }
    doc = s_tokenizer_json(opts, &tok, merges, n_merges);
    cfg = s_config_json(opts);
    if (s_dump(dir, "tokenizer.json", doc, 0, err) < 0 ||
        s_dump(dir, "tokenizer_config.json", cfg, 1, err) < 0)
        goto cleanup;
    if (stats) {
        stats->n_merges = n_merges;
        int32_t rest = opts->vocab_size - opts->n_specials - tok.n;
        stats->n_reserved = opts->fill_words ? 0 : rest;
        stats->n_filled = opts->fill_words ? rest : 0;
        stats->n_words = words.n;
        stats->n_text_tokens = 0;
        for (size_t k = 0; k < words.n; k++)
            stats->n_text_tokens += (size_t)words.freq[k] * words.len[k];
        stats->seconds = t1 - t0;
    }
    rc = 0;
cleanup:;
    int saved = errno;
    json_decref(cfg);
    json_decref(doc);
    json_decref(spec);
    mem_free(merges);
    s_tokens_fini(&tok);
    s_words_fini(&words);
    tok_pieces_fini(&pieces);
    pretok_destroy(&pre);
    errno = saved;
    return rc;
}
