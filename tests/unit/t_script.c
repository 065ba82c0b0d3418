/* t_script — the Lua policy host: loading, sandbox, watchdog, hooks, caps, reload. Run from the
 * repository root (policies under tests/unit/policies/). */
#pragma GCC diagnostic ignored "-Wmisleading-indentation"
#include "script.h"
#include "log.h"
#include "tap.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define P "tests/unit/policies/"
#define PLUGINS P "plugins"

static char err[1024];
static char tmpdir[64];

static kgx_script_t *load_opts(const char *path, int timeout_ms, size_t max_memory)
{
    kgx_script_opts_t o = {
        .policy_path = path, .plugins_dir = PLUGINS, .model = "phi-4-mini", .n_ctx = 4096,
        .min_confidence = 0.5, .max_triples = 10, .hook_timeout_ms = timeout_ms, .max_memory = max_memory,
    };
    err[0] = '\0';
    return kgx_script_new(&o, err, sizeof err);
}

static kgx_script_t *load(const char *path) { return load_opts(path, 200, 0); }

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int split_doc(kgx_script_t *s, const char *doc, size_t *n)
{
    kgx_drawer_t d = { .id = "d1", .wing = "w", .room = "r", .document = doc, .document_len = strlen(doc) };
    kgx_ctx_t c = { .n_ctx = 2048, .shrink = 1, .attempt = 2, .endpoint = "http://127.0.0.1:1" };
    size_t dummy;
    err[0] = '\0';
    return kgx_script_split(s, &d, &c, n ? n : &dummy, err, sizeof err);
}

/* Runs request on chunk i and returns the body (static copy) or NULL with err set. */
static const char *request_body(kgx_script_t *s, int job, size_t i)
{
    static char buf[4096];
    kgx_request_t r;
    err[0] = '\0';
    if (kgx_script_request(s, job, i, NULL, &r, err, sizeof err) != 0) return NULL;
    snprintf(buf, sizeof buf, "%s", r.body);
    kgx_request_clear(&r);
    return buf;
}

/* Observations of an api.lua case: chunk i of split(case). */
static const char *api(kgx_script_t *s, const char *name, size_t i)
{
    size_t n;
    int job = split_doc(s, name, &n);
    if (job < 0) { diag("api %s: %s", name, err); return NULL; }
    const char *b = i < n ? request_body(s, job, i) : NULL;
    kgx_script_job_free(s, job);
    return b;
}

static int has(const char *hay, const char *needle)
{
    int r = hay && strstr(hay, needle) != NULL;
    if (!r) diag("'%s' not in '%s'", needle, hay ? hay : "(null)");
    return r;
}

static void write_file(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); exit(2); }
    fwrite(text, 1, len, f);
    fclose(f);
}

static int answer(kgx_script_t *s, int job, size_t i, const char *body, kgx_result_t *r)
{
    err[0] = '\0';
    return kgx_script_answer(s, job, i, body, strlen(body), r, err, sizeof err);
}

static void test_minimal(void)
{
    kgx_script_t *s = load(P "minimal.lua");
    ok(s != NULL, "minimal policy loads: %s", err);
    if (!s) return;
    is_str(kgx_script_name(s), "minimal", "default name is the file basename");
    is_str(kgx_script_version(s), "0", "default version is 0");
    is_str(kgx_script_path(s), P "minimal.lua", "path as given");

    size_t n = 99;
    int job = split_doc(s, "Alice works at Acme.", &n);
    ok(job > 0, "default split gives a job");
    is_int(n, 1, "default split: one chunk");
    is_int(kgx_script_chunk_tokens(s, job, 0), 7, "chunk tokens = ceil(20/3)");
    is_int(kgx_script_chunk_tokens(s, job, 1), -1, "no chunk 1");

    kgx_request_t r;
    int rc = kgx_script_request(s, job, 0, NULL, &r, err, sizeof err);
    is_int(rc, 0, "request ok: %s", err);
    is_str(r.path, "/completion", "request path");
    ok(r.body && has(r.body, "\"prompt\":\"Extract: Alice works at Acme.\""), "table body JSON-encoded");
    is_int(r.body_len, strlen(r.body), "body_len");
    is_int(r.timeout_ms, 0, "no timeout_ms");
    kgx_request_clear(&r);
    ok(kgx_script_request(s, job, 1, NULL, &r, err, sizeof err) == -1 && has(err, "no chunk 1"),
       "request for a missing chunk fails");

    kgx_result_t res;
    rc = answer(s, job, 0, "[{\"subject\":\"Alice\",\"predicate\":\"works_at\",\"object\":\"Acme\",\"confidence\":0.9},"
                           "{\"subject\":\"Acme\",\"predicate\":\"located_in\",\"object\":\"Paris\"}]", &res);
    is_int(rc, 0, "answer ok: %s", err);
    is_int(res.n_triples, 2, "two triples (default accept)");
    is_int(res.n_drops, 0, "no drops");
    if (res.n_triples == 2) {
        is_str(res.triples[0].subject, "Alice", "subject");
        is_str(res.triples[0].predicate, "works_at", "predicate");
        is_str(res.triples[0].object, "Acme", "object");
        ok(res.triples[0].confidence > 0.89 && res.triples[0].confidence < 0.91, "confidence kept");
        ok(res.triples[1].confidence > 0.69 && res.triples[1].confidence < 0.71, "missing confidence -> 0.7");
        ok(res.triples[0].raw_predicate == NULL, "no raw predicate");
    }
    kgx_result_clear(&res);
    rc = answer(s, job, 0, "not json", &res);
    ok(rc == -1 && !strncmp(err, "parse: ", 7), "parse nil, reason -> -1 'parse: ...': %s", err);
    is_int(res.n_triples + res.n_drops, 0, "result empty after a failed answer");
    rc = answer(s, job, 0, "[]", &res);
    ok(rc == 0 && res.n_triples == 0, "empty list: 0 triples");
    kgx_result_clear(&res);
    kgx_script_job_free(s, job);
    kgx_script_job_free(s, job);      /* second free: no-op */
    kgx_script_job_free(s, 0);
    kgx_script_job_free(s, 12345);

    int j2 = kgx_script_job_new(s, &(kgx_drawer_t){ .id = "d2", .document = "x", .document_len = 1 }, err, sizeof err);
    ok(j2 > 0, "job_new");
    is_int(kgx_script_chunk_tokens(s, j2, 0), -1, "job_new has no chunks");
    ok(kgx_script_request(s, j2, 0, NULL, &r, err, sizeof err) == -1, "job_new: request refused");
    rc = answer(s, j2, 0, "[{\"subject\":\"a\",\"predicate\":\"b\",\"object\":\"c\"}]", &res);
    ok(rc == 0 && res.n_triples == 1, "job_new: parse with chunk = nil works");
    kgx_result_clear(&res);
    kgx_script_job_free(s, j2);
    ok(answer(s, j2, 0, "[]", &res) == -1 && has(err, "unknown job"), "freed job is unknown");
    kgx_script_free(s);
    kgx_script_free(NULL);
}

