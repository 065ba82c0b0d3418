/* prune — `kgx-run --prune [--dry-run]` and `kgx-run --follow-deletes on|off`: drawers deleted from
 * mempalace_drawers take their facts with them (docs/kg-extraction.md, "Deleted drawers").
 *
 * --prune walks the drawers that have facts, in id order, through kgx_<graph>_prune (core/schema.sql.in):
 * one short transaction per batch, so it is safe to interrupt and to run again (a rerun finds nothing
 * left to do). Alongside each batch it counts the support rows and edges that went, in the same
 * transaction. It holds the --adopt guard (shared) for its whole run: it refuses to start while an
 * --adopt holds the graph, and an --adopt started meanwhile waits for it.
 * --dry-run counts the same in one read-only transaction and changes nothing (no schema either).
 *
 * --follow-deletes on|off installs/removes the optional AFTER DELETE trigger on mempalace_drawers. */
#ifndef KGX_PRUNE_H
#define KGX_PRUNE_H

#include "config.h"

/* Exit codes: 0 done, 1 refused, failed or interrupted (a rerun finishes). */
int kgx_prune_run(const kgx_config_t *cfg);
int kgx_follow_deletes_run(const kgx_config_t *cfg);

#endif
