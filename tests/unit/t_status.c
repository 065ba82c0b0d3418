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

static kgx_status_budget_t budget_of;
static const kgx_status_budget_t *B(int n_ctx, int instr, int cap, int counted)
{
    budget_of = (kgx_status_budget_t){ .n_ctx = n_ctx, .instruction_tokens = instr, .output_cap = cap,
                                       .counted = counted };
    return &budget_of;
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

static void counted(void)
{
    kgx_status_note_budget(1024, 320, 336);     /* 368 of 1024 left by the estimate: quiet */
    kgx_status_note_prompt(-1, 10);             /* no count in the answer */
    kgx_status_note_prompt(700, -1);            /* the chunk's size unknown */
    kgx_status_note_prompt(830, 300);           /* 530 for the instructions, 158 left: tiny, said */
    kgx_status_note_prompt(478, 10);            /* 468: smaller, still tiny: the same budget, quiet */
    kgx_status_note_prompt(900, 300);           /* a larger prompt: ignored */
    kgx_status_note_prompt(1600, 1200);         /* 400, but from a larger prompt (its chunk's estimate errs
                                                 * more): ignored */
    kgx_status_note_prompt(100, 300);           /* a chunk estimated over its prompt: ignored */
    kgx_status_note_budget(1024, 320, 336);     /* the next split: quiet */
}

int main(void)
{
    /* the rule: tiny when the text gets under a quarter of the slot */
    ok(kgx_status_budget_tiny(B(512, 313, 256, 0)), "512-token slot, instructions 313 + cap 256: tiny");
    ok(!kgx_status_budget_tiny(B(4096, 313, 512, 0)), "4096-token slot: not tiny");
    ok(!kgx_status_budget_tiny(B(400, 200, 100, 0)), "exactly a quarter left: not tiny");
    ok(kgx_status_budget_tiny(B(400, 200, 101, 0)), "one token under a quarter: tiny");
    ok(!kgx_status_budget_tiny(B(0, 313, 256, 0)), "unknown context: not tiny");
    ok(!kgx_status_budget_tiny(B(1024, 320, 336, 0)), "1024-token slot, estimate 320 + cap 336: 368 left, not tiny");
    ok(kgx_status_budget_tiny(B(1024, 320, 336, 468)), "... but the server counts 468 for them: 220 left, tiny");
    ok(!kgx_status_budget_tiny(B(1024, 320, 336, 200)), "a smaller count than the estimate: the estimate stands");
    is_int(kgx_status_budget_left(B(1024, 320, 336, 468)), 220, "left = n_ctx - max(estimate, counted) - cap");

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
    ok(strstr(js, "\"budget\":{\"n_ctx\":512,\"instruction_tokens\":313,\"instruction_tokens_counted\":null,\"output_cap\":256,"
                  "\"text_tokens\":0,\"text_percent\":0,\"tiny\":true,\"warning\":\"tiny budget: slot context 512") != NULL,
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

    /* what the server counts: a prompt larger than the estimate makes a roomy-looking budget tiny */
    kgx_status_budget_reset();
    err = captured(counted);
    is_int(count(err, "tiny budget:"), 1, "estimate fine, counted prompts not: one warning, when the count comes");
    ok(strstr(err, "instructions ~320 (~530 as the server counts them) + output cap 336 leave 158 tokens (15 %)")
       != NULL, "the warning names the server's count when it became tiny");
    free(err);
    b = kgx_status_budget();
    is_int(b.counted, 468, "the count from the smallest prompt (less its chunk's estimate) is kept");
    js = process_json();
    ok(strstr(js, "\"instruction_tokens_counted\":468,\"output_cap\":336,\"text_tokens\":220,\"text_percent\":21,\"tiny\":true")
       != NULL, "process.budget: instruction_tokens_counted and what it leaves");
    free(js);
    kgx_status_note_budget(1024, 300, 336);      /* another prompt (a reload): its own count */
    is_int(kgx_status_budget().counted, 0, "a new instructions estimate forgets the old count");

    kgx_status_budget_reset();
    is_int(kgx_status_budget().n_ctx, 0, "reset");
    return done_testing();
}