static void test_good(void)
{
    kgx_script_t *s = load(P "good.lua");
    ok(s != NULL, "good policy loads: %s", err);
    if (!s) return;
    is_str(kgx_script_name(s), "good", "name global");
    is_str(kgx_script_version(s), "1.2", "version global");
    kgx_script_set_n_ctx(s, 8192);

    kgx_drawer_t d = { .id = "d9", .wing = "wing1", .room = NULL, .document = "one|two two|three",
                       .document_len = 17, .metadata_json = "{\"k\":\"v\"}" };
    kgx_ctx_t c = { .n_ctx = 2048, .shrink = 1, .attempt = 3, .endpoint = "http://e:1" };
    size_t n = 0;
    int job = kgx_script_split(s, &d, &c, &n, err, sizeof err);
    ok(job > 0 && n == 3, "split into 3 table chunks: %s", err);
    is_int(kgx_script_chunk_tokens(s, job, 1), 3, "tokens from chunk.text ('two two' = 7 bytes)");
    kgx_request_t r;
    int rc = kgx_script_request(s, job, 1, &c, &r, err, sizeof err);
    is_int(rc, 0, "request: %s", err);
    is_str(r.path, "/v1/chat/completions", "path");
    is_int(r.timeout_ms, 5000, "timeout_ms");
    ok(has(r.body, "\"text\":\"TWO TWO\"") && has(r.body, "\"n\":2"), "chunk table passed through, plugin used");
    ok(has(r.body, "\"n_ctx\":2048") && has(r.body, "\"cfg_n_ctx\":8192"), "ctx.n_ctx and kgx.config.n_ctx");
    ok(has(r.body, "\"shrink\":1") && has(r.body, "\"attempt\":3") && has(r.body, "\"endpoint\":\"http:\\/\\/e:1\"")
       && has(r.body, "\"model\":\"phi-4-mini\""), "ctx fields");
    ok(has(r.body, "\"wing\":\"wing1\"") && has(r.body, "\"meta\":\"v\""), "drawer fields and decoded metadata");
    ok(has(r.body, "\"loads\":1"), "plugin loaded once per policy load");
    kgx_request_clear(&r);

    kgx_result_t res;
    rc = answer(s, job, 1,
        "[{\"subject\":\"Alice\",\"predicate\":\"WORKS_AT\",\"object\":\"Acme\",\"confidence\":1.5},"
        "{\"subject\":\"reject\",\"predicate\":\"p\",\"object\":\"o\"},"
        "{\"subject\":\"silent\",\"predicate\":\"p\",\"object\":\"o\"},"
        "{\"subject\":\"number\",\"predicate\":\"p\",\"object\":\"o\"},"
        "{\"subject\":\"long\",\"predicate\":\"p\",\"object\":\"o\"},"
        "7,"
        "{\"subject\":\"Bob\",\"predicate\":\"KNOWS\",\"object\":\"Eve\",\"confidence\":-3},"
        "{\"subject\":\"Bob\",\"predicate\":\"KNOWS\",\"object\":\"Eve\",\"confidence\":\"high\"},"
        "{\"subject\":\"Bob\",\"predicate\":\"KNOWS\",\"object\":\"\"},"
        "{\"subject\":\"Bob\",\"predicate\":\"KNOWS\",\"object\":{\"x\":1}},"
        "{\"subject\":\"Bob\",\"predicate\":\"KNOWS\",\"object\":\"Eve\"}]", &res);
    is_int(rc, 0, "answer: %s", err);
    is_int(res.n_triples, 3, "3 accepted");
    is_int(res.n_drops, 8, "8 dropped");
    if (res.n_triples == 3) {
        is_str(res.triples[0].predicate, "works_at", "accept normalised the predicate");
        is_str(res.triples[0].raw_predicate, "WORKS_AT", "raw_predicate kept");
        ok(res.triples[0].confidence == 1.0, "confidence clamped to 1");
        ok(res.triples[1].confidence == 0.0, "confidence clamped to 0");
        ok(res.triples[2].confidence > 0.69 && res.triples[2].confidence < 0.71, "missing confidence -> 0.7");
    }
    if (res.n_drops == 8) {
        is_str(res.drops[0].reason, "subject is on the deny list", "accept nil, reason");
        is_str(res.drops[0].subject, "reject", "drop carries the raw subject");
        is_str(res.drops[0].predicate, "p", "drop carries the raw predicate");
        is_str(res.drops[1].reason, "rejected by accept", "accept nil without reason");
        is_str(res.drops[2].reason, "accept returned number", "accept returned a number");
        is_str(res.drops[3].reason, "subject longer than 4096 bytes", "long subject dropped");
        is_str(res.drops[4].reason, "triple is not a table", "raw 7 is not a table");
        ok(res.drops[4].subject == NULL && res.drops[4].object == NULL, "non-table drop has NULL fields");
        is_str(res.drops[5].reason, "confidence is a string, not a number", "string confidence dropped");
        is_str(res.drops[6].reason, "object is empty", "empty object dropped");
        is_str(res.drops[7].reason, "object missing or not a string", "table object dropped");
        ok(res.drops[7].object == NULL, "non-string raw object -> NULL");
    }
    kgx_result_clear(&res);
    kgx_script_job_free(s, job);
    kgx_script_free(s);
}

