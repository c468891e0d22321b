/* ferry: a progress bar on stderr, drawn only when stderr is a terminal.  It counts
 * *completed* bytes (callers add after a request finished), never issued ones. */
#ifndef FERRY_PROGRESS_H
#define FERRY_PROGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct progress;

/* enabled=false (or stderr not a tty) gives a bar that draws nothing. */
struct progress *progress_new(const char *label, uint64_t total, bool enabled);
/* Thread-safe; redraws at most a few times a second. */
void progress_add(struct progress *p, uint64_t done_bytes);
void progress_set(struct progress *p, uint64_t done_bytes);
/* Draw the final state and end the line. */
void progress_finish(struct progress *p);
void progress_free(struct progress *p);

/* Render one line "label [#####     ]  42% 1.2 GiB/3.0 GiB 350 MiB/s ETA 0:05" into buf. */
void progress_format(char *buf, size_t len, const char *label, uint64_t done, uint64_t total,
                     double rate, int width);

#endif
