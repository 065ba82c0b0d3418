/* t_status — the token budget the policy reports (kgx.budget -> kgx_status_note_budget): the quarter
 * rule, process.budget in the status JSON, and one warning per tiny budget however many hook threads
 * report it at once. */
#include "status.h"
#include "tap.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* stderr into a temporary file while f runs; returns what was written (malloc'd) */
static char *captured(void (*f)(void))
{
    char path[] = "/tmp/t_status-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return strdup("");
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    f();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    off_t n = lseek(fd, 0, SEEK_END);
    char *s = calloc(1, (size_t)n + 1);
    if (pread(fd, s, (size_t)n, 0) != n) s[0] = 0;
    close(fd);
    unlink(path);
    return s;
}

static int count(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

static char *process_json(void)
{
    kgx_process_view_t v = { .worker_id = "w1", .policy_name = "default", .policy_version = "1" };
    kgx_buf_t b = { 0 };
    kgx_buf_adds(&b, "{");
    kgx_status_process_json(&b, &v);
    kgx_buf_adds(&b, "}");
    return kgx_buf_steal(&b, NULL);
}

static void *reporter(void *arg)
{
    (void)arg;
    for (int i = 0; i < 2000; i++) kgx_status_note_budget(512, 313, 256);
    return NULL;
}

static void many_threads(void)
{
    pthread_t t[4];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, reporter, NULL);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
}

static void changes(void)
{
    kgx_status_note_budget(512, 313, 256);      /* the same tiny budget again: quiet */
    kgx_status_note_budget(1024, 313, 336);     /* 375 of 1024 left (36 %): not tiny, quiet */
    kgx_status_note_budget(512, 100, 300);      /* another tiny one: said */
    kgx_status_note_budget(0, 313, 256);        /* context unknown: nothing recorded */
}

int main(void)
{
    /* the rule: tiny when the text gets under a quarter of the slot */
    ok(kgx_status_budget_tiny(512, 313, 256), "512-token slot, instructions 313 + cap 256: tiny");
    ok(!kgx_status_budget_tiny(4096, 313, 512), "4096-token slot: not tiny");
    ok(!kgx_status_budget_tiny(400, 200, 100), "exactly a quarter left: not tiny");
    ok(kgx_status_budget_tiny(400, 200, 101), "one token under a quarter: tiny");
    ok(!kgx_status_budget_tiny(0, 313, 256), "unknown context: not tiny");

    char *js = process_json();
    ok(strstr(js, "\"budget\":null") != NULL, "nothing reported yet: process.budget is null");
    free(js);

    char *err = captured(many_threads);
    is_int(count(err, "tiny budget:"), 1, "4 threads x 2000 reports of one tiny budget: one warning");
    ok(strstr(err, "slot context 512 tokens, instructions ~313 + output cap 256 leave 0 tokens (0 %)") != NULL,
       "the warning has the numbers");
    ok(strstr(err, "--ctx-size C -np N") != NULL, "... and the fix");
    free(err);

    kgx_status_budget_t b = kgx_status_budget();
    ok(b.n_ctx == 512 && b.instruction_tokens == 313 && b.output_cap == 256, "the last report is kept");
    js = process_json();
    ok(strstr(js, "\"budget\":{\"n_ctx\":512,\"instruction_tokens\":313,\"output_cap\":256,\"text_tokens\":0,"
                  "\"text_percent\":0,\"tiny\":true,\"warning\":\"tiny budget: slot context 512") != NULL,
       "process.budget: numbers, tiny, warning");
    diag("%s", strstr(js, "\"budget\""));
    free(js);

    err = captured(changes);
    is_int(count(err, "tiny budget:"), 1, "same again: quiet; not tiny: quiet; a different tiny one: said");
    ok(strstr(err, "instructions ~100 + output cap 300 leave 112 tokens (21 %)") != NULL, "the new numbers");
    free(err);
    b = kgx_status_budget();
    ok(b.n_ctx == 512 && b.instruction_tokens == 100, "an unknown context leaves the last report alone");

    kgx_status_note_budget(4096, 313, 512);
    js = process_json();
    ok(strstr(js, "\"text_tokens\":3271,\"text_percent\":79,\"tiny\":false,\"warning\":null}") != NULL,
       "a roomy budget: not tiny, no warning");
    free(js);

    kgx_status_budget_reset();
    is_int(kgx_status_budget().n_ctx, 0, "reset");
    return done_testing();
}
