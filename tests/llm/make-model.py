#!/usr/bin/env python3
"""make-model — a tiny llama-architecture GGUF for testing kgx against the real llama-server.

    python3 make-model.py --prose prose.txt --out kgx-tiny.gguf

Needs python3-gguf and python3-numpy (Debian sid/forky); scripts/sandbox-llm runs it with the
sandbox root's python3. No download, no randomness: the same inputs give the same bytes.

What the model is:
  * Tokenizer: SentencePiece-style ("llama" model in GGUF terms): byte-fallback tokens <0x00>..<0xFF>,
    every character of the prose, then BPE merges learned from the prose (each merge a token whose
    score is minus its rank, so llama.cpp's score-ordered merging replays the learned order), then a
    few "answer" tokens (names, predicates, numbers, JSON keys). <|im_start|> and <|im_end|> are
    control tokens and the chat template is ChatML, so chat requests work (with them as plain text,
    every chat request with a response_format fails with 400 "Failed to initialize samplers").
    No space prefix is added.
  * Weights: every block's attention output and FFN down projection are zero, so the residual stream
    at the end is the embedding of the last token alone. Each token's embedding is the one-hot vector
    of its "class" (what a JSON answer may need next after it), and the output matrix holds, per class,
    a hand-made preference over next tokens. Under the request's JSON-schema grammar (which masks all
    tokens that do not fit) that gives valid, varied triples that end on their own:
        {"triples":[{"subject":"Carol","predicate":"depends_on","object":"Apollo","confidence":90}, …]}
    Among the choices are a stopword object ("it"), a predicate outside kgx's vocabulary
    ("likes_cheese") and a low confidence (12), so a policy's accept() has something to drop.
    Without a grammar the model rambles until n_predict: useful for cut answers.
"""
import argparse
import collections
import sys

import numpy as np
import gguf

N_EMBD = 256
N_LAYER = 4
N_HEAD = 4
N_FF = 512
N_CTX_TRAIN = 32768
MAX_MERGES = 3000

SPACE = "\u2581"  # SentencePiece's visible space

SUBJECTS = ["Alice", "Bob", "Carol", "Dave", "Erin", "Grace", "Heidi", "Ivan", "Judy", "Kate"]
PREDICATES = ["works_on", "depends_on", "uses", "created", "manages", "owns", "leads", "likes_cheese"]
OBJECTS = ["Apollo", "Kafka", "Prometheus", "PostgreSQL", "search", "billing", "frontend", "indexer", "it"]
NUMBERS = ["95", "90", "85", "80", "70", "12"]
KEYS = {
    "triples": '"triples":[',
    "subject": '"subject":"',
    "predicate": '"predicate":"',
    "object": '"object":"',
    "confidence": '"confidence":',
}

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def learn_merges(text, max_merges):
    """BPE over the prose's words (each word with a leading SPACE), ties broken by the pair's text:
    deterministic. Returns the merged tokens in rank order."""
    words = collections.Counter(SPACE + w for w in text.split())
    seqs = [list(w) for w in words]
    freq = [words[w] for w in words]
    pairs = collections.Counter()
    where = collections.defaultdict(set)
    for i, s in enumerate(seqs):
        for a, b in zip(s, s[1:]):
            pairs[(a, b)] += freq[i]
            where[(a, b)].add(i)
    merges = []
    while len(merges) < max_merges and pairs:
        n = max(pairs.values())
        a, b = min(k for k, v in pairs.items() if v == n)
        if n < 2:
            break
        merges.append(a + b)
        for i in sorted(where.pop((a, b), ())):
            s = seqs[i]
            for x, y in zip(s, s[1:]):
                pairs[(x, y)] -= freq[i]
                if pairs[(x, y)] <= 0:
                    del pairs[(x, y)]
                where[(x, y)].discard(i)
            out, k = [], 0
            while k < len(s):
                if k + 1 < len(s) and s[k] == a and s[k + 1] == b:
                    out.append(a + b)
                    k += 2
                else:
                    out.append(s[k])
                    k += 1
            seqs[i] = out
            for x, y in zip(out, out[1:]):
                pairs[(x, y)] += freq[i]
                where[(x, y)].add(i)
        pairs.pop((a, b), None)
    return merges


