/* ferry: small helpers shared by every program. */
#ifndef FERRY_UTIL_H
#define FERRY_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Parse "65536", "64K", "64KiB", "1M", "2G", "1T" (binary units, case-insensitive, optional
 * "B"/"iB").  Returns 0, or a negative errno with a message naming `what` and the text. */
int parse_size(const char *what, const char *text, uint64_t *out);
/* A rate limit for `what` (e.g. "--rate"): a size, optionally followed by "/s" ("100M",
 * "100M/s").  0 is refused: a flag that is given means a limit. */
int parse_rate(const char *what, const char *text, uint64_t *out);
/* After getopt_long (with a leading ':' in its optstring) returned ':' or '?': set the message
 * "option '--x' needs a value" or "unknown option '--y'" and return -EINVAL. */
int getopt_error(int c, char **argv);
/* Parse a decimal integer in [min, max]; message names `what`. */
int parse_uint(const char *what, const char *text, uint64_t min, uint64_t max, uint64_t *out);

/* "1.5 GiB" into buf (at least 32 bytes); returns buf. */
char *format_size(char *buf, size_t len, double bytes);

/* Monotonic clock in seconds. */
double now_seconds(void);

/* Busy-polling slots, shared by the whole process: a thread that wants to spin on a socket
 * instead of sleeping takes one first (false: all are taken, sleep).  Half the CPUs (at
 * least one), so spinners never crowd out the threads doing the work they wait for. */
bool spin_slot_take(void);
void spin_slot_put(void);

/* An adaptive spin's state (ferry-nbd's spin for requests, the nbd driver's for replies): on
 * until SPIN_MISSES spins in a row run out, on again when a wait that slept without spinning
 * ended within the window (a spin would have caught it).  Zeroed: off. */
#define SPIN_MISSES 4
struct spin {
  bool on;
  unsigned misses;
};
/* After a spin: whether it caught what it waited for. */
void spin_note(struct spin *s, bool caught);
/* After a sleep that no spin preceded: how long it waited, against the window. */
void spin_note_sleep(struct spin *s, double waited, double window);

/* A thread's notice that it is about to sleep waiting for the volume: called before an NBD
 * reply is waited for past the spin, an HTTP request, a wait for a region another thread
 * holds or a zst frame another thread decompresses.  ferry-fuse's solo FUSE reader
 * (fuse-mount/devloop.c) sets one while it answers a request, to hand the device to another
 * thread before it sleeps.  One-shot: wait_hook_run() clears it.  Thread-local. */
void wait_hook_set(void (*fn)(void *), void *arg);
void wait_hook_run(void);

/* Full-length pread/pwrite (retrying short transfers and EINTR); 0 or -errno. */
int full_pread(int fd, void *buf, size_t len, uint64_t off);
int full_pwrite(int fd, const void *buf, size_t len, uint64_t off);
/* fsync the directory holding `path` (after creating, renaming or removing it there): 0, or
 * -errno with "DIR: fsync of the directory of PATH". */
int fsync_parent_dir(const char *path);

static inline bool
is_power_of_two(uint64_t x)
{
  return x && !(x & (x - 1));
}

static inline uint64_t
min_u64(uint64_t a, uint64_t b)
{
  return a < b ? a : b;
}

#endif
