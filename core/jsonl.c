/* jsonl — see jsonl.h. A small strict reader for flat objects of strings; nested values are skipped. */
#include "jsonl.h"
#include "buf.h"

#include <stdlib.h>
#include <string.h>

typedef struct { const char *p, *end; } cur_t;

static void ws(cur_t *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\r' || *c->p == '\n')) c->p++;
}

static int hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char ch = p[i];
        v <<= 4;
        if (ch >= '0' && ch <= '9') v |= (unsigned)(ch - '0');
        else if (ch >= 'a' && ch <= 'f') v |= (unsigned)(ch - 'a' + 10);
        else if (ch >= 'A' && ch <= 'F') v |= (unsigned)(ch - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

static void put_utf8(kgx_buf_t *b, unsigned cp)
{
    char s[4];
    size_t n;
    if (cp < 0x80) { s[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { s[0] = (char)(0xC0 | (cp >> 6)); s[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) {
        s[0] = (char)(0xE0 | (cp >> 12)); s[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        s[2] = (char)(0x80 | (cp & 0x3F)); n = 3;
    } else {
        s[0] = (char)(0xF0 | (cp >> 18)); s[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        s[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); s[3] = (char)(0x80 | (cp & 0x3F)); n = 4;
    }
    kgx_buf_add(b, s, n);
}

/* At '"': parses a string into b (when b is non-NULL). */
static int str(cur_t *c, kgx_buf_t *b)
{
    if (c->p >= c->end || *c->p != '"') return -1;
    c->p++;
    while (c->p < c->end) {
        char ch = *c->p++;
        if (ch == '"') return 0;
        if ((unsigned char)ch < 0x20) return -1;
        if (ch != '\\') {
            if (b) kgx_buf_add(b, &ch, 1);
            continue;
        }
        if (c->p >= c->end) return -1;
        char e = *c->p++;
        const char *simple = "\"\\/bfnrt", *repl = "\"\\/\b\f\n\r\t";
        const char *k = strchr(simple, e);
        if (k && e) {
            if (b) kgx_buf_add(b, &repl[k - simple], 1);
        } else if (e == 'u') {
            unsigned cp, lo;
            if (c->end - c->p < 4 || hex4(c->p, &cp)) return -1;
            c->p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF && c->end - c->p >= 6 && c->p[0] == '\\' && c->p[1] == 'u'
                && !hex4(c->p + 2, &lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                c->p += 6;
            } else if (cp >= 0xD800 && cp <= 0xDFFF) {
                cp = 0xFFFD;
            }
            if (b) put_utf8(b, cp);
        } else {
            return -1;
        }
    }
    return -1;
}

/* Skips any JSON value (iteratively for nesting). */
static int skip(cur_t *c)
{
    ws(c);
    if (c->p >= c->end) return -1;
    if (*c->p == '"') return str(c, NULL);
    if (*c->p != '{' && *c->p != '[') {
        while (c->p < c->end && !strchr(",}] \t\r\n", *c->p)) c->p++;
        return 0;
    }
    long depth = 0;
    while (c->p < c->end) {
        char ch = *c->p;
        if (ch == '"') { if (str(c, NULL)) return -1; continue; }
        if (ch == '{' || ch == '[') depth++;
        else if (ch == '}' || ch == ']') { if (--depth == 0) { c->p++; return 0; } }
        c->p++;
    }
    return -1;
}

int kgx_jsonl_parse(const char *line, size_t len, long seq, char **id, char **wing, char **room,
                    char **doc, size_t *doc_len, char *err, size_t errlen)
{
    cur_t c = { line, line + len };
    *id = *wing = *room = *doc = NULL;
    *doc_len = 0;
    kgx_buf_t key = { 0 }, val = { 0 };
    ws(&c);
    if (c.p >= c.end || *c.p != '{') { snprintf(err, errlen, "expected a JSON object"); goto bad; }
    c.p++;
    ws(&c);
    if (c.p < c.end && *c.p == '}') c.p++;
    else for (;;) {
        ws(&c);
        kgx_buf_reset(&key);
        if (str(&c, &key)) { snprintf(err, errlen, "bad member name"); goto bad; }
        ws(&c);
        if (c.p >= c.end || *c.p != ':') { snprintf(err, errlen, "expected ':'"); goto bad; }
        c.p++;
        ws(&c);
        char **slot = NULL;
        const char *k = key.p ? key.p : "";
        if (!strcmp(k, "id")) slot = id;
        else if (!strcmp(k, "document") || !strcmp(k, "text")) slot = doc;
        else if (!strcmp(k, "wing")) slot = wing;
        else if (!strcmp(k, "room")) slot = room;
        if (slot && c.p < c.end && *c.p == '"') {
            kgx_buf_reset(&val);
            if (str(&c, &val)) { snprintf(err, errlen, "bad string in \"%s\"", k); goto bad; }
            free(*slot);
            size_t n;
            *slot = kgx_buf_steal(&val, &n);
            if (slot == doc) *doc_len = n;
        } else if (slot == id && c.p < c.end && (*c.p == '-' || (*c.p >= '0' && *c.p <= '9'))) {
            const char *s = c.p;
            if (skip(&c)) goto bad;
            free(*id);
            *id = strndup(s, (size_t)(c.p - s));
        } else if (skip(&c)) {
            snprintf(err, errlen, "bad value for \"%s\"", k);
            goto bad;
        }
        ws(&c);
        if (c.p < c.end && *c.p == ',') { c.p++; continue; }
        if (c.p < c.end && *c.p == '}') { c.p++; break; }
        snprintf(err, errlen, "expected ',' or '}'");
        goto bad;
    }
    ws(&c);
    if (c.p != c.end) { snprintf(err, errlen, "trailing text after the object"); goto bad; }
    if (!*doc) { snprintf(err, errlen, "no \"document\" string"); goto bad; }
    if (!*id) {
        char b[32];
        snprintf(b, sizeof b, "line-%ld", seq);
        *id = strdup(b);
    }
    kgx_buf_free(&key);
    kgx_buf_free(&val);
    return 1;
bad:
    kgx_buf_free(&key);
    kgx_buf_free(&val);
    free(*id); free(*wing); free(*room); free(*doc);
    *id = *wing = *room = *doc = NULL;
    return -1;
}

int kgx_jsonl_next(FILE *f, long seq, char **id, char **wing, char **room, char **doc, size_t *doc_len,
                   char *err, size_t errlen)
{
    static FILE *plain_for;    /* the stream found to be plain text (one drawer), already read */
    if (plain_for == f) return 0;
    if (seq == 1) {
        int ch;
        while ((ch = fgetc(f)) != EOF && (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n')) {}
        if (ch == EOF) return 0;
        ungetc(ch, f);
        if (ch != '{') {
            kgx_buf_t b = { 0 };
            char tmp[65536];
            size_t n;
            while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) kgx_buf_add(&b, tmp, n);
            *doc = kgx_buf_steal(&b, doc_len);
            *id = strdup("text-1");
            *wing = *room = NULL;
            plain_for = f;
            return 1;
        }
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        size_t k = (size_t)n;
        while (k && (line[k - 1] == '\n' || line[k - 1] == '\r' || line[k - 1] == ' ')) k--;
        if (!k) continue;
        int rc = kgx_jsonl_parse(line, k, seq, id, wing, room, doc, doc_len, err, errlen);
        free(line);
        return rc;
    }
    free(line);
    return 0;
}
