/* jsonl — the --dry-run input reader: JSON Lines {"id","document","wing"?,"room"?} (other members
 * ignored), or, when the input does not start with '{', the whole input as one plain-text drawer. */
#ifndef KGX_JSONL_H
#define KGX_JSONL_H

#include <stddef.h>
#include <stdio.h>

/* Reads the next drawer (seq numbers lines from 1; it names drawers without an id). Returns 1 with
 * malloc'd strings (wing/room may be NULL), 0 at the end, -1 for a bad line (err says why). */
int kgx_jsonl_next(FILE *f, long seq, char **id, char **wing, char **room, char **doc, size_t *doc_len,
                   char *err, size_t errlen);
/* Parses one JSON object line (pure; tested). Same outputs. */
int kgx_jsonl_parse(const char *line, size_t len, long seq, char **id, char **wing, char **room,
                    char **doc, size_t *doc_len, char *err, size_t errlen);

#endif
