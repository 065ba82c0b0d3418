/* t_config — the command line and environment contract (flags win over env, one-line errors, rc 2),
 * endpoint URL normalisation, and the small pure helpers of the core: JSON escaping, the --dry-run
 * reader, /props parsing. */
#include "buf.h"
#include "config.h"
#include "endpoint.h"
#include "jsonl.h"
#include "names.h"
#include "tap.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static int parse(kgx_config_t *c, char *err, const char *a0, ...)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = (char *)"kgx-run";
    va_list ap;
    va_start(ap, a0);
    for (const char *a = a0; a && argc < 31; a = va_arg(ap, const char *)) argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    return kgx_config_parse(c, argc, argv, err, 512);
}



static void clear_env(void)
{
    const char *vars[] = { "MEMPALACE_POSTGRES_DSN", "MEMPALACE_KG_LLM_ENDPOINT", "MEMPALACE_KG_LLM_MODEL",
                           "KGX_POLICY", "KGX_API_KEY", "MEMPALACE_KG_CLAIM_LEASE_SECONDS",
                           "MEMPALACE_KG_MIN_CONFIDENCE", "MEMPALACE_KG_MAX_TRIPLES_PER_DRAWER", NULL };
    for (int i = 0; vars[i]; i++) unsetenv(vars[i]);
}