static void test_load_errors(void)
{
    kgx_script_t *s = load(P "no_request.lua");
    ok(s == NULL, "policy without request refused");
    is_str(err, P "no_request.lua: hook 'request' missing", "message names file and hook");

    s = load(P "split_num.lua");
    ok(s == NULL, "split = 3 refused");
    is_str(err, P "split_num.lua: hook 'split' must be a function (got number)", "message names file and hook");

    s = load(P "bad_version.lua");
    ok(s == NULL && has(err, "global 'version' must be a string"), "version = table refused");

    s = load(P "syntax.lua");
    ok(s == NULL && has(err, P "syntax.lua:6:"), "syntax error names file:line: %s", err);

    s = load(P "load_raises.lua");
    ok(s == NULL && has(err, P "load_raises.lua:4:") && has(err, "attempt to index local 'cfg'"),
       "runtime error at load names file:line: %s", err);
    ok(!strchr(err, '\n'), "one line");

    s = load(P "does_not_exist.lua");
    ok(s == NULL && has(err, "does_not_exist.lua"), "missing file: %s", err);

    char path[128];
    snprintf(path, sizeof path, "%s/bc.lua", tmpdir);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "luajit -b %s %s", P "minimal.lua", path);
    if (system(cmd) == 0) {
        s = load(path);
        ok(s == NULL && has(err, "bc.lua: ") && has(err, "wrong mode"), "luajit -b bytecode refused: %s", err);
    } else {
        ok(1, "# SKIP luajit not in PATH");
    }
    write_file(path, "\x1bLJ\x02\x00junk", 9);
    s = load(path);
    ok(s == NULL && has(err, "wrong mode"), "\\x1bLJ bytes refused: %s", err);
    write_file(path, "#!/usr/bin/luajit\n\x1bLJ\x02\x00junk", 27);
    s = load(path);
    ok(s == NULL && has(err, "bc.lua"), "shebang + bytecode refused: %s", err);

    double t0 = now_ms();
    s = load(P "loop_load.lua");
    double dt = now_ms() - t0;
    ok(s == NULL && has(err, "watchdog: load of " P "loop_load.lua exceeded 200 ms"), "loop at load stopped: %s", err);
    ok(dt < 1500, "within the timeout (%.0f ms)", dt);
}