def build_vocab(text):
    T = gguf.TokenType
    tokens, scores, types = [], [], []

    def add(tok, score, typ):
        tokens.append(tok)
        scores.append(float(score))
        types.append(int(typ))

    add("<unk>", 0, T.UNKNOWN)
    add("<s>", 0, T.CONTROL)
    add("</s>", 0, T.CONTROL)
    add("<|im_start|>", 0, T.CONTROL)
    add("<|im_end|>", 0, T.CONTROL)
    for b in range(256):
        add("<0x%02X>" % b, 0, T.BYTE)
    chars = set(text.replace(" ", SPACE).replace("\n", "")) | set(chr(c) for c in range(0x21, 0x7F)) | {SPACE}
    for c in sorted(chars):
        add(c, -1e6, T.NORMAL)
    seen = set(tokens)
    for rank, m in enumerate(learn_merges(text, MAX_MERGES)):
        if m not in seen:
            seen.add(m)
            add(m, -(rank + 1), T.NORMAL)
    extra = SUBJECTS + PREDICATES + OBJECTS + NUMBERS + list(KEYS.values())
    for i, t in enumerate(extra):
        if t not in seen:
            seen.add(t)
            add(t, -(1e5 + i), T.NORMAL)
    return tokens, scores, types


# Classes: what came last decides what is preferred next.
CLASSES = ["default", "open_brace", "comma", "key_triples", "key_subject", "key_predicate", "key_object",
           "key_confidence", "name", "quote", "number", "close_brace", "open_bracket", "close_bracket",
           "colon", "space"]


def class_of(tok, typ):
    if typ == gguf.TokenType.BYTE:
        return "space" if tok in ("<0x0A>", "<0x09>", "<0x20>") else "default"
    if typ != gguf.TokenType.NORMAL:
        return "default"
    for k, v in KEYS.items():
        if tok == v:
            return "key_" + k
    if tok in SUBJECTS or tok in PREDICATES or tok in OBJECTS:
        return "name"
    if tok.isdigit():
        return "number"
    if tok.strip(SPACE) == "":
        return "space"
    return {"{": "open_brace", ",": "comma", '"': "quote", "}": "close_brace", "[": "open_bracket",
            "]": "close_bracket", ":": "colon"}.get(tok, "default")