int main(void)
{
    kgx_config_t c;
    char err[512];
    clear_env();

    /* the seed's message and rc without a DSN */
    is_int(parse(&c, err, NULL), 2, "no DSN is a usage error");
    is_str(err, "error: --dsn is required (or set MEMPALACE_POSTGRES_DSN)", "the seed's exact message");
    kgx_config_free(&c);

    /* defaults of the contract */
    is_int(parse(&c, err, "--dsn", "postgresql://x/y", NULL), 0, "a DSN is enough");
    is_int(c.max_in_flight, 8, "--workers (max_in_flight) 8");
    is_int(c.batch_size, 20, "batch 20");
    ok(c.poll_interval == 30, "poll 30");
    ok(c.lease_seconds == 900, "lease 900");
    is_int(c.max_attempts, 5, "attempts 5");
    ok(c.request_timeout == 120, "timeout 120");
    is_str(c.graph, "mempalace_kg", "graph");
    is_str(c.model, "phi-4-mini", "model");
    is_str(c.endpoints[0], "http://localhost:11436", "endpoint");
    ok(c.min_confidence == 0.5, "min confidence 0.5");
    is_int(c.max_triples, 10, "max triples 10");
    ok(c.progress_interval == 60, "progress 60");
    is_int(c.mode, KGX_MODE_DAEMON, "daemon by default");
    ok(c.memory_budget == (size_t)64 << 20, "memory budget 64 MiB by default");
    kgx_config_free(&c);

    /* --memory-budget: bytes with binary suffixes, bounded */
    {
        struct { const char *v; size_t want; } good[] = {
            { "64M", (size_t)64 << 20 }, { "1G", (size_t)1 << 30 }, { "100MiB", (size_t)100 << 20 },
            { "32768K", (size_t)32 << 20 }, { "25165824", (size_t)24 << 20 }, { "2gb", (size_t)2 << 30 } };
        for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
            is_int(parse(&c, err, "--dsn", "d", "--memory-budget", good[i].v, NULL), 0, "--memory-budget %s", good[i].v);
            ok(c.memory_budget == good[i].want, "--memory-budget %s = %zu bytes", good[i].v, good[i].want);
            kgx_config_free(&c);
        }
        const char *bad[] = { "", "M", "-64M", "23M", "64X", "64MM", "2000G", "0x40M", " 64M", "64 M" };
        for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
            is_int(parse(&c, err, "--dsn", "d", "--memory-budget", bad[i], NULL), 2, "--memory-budget '%s' refused", bad[i]);
            ok(strstr(err, "--memory-budget") != NULL, "error names the flag: %s", err);
            kgx_config_free(&c);
        }
    }

    /* env, and flags winning over env */
    setenv("MEMPALACE_POSTGRES_DSN", "postgresql://env/db", 1);
    setenv("MEMPALACE_KG_LLM_ENDPOINT", "http://a:1/v1/chat/completions", 1);
    setenv("MEMPALACE_KG_LLM_MODEL", "envmodel", 1);
    setenv("MEMPALACE_KG_CLAIM_LEASE_SECONDS", "60", 1);
    setenv("MEMPALACE_KG_MIN_CONFIDENCE", "0.25", 1);
    setenv("MEMPALACE_KG_MAX_TRIPLES_PER_DRAWER", "7", 1);
    is_int(parse(&c, err, NULL), 0, "env alone is enough");
    is_str(c.dsn, "postgresql://env/db", "DSN from env");
    is_str(c.endpoints[0], "http://a:1", "endpoint from env, normalised");
    is_str(c.model, "envmodel", "model from env");
    ok(c.lease_seconds == 60, "lease from env");
    ok(c.min_confidence == 0.25, "min confidence from env");
    is_int(c.max_triples, 7, "max triples from env");
    kgx_config_free(&c);
    is_int(parse(&c, err, "--dsn", "postgresql://flag/db", "--endpoint", "http://b:2/,http://c:3/v1/",
                 "--model", "m2", "--lease-seconds", "30", NULL), 0, "flags parse");
    is_str(c.dsn, "postgresql://flag/db", "flag wins over env (dsn)");
    is_int(c.n_endpoints, 2, "two endpoints");
    is_str(c.endpoints[0], "http://b:2", "trailing / stripped");
    is_str(c.endpoints[1], "http://c:3", "/v1/ stripped");
    is_str(c.model, "m2", "flag wins (model)");
    ok(c.lease_seconds == 30, "flag wins (lease)");
    kgx_config_free(&c);
    setenv("MEMPALACE_KG_MIN_CONFIDENCE", "lots", 1);
    is_int(parse(&c, err, NULL), 2, "bad env value is rc 2");
    ok(strstr(err, "MEMPALACE_KG_MIN_CONFIDENCE") != NULL, "and names the variable: %s", err);
    kgx_config_free(&c);
    clear_env();

    /* bad values: rc 2, one line naming the flag */
    const char *bad[][2] = { { "--workers", "0" }, { "--workers", "x" }, { "--batch-size", "-1" },
                             { "--graph", "Bad-Name" }, { "--graph", "ab" }, { "--endpoint", "ftp://x" },
                             { "--log-level", "loud" }, { "--request-timeout", "nan" }, { "--max-attempts", "0" } };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = parse(&c, err, "--dsn", "d", bad[i][0], bad[i][1], NULL);
        ok(rc == 2 && strstr(err, bad[i][0]) && !strchr(err, '\n'), "%s %s → rc 2: %s", bad[i][0], bad[i][1], err);
        kgx_config_free(&c);
    }
    /* graph names: every identifier kgx derives must fit 63 bytes; reserved words and schemas that are
     * not a graph's own are refused; one line naming the flag, rc 2 */
    {
        char longest[128], name[128];
        size_t extra = kgx_names_longest(0, longest, sizeof longest);
        ok(strstr(longest, "<graph>") && strncmp(longest, "kgx_", 4) == 0, "longest derived name: %s (+%zu)", longest, extra);
        ok(extra >= strlen("kgx__support_edge"), "at least kgx_<graph>_support_edge (%zu extra bytes)", extra);
        size_t max = 63 - extra;
        memset(name, 'g', sizeof name);
        name[max] = 0;
        is_int(parse(&c, err, "--dsn", "d", "--graph", name, NULL), 0, "%zu-character name: accepted", max);
        is_str(c.graph, name, "and kept");
        kgx_config_free(&c);
        name[max] = 'g';
        name[max + 1] = 0;
        int rc = parse(&c, err, "--dsn", "d", "--graph", name, NULL);
        ok(rc == 2 && strstr(err, "--graph") && strstr(err, "too long") && strstr(err, "63") && !strchr(err, '\n'),
           "%zu characters: rc 2, one line: %s", max + 1, err);
        kgx_config_free(&c);
        /* the case: 58..63 characters used to pass, then _support/_answers collided */
        for (size_t n = 58; n <= 63; n++) {
            name[n] = 0;
            memset(name, 'a', n);
            rc = parse(&c, err, "--dsn", "d", "--graph", name, NULL);
            ok(rc == 2 && strstr(err, "too long"), "%zu characters: refused", n);
            kgx_config_free(&c);
        }
        const char *refused[] = { "select", "user", "table", "from", "public", "ag_catalog", "information_schema",
                                  "pg_catalog", "pg_toast", "pg_mine", "ab", "Graph", "9lives", "my-graph", "" };
        for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
            rc = parse(&c, err, "--dsn", "d", "--graph", refused[i], NULL);
            ok(rc == 2 && strstr(err, "--graph") && !strchr(err, '\n'), "--graph '%s': rc 2: %s", refused[i], err);
            kgx_config_free(&c);
        }
        ok(strstr((parse(&c, err, "--dsn", "d", "--graph", "user", NULL), err), "reserved"), "says why: %s", err);
        kgx_config_free(&c);
        ok(strstr((parse(&c, err, "--dsn", "d", "--graph", "public", NULL), err), "not a graph"), "says why: %s", err);
        kgx_config_free(&c);
        const char *fine[] = { "mempalace_kg", "users", "selected", "_g1", "kg_2024", "between", "graph" };
        for (size_t i = 0; i < sizeof fine / sizeof *fine; i++) {
            is_int(parse(&c, err, "--dsn", "d", "--graph", fine[i], NULL), 0, "--graph '%s': accepted", fine[i]);
            kgx_config_free(&c);
        }
    }
    is_int(parse(&c, err, "--dsn", "d", "--bogus", NULL), 2, "unknown option");
    ok(strstr(err, "--bogus") != NULL, "names it: %s", err);
    kgx_config_free(&c);
    is_int(parse(&c, err, "--dsn", "d", "--backfill", "--once", NULL), 2, "two modes conflict");
    kgx_config_free(&c);
    is_int(parse(&c, err, "--dsn", "d", "--json", NULL), 2, "--json alone");
    kgx_config_free(&c);

    /* modes */
    is_int(parse(&c, err, "--dry-run", "-", NULL), 0, "--dry-run needs no DSN");
    is_int(c.mode, KGX_MODE_DRY_RUN, "dry-run mode");
    kgx_config_free(&c);
    is_int(parse(&c, err, "--dsn", "d", "--backfill-limit", "10", NULL), 0, "backfill limit implies backfill");
    is_int(c.mode, KGX_MODE_BACKFILL, "backfill mode");
    is_int(c.backfill_limit, 10, "limit 10");
    kgx_config_free(&c);
    is_int(parse(&c, err, "--status", "--json", "--dsn", "d", NULL), 0, "status json");
    ok(c.mode == KGX_MODE_STATUS && c.json, "status + json");
    kgx_config_free(&c);
    is_int(parse(&c, err, "--help", NULL), 0, "--help");
    is_int(c.mode, KGX_MODE_HELP, "help mode even without DSN");
    kgx_config_free(&c);

    /* endpoint URLs as operators write them */
    const char *forms[] = { "http://h:11436", "http://h:11436/", "http://h:11436/v1", "http://h:11436/v1/",
                            "http://h:11436/v1/chat/completions", "http://h:11436/completion", " http://h:11436 " };
    for (size_t i = 0; i < sizeof forms / sizeof *forms; i++) {
        char *b = kgx_config_endpoint_base(forms[i]);
        is_str(b, "http://h:11436", "endpoint '%s' is the same server", forms[i]);
        free(b);
    }
    ok(kgx_config_endpoint_base("localhost:11436") == NULL, "no scheme → rejected");
    ok(kgx_config_endpoint_base("http://") == NULL, "no host → rejected");

    /* JSON escaping */
    kgx_buf_t b = { 0 };
    kgx_buf_json_str(&b, "a\"b\\c\n\x01 é \xff end");
    is_str(b.p, "\"a\\\"b\\\\c\\n\\u0001 é \xEF\xBF\xBD end\"", "escapes, keeps UTF-8, replaces invalid bytes");
    kgx_buf_reset(&b);
    kgx_buf_json_strn(&b, "x\0y", 3);
    is_str(b.p, "\"x\xEF\xBF\xBDy\"", "NUL becomes U+FFFD");
    kgx_buf_reset(&b);
    kgx_buf_json_str(&b, NULL);
    is_str(b.p, "null", "NULL → null");
    kgx_buf_free(&b);

    /* the --dry-run reader */
    char *id, *wing, *room, *doc;
    size_t dl;
    const char *line = "{\"id\":\"d1\",\"wing\":\"w\",\"metadata\":{\"a\":[1,{\"b\":\"}\"}]},\"document\":\"x\\\"y\\u00e9\\ud83d\\ude00\"}";
    is_int(kgx_jsonl_parse(line, strlen(line), 1, &id, &wing, &room, &doc, &dl, err, sizeof err), 1, "JSONL line");
    is_str(id, "d1", "id");
    is_str(wing, "w", "wing");
    ok(room == NULL, "room absent");
    is_str(doc, "x\"yé😀", "escapes and surrogate pairs decoded");
    is_int(dl, strlen("x\"yé😀"), "length");
    free(id); free(wing); free(room); free(doc);
    const char *noid = "{\"document\":\"t\",\"id\":42}";
    is_int(kgx_jsonl_parse(noid, strlen(noid), 3, &id, &wing, &room, &doc, &dl, err, sizeof err), 1, "numeric id");
    is_str(id, "42", "numeric id kept as text");
    free(id); free(wing); free(room); free(doc);
    const char *nodoc = "{\"id\":\"x\"}";
    is_int(kgx_jsonl_parse(nodoc, strlen(nodoc), 3, &id, &wing, &room, &doc, &dl, err, sizeof err), -1, "no document");
    ok(strstr(err, "document") != NULL, "says so: %s", err);
    const char *junk = "{\"id\":\"x\",\"document\":\"a\"} trailing";
    is_int(kgx_jsonl_parse(junk, strlen(junk), 3, &id, &wing, &room, &doc, &dl, err, sizeof err), -1, "trailing junk");
    const char *cut = "{\"id\":\"x\",\"document\":\"a";
    is_int(kgx_jsonl_parse(cut, strlen(cut), 3, &id, &wing, &room, &doc, &dl, err, sizeof err), -1, "cut line");

    /* llama-server bodies */
    const char *props = "{\"default_generation_settings\":{\"n_ctx\": 1024,\"params\":{}},\"total_slots\":8}";
    is_int(kgx_props_total_slots(props), 8, "total_slots");
    is_int(kgx_props_n_ctx(props), 1024, "per-slot n_ctx");
    const char *ctxerr = "{\"error\":{\"code\":400,\"message\":\"…\",\"type\":\"exceed_context_size_error\",\"n_prompt_tokens\":5000,\"n_ctx\":4096}}";
    is_int(kgx_error_n_ctx(ctxerr), 4096, "n_ctx from the context error");
    is_int(kgx_props_total_slots("{}"), -1, "absent → -1");
    is_int(kgx_body_int("{\"tokens_evaluated\":12,\"tokens_predicted\":3}", "tokens_predicted"), 3, "token counts");
    /* --prune [--dry-run] and --follow-deletes on|off */
    is_int(parse(&c, err, "--dsn", "d", "--prune", NULL), 0, "--prune");
    ok(c.mode == KGX_MODE_PRUNE && !c.adopt_dry_run, "--prune: mode, not a dry run");
    kgx_config_free(&c);
    is_int(parse(&c, err, "--dsn", "d", "--dry-run", "--prune", NULL), 0, "--dry-run --prune: no FILE");
    ok(c.mode == KGX_MODE_PRUNE && c.adopt_dry_run && !c.dry_run_input, "--prune --dry-run: report only");
    kgx_config_free(&c);
    is_int(parse(&c, err, "--dsn", "d", "--follow-deletes", "on", NULL), 0, "--follow-deletes on");
    ok(c.mode == KGX_MODE_FOLLOW_DELETES && c.follow_deletes == 1, "mode, on");
    kgx_config_free(&c);
    is_int(parse(&c, err, "--dsn", "d", "--follow-deletes", "off", NULL), 0, "--follow-deletes off");
    ok(c.mode == KGX_MODE_FOLLOW_DELETES && c.follow_deletes == 0, "mode, off");
    kgx_config_free(&c);
    is_int(parse(&c, err, "--dsn", "d", "--follow-deletes", "yes", NULL), 2, "--follow-deletes yes: rc 2");
    is_str(err, "error: --follow-deletes: expected on or off, got 'yes'", "one line");
    kgx_config_free(&c);
    is_int(parse(&c, err, "--dsn", "d", "--follow-deletes", NULL), 2, "--follow-deletes without a value: rc 2");
    kgx_config_free(&c);
    is_int(parse(&c, err, "--dsn", "d", "--prune", "--adopt", NULL), 2, "--prune --adopt: rc 2");
    kgx_config_free(&c);
    is_int(parse(&c, err, "--dsn", "d", "--prune", "--follow-deletes", "on", NULL), 2, "--prune --follow-deletes: rc 2");
    kgx_config_free(&c);
    is_int(parse(&c, err, "--prune", NULL), 2, "--prune needs a DSN");
    kgx_config_free(&c);

    return done_testing();
}