static void test_hooks_fail(void)
{
    kgx_script_t *s = load(P "hooks.lua");
    ok(s != NULL, "hooks policy loads: %s", err);
    if (!s) return;
    size_t n;
    kgx_request_t r;
    kgx_result_t res;

    ok(split_doc(s, "raise", &n) == -1, "split raising fails");
    ok(has(err, "split: " P "hooks.lua:41: split failed on purpose"), "names hook, file and line");
    ok(has(err, "traceback:") && !strchr(err, '\n'), "one line with a traceback");
    int job = split_doc(s, "fine", &n);
    ok(job > 0 && n == 1, "next split works");

    ok(split_doc(s, "error_table", &n) == -1 && has(err, "error object is a table value") && has(err, "hooks.lua:"),
       "error with a table value: %s", err);

    /* request */
    static const struct { const char *chunk, *want; } reqs[] = {
        { "req_raise", "request: " P "hooks.lua:58: request failed on purpose" },
        { "nil", "request: returned nil, expected { path=, body= }" },
        { "no_path", "request: 'path' must be a string starting with '/'" },
        { "rel_path", "request: 'path' must be a string starting with '/'" },
        { "crlf_path", "request: 'path' contains a space or control" },
        { "body_num", "request: 'body' must be a string or a table (got number)" },
        { "body_fn", "request: cannot encode body as JSON" },
        { "huge", "request: body is 104857600 bytes, more than max_body 4194304" },
        { "timeout_bad", "request: 'timeout_ms' must be a non-negative integer" },
    };
    for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
        int j = split_doc(s, reqs[i].chunk, &n);
        err[0] = '\0';
        int rc = kgx_script_request(s, j, 0, NULL, &r, err, sizeof err);
        ok(rc == -1 && has(err, reqs[i].want), "request '%s' refused", reqs[i].chunk);
        ok(r.path == NULL && r.body == NULL, "nothing to free after a failed request");
        const char *b = request_body(s, job, 0);
        ok(b && !strcmp(b, "plain fine"), "next request works");
        kgx_script_job_free(s, j);
    }
    int j = split_doc(s, "req_trap", &n);
    ok(kgx_script_request(s, j, 0, NULL, &r, err, sizeof err) == -1 && has(err, "'path' must be a string"),
       "request result read raw (no hang)");
    kgx_script_job_free(s, j);
    j = split_doc(s, "sparse", &n);
    const char *b = request_body(s, j, 0);
    ok(b && has(b, "\"100\":2"), "sparse array body encodes as an object: %s", b ? b : err);
    kgx_script_job_free(s, j);

    /* split results */
    static const struct { const char *doc, *want; } splits[] = {
        { "number", "split: returned number, expected a list of chunks" },
        { "not_list", "split: returned a table that is not a list" },
        { "bad_chunk", "split: chunk 2 is a number, expected a string or a table" },
        { "many", "split: returned 5000 chunks, more than max_chunks 4096" },
    };
    for (size_t i = 0; i < sizeof splits / sizeof splits[0]; i++) {
        ok(split_doc(s, splits[i].doc, &n) == -1 && has(err, splits[i].want), "split '%s' refused", splits[i].doc);
    }
    j = split_doc(s, "empty", &n);
    ok(j > 0 && n == 0, "split may return no chunks");
    kgx_script_job_free(s, j);

    /* parse */
    static const struct { const char *body, *want; } parses[] = {
        { "raise", "parse: " P "hooks.lua:72: parse failed on purpose" },
        { "nil", "parse: no JSON in the answer" },
        { "bare_nil", "parse: returned nil" },
        { "string", "parse: returned string, expected a list of triples" },
        { "single", "parse: returned a table that is not a list" },
        { "many", "parse: returned 1001 triples, more than max_triples_raw 1000" },
    };
    for (size_t i = 0; i < sizeof parses / sizeof parses[0]; i++) {
        ok(answer(s, job, 0, parses[i].body, &res) == -1 && has(err, parses[i].want), "parse '%s' fails", parses[i].body);
        ok(answer(s, job, 0, "[{\"subject\":\"a\",\"predicate\":\"b\",\"object\":\"c\"}]", &res) == 0
           && res.n_triples == 1, "next answer works");
        kgx_result_clear(&res);
    }
    ok(answer(s, job, 0, "bad_reason", &res) == -1, "parse nil, reason");
    is_str(err, "parse: bad ? byte | second line", "reason folded to one valid UTF-8 line");
    ok(answer(s, job, 0, "chunk", &res) == 0 && res.n_triples == 1 && !strcmp(res.triples[0].subject, "fine"),
       "parse gets the chunk");
    kgx_result_clear(&res);
    ok(answer(s, job, 5, "chunk", &res) == 0 && res.n_triples == 1 && !strcmp(res.triples[0].subject, "nil"),
       "chunk beyond the list is nil");
    kgx_result_clear(&res);

    /* accept */
    ok(answer(s, job, 0, "[{\"subject\":\"raise\",\"predicate\":\"b\",\"object\":\"c\"}]", &res) == -1
       && has(err, "accept: " P "hooks.lua:84: accept failed on purpose"), "accept raising fails the answer");
    ok(answer(s, job, 0, "[{\"subject\":\"a\",\"predicate\":\"b\",\"object\":\"c\"}]", &res) == 0, "next works");
    kgx_result_clear(&res);
    ok(answer(s, job, 0, "[{\"subject\":\"a\\u0000b\",\"predicate\":\"b\",\"object\":\"c\"}]", &res) == 0
       && res.n_drops == 1 && !strcmp(res.drops[0].reason, "subject is not valid UTF-8")
       && !strcmp(res.drops[0].subject, "a\xEF\xBF\xBD" "b"), "NUL in subject dropped, raw sanitized");
    kgx_result_clear(&res);

    /* tables with a looping __index are read raw */
    int jt = split_doc(s, "trap", &n);
    ok(jt > 0 && n == 1, "split returning a trapped chunk table");
    is_int(kgx_script_chunk_tokens(s, jt, 0), -1, "chunk.text read raw (no hang)");
    kgx_script_job_free(s, jt);
    jt = split_doc(s, "fine", &n);
    kgx_script_job_free(s, jt);
    jt = split_doc(s, "trap", &n);
    kgx_script_job_free(s, jt);
    ok(answer(s, job, 0, "[{\"subject\":\"trap\",\"predicate\":\"b\",\"object\":\"c\"}]", &res) == 0
       && res.n_drops == 1 && !strcmp(res.drops[0].reason, "subject missing or not a string"),
       "accept result read raw (no hang)");
    kgx_result_clear(&res);

    kgx_script_job_free(s, job);
    kgx_script_free(s);
}

