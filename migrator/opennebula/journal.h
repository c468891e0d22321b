/* ferry: the move journal — before- and after-image of every row a switch touches.
 *
 * A JSON file (jansson), written and fsynced (file and directory) before the first catalog
 * write.  Its "state" goes prepared -> committed (-> rolled-back); every state change is an
 * atomic rewrite (temporary file, fsync, rename, fsync of the directory).
 * Default location: $FERRY_STATE_DIR/journal/ (FERRY_STATE_DIR defaults to /var/lib/ferry).
 */
#ifndef FERRY_JOURNAL_H
#define FERRY_JOURNAL_H

#include "migrator/opennebula/catalog.h"

#include <stdint.h>
#include <stdio.h>

struct plan;

/* Create the journal at `path` (refuses an existing file) for plan `p`, durably. */
int journal_create(const char *path, const struct plan *p);
/* Set the journal's "state" field, durably. */
int journal_mark(const char *path, const char *state);
/* A new timestamped path in the state directory (created if needed); malloc'd. */
char *journal_default_path(int64_t vm_id);
/* The catalog URI recorded in a journal (malloc'd). */
int journal_catalog_uri(const char *path, char **uri);
/* Restore the before-images, only where the rows still hold the after-images; refuses (and
 * lists the rows) when any row holds neither.  Progress goes to `out`. */
int journal_rollback(struct catalog *c, const char *path, FILE *out);

#endif
