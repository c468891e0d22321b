/* ferry: a token bucket shared by workers (hydrator --rate, ferry copy --rate).  The rate
 * can change at run time (control socket set-rate); 0 means unlimited. */
#ifndef FERRY_RATELIMIT_H
#define FERRY_RATELIMIT_H

#include <stdint.h>

struct ratelimit;

struct ratelimit *ratelimit_new(uint64_t bytes_per_second);
void ratelimit_set(struct ratelimit *rl, uint64_t bytes_per_second);
uint64_t ratelimit_get(struct ratelimit *rl);
/* Block until `bytes` may pass; returns at once when unlimited.  Wakes early on
 * ratelimit_set or ratelimit_wake (so a stopping worker is not stuck for long). */
void ratelimit_take(struct ratelimit *rl, uint64_t bytes);
void ratelimit_wake(struct ratelimit *rl);
void ratelimit_free(struct ratelimit *rl);

#endif