static void test_watchdog(void)
{
    kgx_script_t *s = load(P "hooks.lua");
    if (!s) { ok(0, "load: %s", err); return; }
    size_t n;
    kgx_result_t res;
    static const char *const loops[] = { "loop", "pcall_loop", "xpcall_loop" };
    for (size_t i = 0; i < 3; i++) {
        double t0 = now_ms();
        int rc = split_doc(s, loops[i], &n);
        double dt = now_ms() - t0;
        ok(rc == -1 && has(err, "watchdog: hook 'split' exceeded 200 ms"), "split %s stopped: %s", loops[i], err);
        ok(has(err, P "hooks.lua:"), "watchdog message names file:line");
        ok(dt >= 150 && dt < 1500, "after ~200 ms (%.0f ms)", dt);
        int j = split_doc(s, "fine", &n);
        ok(j > 0, "state usable after");
        kgx_script_job_free(s, j);
    }
    int job = split_doc(s, "fine", &n);
    double t0 = now_ms();
    ok(answer(s, job, 0, "loop", &res) == -1 && has(err, "parse: ") && has(err, "watchdog: hook 'parse' exceeded 200 ms"),
       "parse loop stopped: %s", err);
    ok(now_ms() - t0 < 1500, "in time");
    ok(answer(s, job, 0, "[{\"subject\":\"loop\",\"predicate\":\"b\",\"object\":\"c\"}]", &res) == -1
       && has(err, "watchdog: hook 'accept' exceeded"), "accept loop stopped");
    ok(answer(s, job, 0, "[{\"subject\":\"a\",\"predicate\":\"b\",\"object\":\"c\"}]", &res) == 0 && res.n_triples == 1,
       "usable after");
    kgx_result_clear(&res);
    kgx_script_job_free(s, job);
    kgx_script_free(s);

    /* memory: 64 MiB ceiling, generous time */
    s = load_opts(P "hooks.lua", 10000, (size_t)64 << 20);
    if (!s) { ok(0, "load: %s", err); return; }
    t0 = now_ms();
    ok(split_doc(s, "hog", &n) == -1 && has(err, "not enough memory: hook 'split' exceeded the memory limit (64 MiB)"),
       "memory hog stopped: %s", err);
    diag("hog stopped after %.0f ms", now_ms() - t0);
    ok(split_doc(s, "rep_huge", &n) == -1 && has(err, "exceeded the memory limit"), "string.rep 1e9 refused: %s", err);
    job = split_doc(s, "rep_caught", &n);
    ok(job > 0 && n == 1, "a 200 MiB string.rep under pcall returns: %s", err);
    if (job > 0) {
        is_str(request_body(s, job, 0), "plain false not enough memory", "... false, \"not enough memory\" (catchable)");
        kgx_script_job_free(s, job);
    }
    job = split_doc(s, "huge", &n);
    ok(job > 0, "usable after a memory error");
    kgx_request_t r;
    ok(kgx_script_request(s, job, 0, NULL, &r, err, sizeof err) == -1, "100 MB body refused: %s", err);
    const char *b = request_body(s, job, 0);
    ok(b == NULL, "still refused (deterministic)");
    kgx_script_job_free(s, job);
    job = split_doc(s, "fine", &n);
    b = request_body(s, job, 0);
    ok(b && !strcmp(b, "plain fine"), "usable after");
    kgx_script_job_free(s, job);
    kgx_script_free(s);
}

static void test_sandbox(void)
{
    kgx_script_t *s = load(P "hooks.lua");
    if (!s) { ok(0, "load: %s", err); return; }
    static const struct { const char *probe, *want; } probes[] = {
        { "os", "attempt to index global 'os' (a nil value)" },
        { "io", "attempt to index global 'io' (a nil value)" },
        { "ffi", "module 'ffi' not found" },
        { "load", "attempt to call global 'load' (a nil value)" },
        { "loadstring", "attempt to call global 'loadstring' (a nil value)" },
        { "dofile", "attempt to call global 'dofile' (a nil value)" },
        { "dump", "attempt to call field 'dump' (a nil value)" },
        { "method_dump", "attempt to call method 'dump' (a nil value)" },
        { "debug", "attempt to index global 'debug' (a nil value)" },
        { "getfenv", "attempt to call global 'getfenv' (a nil value)" },
        { "package", "attempt to index global 'package' (a nil value)" },
        { "jit", "attempt to index global 'jit' (a nil value)" },
        { "coroutine", "attempt to index global 'coroutine' (a nil value)" },
        { "collectgarbage", "attempt to call global 'collectgarbage' (a nil value)" },
        { "newproxy", "attempt to call global 'newproxy' (a nil value)" },
        { "passwd", "invalid module name '../../etc/passwd'" },
        { "cjson", "module 'cjson' not found: no file '" PLUGINS "/cjson.lua'" },
        { "missing", "module 'nope' not found" },
        { "plugin_raises", PLUGINS "/raises.lua:3: attempt to index local 'x'" },
        { "plugin_loop", "require: loop while loading module 'loop'" },
        { "string_mt", "attempt to index a boolean value" },
        { "recurse", "stack overflow" },
        { "method_rep", "exceeded the memory limit" },
    };
    size_t n;
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        int j = split_doc(s, probes[i].probe, &n);
        ok(j == -1 && has(err, probes[i].want), "sandbox: %s refused", probes[i].probe);
        if (j > 0) kgx_script_job_free(s, j);
    }
    ok(split_doc(s, "plugin_raises", &n) == -1 && has(err, "raises.lua:3:"), "failed plugin is not cached as loaded");
    int j = split_doc(s, "globals", &n);
    const char *b = j > 0 ? request_body(s, j, 0) : NULL;
    is_str(b, "plain _G assert bit error getmetatable ipairs kgx math next pairs pcall print rawequal rawget "
              "rawset require select setmetatable string table tonumber tostring type unpack xpcall",
           "exactly the whitelisted globals");
    kgx_script_job_free(s, j);
    j = split_doc(s, "pcall_ok", &n);
    b = j > 0 ? request_body(s, j, 0) : NULL;
    is_str(b, "plain false caught", "sandbox pcall catches ordinary errors");
    kgx_script_job_free(s, j);
    j = split_doc(s, "G", &n);
    b = j > 0 ? request_body(s, j, 0) : NULL;
    is_str(b, "plain falsetrue", "_G is the env");
    kgx_script_job_free(s, j);
    kgx_script_free(s);
}

