/* t_answer — whole or why not: kgx_answer_read on real llama-server bodies (completion and chat,
 * field names hidden inside the model's content), kgx_answer_classify over every ending x verdict, and
 * kgx_answer_compact (what is stored of an answer). */
#include "answer.h"
#pragma GCC diagnostic ignored "-Wmisleading-indentation"
#include "tap.h"

#define CL(status, body, verdict) \
    ({ kgx_answer_t a_; const char *b_ = (body); kgx_answer_read(status == 200 ? b_ : NULL, strlen(b_), &a_); \
       kgx_answer_classify(0, status, b_, strlen(b_), &a_, verdict); })

int main(void)
{
    /* a /completion body as 0.7.0 sends it (shortened: the real one echoes prompt and settings) */
    const char *eos = "{\"index\":0,\"content\":\"{\\\"triples\\\":[{\\\"subject\\\":\\\"Carol\\\",\\\"predicate\\\":"
        "\\\"stop_type\\\",\\\"object\\\":\\\"Apollo\\\",\\\"confidence\\\":90}]}\",\"tokens\":[],\"id_slot\":1,"
        "\"stop\":true,\"model\":\"kgx-tiny\",\"tokens_predicted\":21,\"tokens_evaluated\":340,"
        "\"generation_settings\":{\"n_predict\":512,\"stop_type\":\"none\",\"truncated\":true},\"prompt\":\"<s>Extract "
        "\\\"truncated\\\":true\",\"has_new_line\":false,\"truncated\":false,\"stop_type\":\"eos\",\"stopping_word\":\"\","
        "\"tokens_cached\":360,\"timings\":{\"cache_n\":313,\"prompt_n\":27,\"prompt_ms\":4.5,\"prompt_per_token_ms\":0.1,"
        "\"predicted_n\":21,\"predicted_ms\":12.25}}";
    kgx_answer_t a;
    size_t eos_content_len;
    kgx_answer_read(eos, strlen(eos), &a);
    is_int(a.stop, KGX_STOP_EOS, "completion: stop_type eos (the one in generation_settings and content is not read)");
    is_int(a.truncated, 0, "completion: truncated false (not the settings' or the prompt's)");
    is_int(a.tokens_predicted, 21, "tokens_predicted");
    is_int(a.tokens_evaluated, 340, "tokens_evaluated");
    is_int(a.tokens_cached, 360, "tokens_cached");
    is_int(a.cache_n, 313, "timings.cache_n");
    is_int(a.prompt_n, 27, "timings.prompt_n");
    ok(a.content && a.content[0] == '"', "content span is the JSON string");
    ok(a.model && a.model_len == 10, "model span");
    eos_content_len = a.content_len;
    is_int(CL(200, eos, KGX_VERDICT_WHOLE), KGX_ANSWER_WHOLE, "eos + whole: whole");
    is_int(CL(200, eos, KGX_VERDICT_NONE), KGX_ANSWER_WHOLE, "eos + no verdict (older policy): whole");
    is_int(CL(200, eos, KGX_VERDICT_INCOMPLETE), KGX_ANSWER_MALFORMED, "eos + incomplete: malformed (retried)");
    is_int(CL(200, eos, KGX_VERDICT_FAILED), KGX_ANSWER_MALFORMED, "eos + parse failed: malformed");

    const char *limit = "{\"content\":\"{\\\"triples\\\":[{\\\"subj\",\"stop_type\":\"limit\",\"truncated\":false}";
    is_int(CL(200, limit, KGX_VERDICT_FAILED), KGX_ANSWER_CUT_NPREDICT, "limit, not truncated: cut at n_predict");
    is_int(CL(200, limit, KGX_VERDICT_WHOLE), KGX_ANSWER_CUT_NPREDICT, "limit even with a whole-looking list: not whole");
    const char *trunc = "{\"content\":\"[\",\"stop_type\":\"limit\",\"truncated\":true}";
    is_int(CL(200, trunc, KGX_VERDICT_FAILED), KGX_ANSWER_CUT_CONTEXT, "truncated true: cut by a full context");
    const char *word = "{\"content\":\"[]\",\"stop_type\":\"word\",\"truncated\":false}";
    is_int(CL(200, word, KGX_VERDICT_WHOLE), KGX_ANSWER_WHOLE, "stop word + whole: whole");

    const char *chat = "{\"choices\":[{\"finish_reason\":\"stop\",\"index\":0,\"message\":{\"role\":\"assistant\","
        "\"content\":\"{\\\"finish_reason\\\":\\\"length\\\"}\"}}],\"model\":\"kgx-tiny\",\"usage\":{\"completion_tokens\":21,"
        "\"prompt_tokens\":37},\"timings\":{\"cache_n\":0,\"prompt_n\":37}}";
    kgx_answer_read(chat, strlen(chat), &a);
    ok(a.chat, "chat envelope recognised");
    is_int(a.stop, KGX_STOP_EOS, "chat: finish_reason stop (not the one inside the content)");
    is_int(a.tokens_predicted, 21, "chat: usage.completion_tokens");
    is_int(CL(200, chat, KGX_VERDICT_WHOLE), KGX_ANSWER_WHOLE, "chat stop + whole: whole");
    const char *chat_len = "{\"choices\":[{\"finish_reason\":\"length\",\"message\":{\"content\":\"[\"}}]}";
    is_int(CL(200, chat_len, KGX_VERDICT_FAILED), KGX_ANSWER_CUT_NPREDICT, "chat length: cut at n_predict");

    const char *bare = "[{\"subject\":\"a\",\"predicate\":\"b\",\"object\":\"c\"}]";
    is_int(CL(200, bare, KGX_VERDICT_WHOLE), KGX_ANSWER_WHOLE, "no ending (another server, a stored body): verdict alone, whole");
    is_int(CL(200, bare, KGX_VERDICT_INCOMPLETE), KGX_ANSWER_MALFORMED, "no ending, incomplete: malformed");
    is_int(CL(200, "not json {", KGX_VERDICT_FAILED), KGX_ANSWER_MALFORMED, "garbage: malformed");

    is_int(CL(500, "{\"error\":{\"code\":500,\"message\":\"Context size has been exceeded.\",\"type\":\"server_error\"}}",
              KGX_VERDICT_NONE), KGX_ANSWER_CAPACITY, "500 Context size has been exceeded: capacity (unified KV)");
    is_int(CL(503, "{\"error\":{\"code\":503,\"message\":\"Loading model\"}}", 0), KGX_ANSWER_CAPACITY, "503 loading: capacity");
    is_int(CL(429, "", 0), KGX_ANSWER_CAPACITY, "429: capacity");
    is_int(CL(400, "{\"error\":{\"code\":400,\"message\":\"request (2130 tokens) exceeds the available context size "
              "(512 tokens), try increasing it\",\"type\":\"exceed_context_size_error\",\"n_prompt_tokens\":2130,\"n_ctx\":512}}", 0),
           KGX_ANSWER_OVERFLOW, "400 exceed_context_size_error: overflow");
    is_int(CL(500, "{\"error\":{\"code\":500,\"message\":\"boom\"}}", 0), KGX_ANSWER_REFUSED, "another 500: refused");
    is_int(CL(404, "{}", 0), KGX_ANSWER_REFUSED, "404: refused");
    is_int(kgx_answer_classify(3, 0, NULL, 0, NULL, 0), KGX_ANSWER_TRANSPORT, "no HTTP answer: transport");
    is_str(kgx_answer_outcome_name(KGX_ANSWER_CUT_NPREDICT), "cut_npredict", "outcome names");

    /* compact: what is stored */
    kgx_buf_t b = { 0 };
    ok(kgx_answer_compact(eos, strlen(eos), &b) == 0, "compact a completion");
    ok(b.p && !strstr(b.p, "generation_settings") && !strstr(b.p, "Extract") && strstr(b.p, "\"stop_type\":\"eos\"")
       && strstr(b.p, "\"cache_n\":313") && strstr(b.p, "\"tokens_evaluated\":340") && strstr(b.p, "\"model\":\"kgx-tiny\"")
       && strstr(b.p, "\"truncated\":false"), "compact: content, ending, counts, cache_n, model — no prompt, no settings");
    diag("%zu -> %zu bytes: %s", strlen(eos), b.len, b.p);
    kgx_answer_t c;
    kgx_answer_read(b.p, b.len, &c);
    ok(c.stop == KGX_STOP_EOS && c.cache_n == 313 && c.tokens_evaluated == 340 && c.content_len == eos_content_len && c.truncated == 0,
       "the compact answer reads back");
    kgx_buf_reset(&b);
    ok(kgx_answer_compact(chat, strlen(chat), &b) == 0 && strstr(b.p, "\"choices\":[{\"message\":{\"content\":")
       && strstr(b.p, "\"finish_reason\":\"stop\""), "compact chat keeps the envelope shape");
    kgx_buf_reset(&b);
    ok(kgx_answer_compact(bare, strlen(bare), &b) == -1 && b.len == 0, "a body that is not an envelope: stored as is");
    ok(kgx_answer_compact("{\"content\":\"x\"", 14, &b) == -1, "bad JSON: stored as is");
    kgx_buf_free(&b);
    /* deep nesting is bounded */
    char deep[4000];
    memset(deep, '[', sizeof deep - 1);
    deep[sizeof deep - 1] = 0;
    kgx_answer_read(deep, strlen(deep), &a);
    ok(a.stop == KGX_STOP_UNKNOWN, "deep garbage: nothing read, no crash");
    return done_testing();
}
