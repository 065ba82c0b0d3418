/* reapply — `kgx-run --reapply`: re-runs parse/accept of the current policy over the stored raw
 * answers of completed drawers and rewrites their facts (retracting the old ones), without a single
 * LLM request. How a vocabulary or threshold change reaches an existing graph in minutes. */
#ifndef KGX_REAPPLY_H
#define KGX_REAPPLY_H

#include "config.h"
#include "script.h"

/* Takes the policy state (its hooks run on hook threads, hooks.c). Returns the exit code (0 done,
 * 1 failure: a drawer that could not be re-parsed or written keeps its facts and is counted failed). */
int kgx_reapply_run(const kgx_config_t *cfg, kgx_script_t *script);

#endif