static void test_api(void)
{
    kgx_script_t *s = load(P "api.lua");
    ok(s != NULL, "api policy loads: %s", err);
    if (!s) return;
    is_str(kgx_script_version(s), "7", "version");
    is_str(api(s, "json_roundtrip", 0), "1.5", "json number");
    is_str(api(s, "json_roundtrip", 1), "3", "json array");
    is_str(api(s, "json_roundtrip", 2), "q\"uo\\te \xe2\x82\xac", "json string escapes and UTF-8");
    is_str(api(s, "json_roundtrip", 3), "true", "json null round trip");
    is_str(api(s, "json_roundtrip", 5), "[1,2,3]", "encode list");
    is_str(api(s, "json_roundtrip", 6), "\"x\"", "encode string");
    is_str(api(s, "json_roundtrip", 7), "0.1", "encode 0.1 with 14 digits");
    is_str(api(s, "json_bad", 0), "nil", "bad JSON -> nil");
    is_str(api(s, "json_bad", 1), "string", "... and an error string");
    is_str(api(s, "json_deep", 0), "nil", "100000-deep nesting -> nil");
    is_str(api(s, "json_deep", 1), "string", "... with an error");
    is_str(api(s, "json_deep", 2), "table", "500-deep decodes");
    is_str(api(s, "json_encode_raises", 0), "false", "encode of a function raises");
    const char *sp = api(s, "json_sparse", 0);
    ok(sp && sp[0] == '{' && has(sp, "\"1\":\"a\"") && has(sp, "\"1000\":\"b\""), "sparse array as object");
    is_str(api(s, "tokens", 0), "0", "tokens('')");
    is_str(api(s, "tokens", 1), "1", "tokens('a')");
    is_str(api(s, "tokens", 2), "1", "tokens('abc')");
    is_str(api(s, "tokens", 3), "2", "tokens('abcd')");
    is_str(api(s, "tokens", 4), "1000", "tokens(3000 bytes)");
    is_str(api(s, "utf8", 0), "111110000000011", "utf8_valid cases");
    is_str(api(s, "config", 0), "phi-4-mini", "config.model");
    is_str(api(s, "config", 1), "4096", "config.n_ctx");
    is_str(api(s, "config", 2), "0.5", "config.min_confidence");
    is_str(api(s, "config", 3), "10", "config.max_triples");
    is_str(api(s, "config", 4), "tests/unit/policies", "config.policy_dir");
    is_str(api(s, "config", 5), PLUGINS, "config.plugins_dir");
    kgx_script_set_n_ctx(s, 32768);
    is_str(api(s, "config", 1), "32768", "set_n_ctx updates kgx.config");
    is_str(api(s, "log", 0), "false", "kgx.log with a bad level raises");
    ok(has(api(s, "log", 1), "unknown level 'loud'"), "... naming it");

    kgx_drawer_t d = { .id = "id1", .wing = "w1", .document = "drawer", .document_len = 6, .metadata_json = "{bad" };
    size_t n;
    int job = kgx_script_split(s, &d, NULL, &n, err, sizeof err);
    is_str(request_body(s, job, 0), "id1", "drawer.id");
    is_str(request_body(s, job, 1), "w1", "drawer.wing");
    is_str(request_body(s, job, 2), "nil", "drawer.room nil");
    is_str(request_body(s, job, 3), "nil", "bad metadata JSON -> nil");
    kgx_script_job_free(s, job);
    kgx_script_free(s);

    /* default plugins dir: sibling of the policy dir */
    kgx_script_opts_t o = { .policy_path = P "api.lua" };
    s = kgx_script_new(&o, err, sizeof err);
    ok(s != NULL, "defaults load");
    if (s) {
        is_str(api(s, "config", 5), "tests/unit/plugins", "default plugins_dir");
        is_str(api(s, "config", 1), "0", "n_ctx unknown");
        kgx_script_free(s);
    }
}

static const char policy_a[] =
    "name = 'A'\nversion = '1'\nlocal c = require 'counter'\nlocal loads = c.bump()\n"
    "function request(chunk) return { path = '/a', body = 'A ' .. chunk .. ' ' .. loads } end\n"
    "function parse() return {} end\n";
static const char policy_b[] =
    "name = 'B'\nversion = '2'\nlocal c = require 'counter'\nlocal loads = c.bump()\n"
    "function request(chunk) return { path = '/b', body = 'B ' .. chunk .. ' ' .. loads } end\n"
    "function parse() return {} end\n";
static const char policy_broken[] = "name = 'broken'\nfunction request(\n";
static const char policy_nohook[] = "name = 'nohook'\nfunction request() return {} end\n";

static void test_reload(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/reload.lua", tmpdir);
    write_file(path, policy_a, sizeof policy_a - 1);
    kgx_script_t *s = load(path);
    ok(s != NULL, "policy A loads: %s", err);
    if (!s) return;
    size_t n;
    int job = split_doc(s, "x", &n);
    is_str(request_body(s, job, 0), "A x 1", "A answers; plugin loaded once");

    is_int(kgx_script_reload(s, err, sizeof err), 0, "reload of the same file: %s", err);
    is_str(request_body(s, job, 0), "A x 1", "fresh require cache on reload (counter restarts)");

    write_file(path, policy_broken, sizeof policy_broken - 1);
    ok(kgx_script_reload(s, err, sizeof err) == -1 && has(err, "reload.lua:3:"), "broken reload fails: %s", err);
    is_str(kgx_script_name(s), "A", "old name kept");
    is_str(request_body(s, job, 0), "A x 1", "old policy still answers");

    write_file(path, policy_nohook, sizeof policy_nohook - 1);
    ok(kgx_script_reload(s, err, sizeof err) == -1 && has(err, "hook 'parse' missing"), "reload without parse fails");
    is_str(kgx_script_name(s), "A", "old name kept");

    write_file(path, policy_b, sizeof policy_b - 1);
    is_int(kgx_script_reload(s, err, sizeof err), 0, "reload with B: %s", err);
    is_str(kgx_script_name(s), "B", "new name");
    is_str(kgx_script_version(s), "2", "new version");
    is_str(request_body(s, job, 0), "B x 1", "job from before the reload runs the new hooks");
    kgx_script_job_free(s, job);
    kgx_script_free(s);
    unlink(path);
}