def preferences(tokens, ids):
    """prefs[class] = {token id: logit}; every other logit is LOW."""
    def ix(words):
        return [ids[w] for w in words]

    keys = ix(KEYS.values())
    eog = [ids["<|im_end|>"], ids["</s>"]]
    space = [ids[SPACE], ids["<0x0A>"]]
    p = {c: {} for c in CLASSES}

    def put(c, toks, v):
        for t in toks:
            p[c][t] = v

    put("default", ix(["{"]), 10)
    put("default", ix(['"']), 2)
    put("open_brace", keys, 10)
    put("open_brace", ix(['"']), 5)
    put("comma", keys, 10)
    put("comma", ix(["{"]), 9)
    put("comma", ix(['"']), 5)
    put("key_triples", ix(["{"]), 10)
    put("key_triples", ix(["]"]), 1)
    put("key_subject", ix(SUBJECTS), 10)
    put("key_predicate", ix(PREDICATES), 10)
    put("key_object", ix(OBJECTS), 10)
    put("key_object", ix(["it"]), 8)
    put("key_confidence", ix(NUMBERS), 10)
    put("name", ix(['"']), 10)
    put("quote", ix(SUBJECTS + OBJECTS), 9)   # an opening quote: a name (inside a string, names win)
    put("quote", ix([",", "}", ":"]), 8)      # a closing quote: what the grammar allows next
    put("number", ix([",", "}"]), 10)
    put("close_brace", eog, 10)               # the answer is complete: end it
    put("close_brace", ix([",", "]"]), 6)     # an item is complete: another one, or the list ends
    put("open_bracket", ix(["{"]), 10)
    put("open_bracket", ix(["]"]), 1)
    put("close_bracket", ix(["}"]), 10)
    put("colon", ix(['"'] + NUMBERS), 8)
    put("space", keys, 6)
    put("space", ix(["{", "}", "]", ",", '"']), 5)
    put("space", eog, 7)
    # [s, p, o, confidence] arrays (llama.schema{format="array"}; issue 14). Each of these tokens is
    # masked by the grammar wherever the object format is asked for, so that format's answers do
    # not change: a list opens a tuple, a tuple opens a string, a confidence closes the tuple.
    put("default", ix(["["]), 8)
    put("space", ix(["["]), 5)
    put("open_bracket", ix(["["]), 5)
    put("open_bracket", ix(['"']), 4)
    put("comma", ix(NUMBERS), 4)
    put("number", ix(["]"]), 9)
    put("close_bracket", ix([","]), 6)
    put("close_bracket", ix(["]"]), 6)
    put("close_bracket", eog, 8)
    for c in CLASSES:                         # whitespace is what the grammar falls back on last
        for t in space:
            p[c].setdefault(t, -4)
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prose", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    with open(a.prose, encoding="utf-8") as f:
        text = f.read()
    tokens, scores, types = build_vocab(text)
    ids = {t: i for i, t in enumerate(tokens)}
    n_vocab = len(tokens)
    LOW = -10.0

    cls = {c: i for i, c in enumerate(CLASSES)}
    embd = np.zeros((n_vocab, N_EMBD), dtype=np.float32)
    for i, t in enumerate(tokens):
        embd[i, cls[class_of(t, types[i])]] = 1.0
    # logits = output · (rmsnorm(one-hot) · norm weight) = output[:, class] when the weight is 1/sqrt(N_EMBD)
    out = np.full((n_vocab, N_EMBD), 0.0, dtype=np.float32)
    out[:, :len(CLASSES)] = LOW
    for c, prefs in preferences(tokens, ids).items():
        for t, v in prefs.items():
            out[t, cls[c]] = v

    w = gguf.GGUFWriter(a.out, "llama")
    w.add_name("kgx-tiny")
    w.add_context_length(N_CTX_TRAIN)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(ids["<s>"])
    w.add_eos_token_id(ids["<|im_end|>"])
    w.add_unk_token_id(ids["<unk>"])
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(False)
    w.add_chat_template(CHAT_TEMPLATE)

    f16 = np.float16
    zero = lambda *shape: np.zeros(shape, dtype=f16)
    w.add_tensor("token_embd.weight", embd.astype(f16))
    for l in range(N_LAYER):
        b = "blk.%d." % l
        w.add_tensor(b + "attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        w.add_tensor(b + "attn_q.weight", zero(N_EMBD, N_EMBD))
        w.add_tensor(b + "attn_k.weight", zero(N_EMBD, N_EMBD))
        w.add_tensor(b + "attn_v.weight", zero(N_EMBD, N_EMBD))
        w.add_tensor(b + "attn_output.weight", zero(N_EMBD, N_EMBD))
        w.add_tensor(b + "ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        w.add_tensor(b + "ffn_gate.weight", zero(N_FF, N_EMBD))
        w.add_tensor(b + "ffn_up.weight", zero(N_FF, N_EMBD))
        w.add_tensor(b + "ffn_down.weight", zero(N_EMBD, N_FF))
    w.add_tensor("output_norm.weight", np.full(N_EMBD, 1.0 / np.sqrt(N_EMBD), dtype=np.float32))
    w.add_tensor("output.weight", out.astype(f16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("kgx-tiny: %d tokens, %d classes" % (n_vocab, len(CLASSES)), file=sys.stderr)


if __name__ == "__main__":
    main()
