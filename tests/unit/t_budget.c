/* t_budget — the memory budget's accounting: what a drawer is charged, when a drawer may be admitted
 * (always when nothing is held, so a drawer larger than the budget is processed alone), and that
 * giving back restores the room. */
#include "budget.h"
#include "tap.h"

#include <stdint.h>

int main(void)
{
    kgx_budget_t b;
    kgx_budget_init(&b, (size_t)64 << 20);
    ok(b.avail == ((size_t)64 << 20) - KGX_BUDGET_BASE, "room for drawers = budget - the process's share");
    ok(kgx_budget_cost(0) == KGX_BUDGET_PER_DRAWER, "an empty drawer costs the fixed share");
    ok(kgx_budget_cost(1000) == 1000 * KGX_BUDGET_COPIES + KGX_BUDGET_PER_DRAWER, "text x copies + fixed share");
    ok(kgx_budget_cost(SIZE_MAX) == SIZE_MAX, "no overflow on absurd sizes");

    size_t ten = kgx_budget_cost(10u * 1000 * 1000);
    ok(kgx_budget_fits(&b, ten), "a 10 MB drawer fits an empty budget");
    kgx_budget_take(&b, ten);
    ok(!kgx_budget_fits(&b, ten), "a second 10 MB drawer does not fit beside it (default budget)");
    ok(kgx_budget_fits(&b, kgx_budget_cost(300)), "a small one still does");
    kgx_budget_give(&b, ten);
    is_int(b.holders, 0, "given back: nothing held");
    ok(b.used == 0, "given back: nothing used");
    ok(b.peak == ten, "peak remembered");

    size_t huge = kgx_budget_cost((size_t)200 << 20);
    ok(kgx_budget_fits(&b, huge), "a drawer larger than the whole budget is admitted when alone");
    kgx_budget_take(&b, huge);
    ok(!kgx_budget_fits(&b, kgx_budget_cost(1)), "and nothing is admitted beside it");
    kgx_budget_give(&b, huge);

    int n = 0;
    while (kgx_budget_fits(&b, kgx_budget_cost(15000))) {
        kgx_budget_take(&b, kgx_budget_cost(15000));
        n++;
    }
    ok(n >= 64, "64 typical drawers (15 KB) fit the default budget together (%d do)", n);
    while (b.holders) kgx_budget_give(&b, kgx_budget_cost(15000));
    ok(b.used == 0, "all given back");
    kgx_budget_give(&b, 5);
    ok(b.used == 0 && b.holders == 0, "giving back more than held does not underflow");

    /* a claim holds room for the texts it may bring: at most KGX_CLAIM_TEXT_TOTAL, never past the room */
    size_t held, bytes = kgx_budget_claim_hold(&b, 20, &held);
    ok(bytes == KGX_CLAIM_TEXT_TOTAL, "claim of 20 on an empty budget: up to %zu bytes of text", bytes);
    ok(held == bytes * KGX_BUDGET_COPIES + 20 * KGX_BUDGET_PER_DRAWER && b.used == held && b.holders == 1,
       "held: what 20 drawers bringing those bytes are charged");
    size_t c1 = kgx_budget_cost(KGX_CLAIM_TEXT_MAX), total = 0;
    kgx_budget_give(&b, held);
    for (int i = 0; i < 20 && total + KGX_CLAIM_TEXT_MAX <= bytes; i++, total += KGX_CLAIM_TEXT_MAX)
        kgx_budget_take(&b, c1);          /* the rows that came with their text, charged as usual */
    ok(b.used <= held, "the drawers that came with text are charged no more than the claim held");
    while (b.holders) kgx_budget_give(&b, c1);
    size_t big = b.avail - 10 * KGX_BUDGET_PER_DRAWER;   /* room left: 10 drawers' fixed share */
    kgx_budget_take(&b, big);
    bytes = kgx_budget_claim_hold(&b, 20, &held);
    ok(bytes == 0 && held == 0 && b.holders == 1, "no room for 20 drawers' shares: no text with the claim, nothing held");
    bytes = kgx_budget_claim_hold(&b, 4, &held);
    ok(bytes == 6 * KGX_BUDGET_PER_DRAWER / KGX_BUDGET_COPIES && held == 10 * KGX_BUDGET_PER_DRAWER,
       "a claim of 4 in room for 10 shares: the rest of the room for text (%zu bytes)", bytes);
    kgx_budget_give(&b, held);
    kgx_budget_give(&b, big);
    ok(b.used == 0 && b.holders == 0, "all given back after the claims");

    kgx_budget_init(&b, (size_t)1 << 20);
    ok(b.avail == KGX_BUDGET_PER_DRAWER, "a budget below the process's share still admits one drawer at a time");
    return done_testing();
}