/* economy (issue 14): the skip hook — a policy's own, `skip = false`, errors, and the default from
 * plugins/text.lua (none when the plugins directory has no text.lua). */
static const char policy_skip[] =
    "function split(d) return { 'keep me', 'SKIP this', d.document } end\n"
    "function skip(c, d) if c:find('SKIP') then return 'marked ' .. d.id end end\n"
    "function request(c) return { path = '/x', body = c } end\n"
    "function parse() return {} end\n";
static const char policy_skip_raises[] =
    "function skip(c) error('no way') end\n"
    "function request(c) return { path = '/x', body = c } end\nfunction parse() return {} end\n";
static const char policy_skip_type[] =
    "skip = 42\nfunction request(c) return { path = '/x', body = c } end\nfunction parse() return {} end\n";
static const char policy_skip_off[] =
    "skip = false\nfunction split(d) return { '...', d.document } end\n"
    "function request(c) return { path = '/x', body = c } end\nfunction parse() return {} end\n";
static const char policy_skip_default[] =
    "function split(d) return { '...', '<br/> 42', d.document, '李雷用' } end\n"
    "function request(c) return { path = '/x', body = c } end\nfunction parse() return {} end\n";

static kgx_script_t *load_skip(const char *text, size_t len, const char *plugins)
{
    char path[128];
    snprintf(path, sizeof path, "%s/skip.lua", tmpdir);
    write_file(path, text, len);
    kgx_script_opts_t o = { .policy_path = path, .plugins_dir = plugins, .model = "m", .n_ctx = 4096,
                            .min_confidence = 0.5, .max_triples = 10, .hook_timeout_ms = 500 };
    err[0] = '\0';
    return kgx_script_new(&o, err, sizeof err);
}

static void test_skip(void)
{
    size_t n;
    kgx_script_t *s = load_skip(policy_skip, sizeof policy_skip - 1, PLUGINS);
    ok(s != NULL, "skip policy loads: %s", err);
    if (s) {
        int job = split_doc(s, "the drawer", &n);
        is_int(n, 2, "a chunk the skip hook marks leaves the list");
        is_int(kgx_script_skipped_last(s), 1, "and is counted");
        is_str(request_body(s, job, 0), "keep me", "the others keep their order (1)");
        is_str(request_body(s, job, 1), "the drawer", "the others keep their order (2)");
        kgx_script_job_free(s, job);
        kgx_script_free(s);
    }
    s = load_skip(policy_skip_raises, sizeof policy_skip_raises - 1, PLUGINS);
    ok(s != NULL, "raising skip policy loads: %s", err);
    if (s) {
        ok(split_doc(s, "x", &n) < 0 && has(err, "skip: ") && has(err, "no way"), "a raising skip fails the split: %s", err);
        kgx_script_free(s);
    }
    s = load_skip(policy_skip_type, sizeof policy_skip_type - 1, PLUGINS);
    ok(s == NULL && has(err, "hook 'skip' must be a function"), "skip = 42 is a load error: %s", err);
    kgx_script_free(s);
    s = load_skip(policy_skip_off, sizeof policy_skip_off - 1, "plugins");
    ok(s != NULL, "skip = false loads: %s", err);
    if (s) {
        int job = split_doc(s, "x", &n);
        ok(n == 2 && kgx_script_skipped_last(s) == 0, "skip = false: every chunk is asked, even '...'");
        kgx_script_job_free(s, job);
        kgx_script_free(s);
    }
    s = load_skip(policy_skip_default, sizeof policy_skip_default - 1, "plugins");
    ok(s != NULL, "no skip hook, plugins/ with text.lua: %s", err);
    if (s) {
        int job = split_doc(s, "Bob uses Redis.", &n);
        is_int(n, 2, "the default skips punctuation and markup, keeps text of any script");
        is_int(kgx_script_skipped_last(s), 2, "two skipped");
        is_str(request_body(s, job, 0), "Bob uses Redis.", "first kept: the drawer");
        kgx_script_job_free(s, job);
        kgx_script_free(s);
    }
    s = load_skip(policy_skip_default, sizeof policy_skip_default - 1, PLUGINS);
    ok(s != NULL, "no skip hook, no text.lua: %s", err);
    if (s) {
        int job = split_doc(s, "x", &n);
        ok(n == 4 && kgx_script_skipped_last(s) == 0, "no text plugin: no default skipping");
        kgx_script_job_free(s, job);
        kgx_script_free(s);
    }
}

/* drawer.document is read on access: there during the call, not a plain field, gone from a table
 * kept past its call; a large one read is collected when kgx_script_call_done runs. */
static const char policy_doc[] =
    "local kept\n"
    "function split(d) kept = d return { 'c' } end\n"
    "function request(c, d) if c == 'stale' then return { path = '/x', body = kept.document } end\n"
    "  return { path = '/x', body = d.document .. '|' .. tostring(rawget(d, 'document')) } end\n"
    "function parse() return {} end\n";

static void test_lazy_document(void)
{
    kgx_script_t *s = load_skip(policy_doc, sizeof policy_doc - 1, PLUGINS);
    ok(s != NULL, "document policy loads: %s", err);
    if (!s) return;
    kgx_drawer_t d = { .id = "d", .document = "the text", .document_len = 8 };
    kgx_chunk_t *cs = NULL;
    size_t n = 0;
    kgx_hook_t failed;
    is_int(kgx_script_run_split(s, &d, NULL, &cs, &n, &failed, err, sizeof err), 0, "split: %s", err);
    kgx_chunks_free(cs, n);
    kgx_script_call_done(s);
    kgx_chunk_t c = { .text = "c", .len = 1, .tokens = 1 };
    kgx_request_t rq;
    is_int(kgx_script_run_request(s, &d, &c, NULL, &rq, &failed, err, sizeof err), 0, "request: %s", err);
    is_str(rq.body, "the text|nil", "drawer.document read on access; rawget does not see it");
    kgx_request_clear(&rq);
    kgx_script_call_done(s);
    kgx_chunk_t st = { .text = "stale", .len = 5, .tokens = 2 };
    ok(kgx_script_run_request(s, &d, &st, NULL, &rq, &failed, err, sizeof err) != 0
       && has(err, "valid only during the hook call"), "a drawer table kept past its call has no document: %s", err);
    kgx_request_clear(&rq);
    kgx_script_call_done(s);
    kgx_script_free(s);
}

/* economy (issue 14): a table body is encoded with sorted keys, so the same request has the same
 * bytes whatever order its fields were set in and whichever state encodes it (answer reuse keys on
 * them); arrays keep their order, numbers and strings encode as lua-cjson does. */
static const char policy_canon[] =
    "name = 'canon'\n"
    "local order = 0\n"
    "function request(chunk, drawer, ctx)\n"
    "  order = order + 1\n"
    "  local b = {}\n"
    "  local keys = { 'zeta', 'alpha', 'mid', 'n_predict', 'nested', 'list', 'empty', 'B', 'a_b' }\n"
    "  local vals = { zeta = 'z', alpha = true, mid = 0.5, n_predict = 128, empty = {},\n"
    "                 nested = { y = 1, x = { 'q', 'p' }, ['1x'] = 'one' }, list = { 3, 1, 2 }, B = 'upper', a_b = chunk }\n"
    "  for i = 1, #keys do local k = keys[(i + order) % #keys + 1]; b[k] = vals[k] end\n"
    "  if chunk == 'leaves' then\n"
    "    b = { 'a/b', 'q\"uote', 'back\\\\slash', '\\1\\31\\127', 'tab\\tnl\\nff\\f', '\\195\\169 ok', 0.1, 1e300,\n"
    "          123456789012345678, 1/3, -5, true, false, kgx.json.null, {}, { [2.5] = 1, [3] = 'x' } }\n"
    "  elseif chunk == 'fn' then b.f = print\n"
    "  elseif chunk == 'nan' then b.n = 0/0\n"
    "  end\n"
    "  return { path = '/completion', body = b }\n"
    "end\n"
    "function parse(body) return {} end\n";

static void test_canonical_body(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/canon.lua", tmpdir);
    write_file(path, policy_canon, sizeof policy_canon - 1);
    kgx_script_t *s1 = load(path), *s2 = load(path);
    ok(s1 && s2, "canon policy loads twice: %s", err);
    if (!s1 || !s2) return;
    static const char want[] = "{\"B\":\"upper\",\"a_b\":\"Alice.\",\"alpha\":true,\"empty\":{},\"list\":[3,1,2],"
                               "\"mid\":0.5,\"n_predict\":128,\"nested\":{\"1x\":\"one\",\"x\":[\"q\",\"p\"],\"y\":1},"
                               "\"zeta\":\"z\"}";
    int j1 = split_doc(s1, "Alice.", NULL), j2 = split_doc(s2, "Alice.", NULL);
    char first[1024];
    const char *b = request_body(s1, j1, 0);
    snprintf(first, sizeof first, "%s", b ? b : "");
    is_str(first, want, "keys sorted bytewise, arrays in order, nested objects sorted");
    int same = 1;
    for (int i = 0; i < 12; i++) {       /* fields set in another order each time, in two states */
        const char *x = request_body(i % 2 ? s1 : s2, i % 2 ? j1 : j2, 0);
        if (!x || strcmp(x, first)) { same = 0; diag("differs: %s", x ? x : err); break; }
    }
    ok(same, "the same request has the same bytes in every order and state");
    /* leaves: lua-cjson's own bytes (what luajit + lua-cjson print for the same array with these
     * settings: '/' escaped, control bytes and DEL as \\u00XX, numbers %.14g, cjson.null, {} ) */
    int jl = split_doc(s1, "leaves", NULL);
    b = request_body(s1, jl, 0);
    is_str(b ? b : err, "[\"a\\/b\",\"q\\\"uote\",\"back\\\\slash\",\"\\u0001\\u001f\\u007f\",\"tab\\tnl\\nff\\f\","
           "\"\xc3\xa9 ok\",0.1,1e+300,1.2345678901235e+17,0.33333333333333,-5,true,false,null,{},"
           "{\"2.5\":1,\"3\":\"x\"}]", "leaves and number keys get lua-cjson's bytes");
    int jf = split_doc(s1, "fn", NULL), jn = split_doc(s1, "nan", NULL);
    char e2[512];
    kgx_request_t rq;
    ok(kgx_script_request(s1, jf, 0, NULL, &rq, e2, sizeof e2) == -1
       && has(e2, "request: cannot encode body as JSON: Cannot serialise function: type not supported"),
       "a function in the body is refused: %s", e2);
    ok(kgx_script_request(s1, jn, 0, NULL, &rq, e2, sizeof e2) == -1 && has(e2, "must not be NaN or Inf"),
       "NaN in the body is refused: %s", e2);
    kgx_script_free(s1);
    kgx_script_free(s2);
}

int main(void)
{
    kgx_log_init();
    kgx_log_set_level(KGX_LOG_WARN);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/kgx_t_script.XXXXXX");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 2; }
    test_minimal();
    test_good();
    test_load_errors();
    test_hooks_fail();
    test_watchdog();
    test_sandbox();
    test_api();
    test_reload();
    test_skip();
    test_lazy_document();
    test_canonical_body();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) diag("could not remove %s", tmpdir);
    return done_testing();
}
