/* ferry: small helpers, see util.h. */
#include "common/util.h"
#include "common/error.h"

#include <ctype.h>
#include <fcntl.h>
#include <libgen.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static _Atomic int spin_slots = -1; /* free slots; -1 until first used */

bool
spin_slot_take(void)
{
  int n = atomic_load(&spin_slots);
  if (n < 0) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int want = cpus > 1 ? (int)(cpus / 2) : 1;
    atomic_compare_exchange_strong(&spin_slots, &n, want);
    n = atomic_load(&spin_slots);
  }
  while (n > 0)
    if (atomic_compare_exchange_weak(&spin_slots, &n, n - 1))
      return true;
  return false;
}

void
spin_slot_put(void)
{
  atomic_fetch_add(&spin_slots, 1);
}

void
spin_note(struct spin *s, bool caught)
{
  if (caught)
    s->misses = 0;
  else if (++s->misses >= SPIN_MISSES)
    s->on = false;
}

void
spin_note_sleep(struct spin *s, double waited, double window)
{
  if (waited <= window) {
    s->on = true;
    s->misses = 0;
  }
}

static _Thread_local void (*wait_hook_fn)(void *);
static _Thread_local void *wait_hook_arg;

void
wait_hook_set(void (*fn)(void *), void *arg)
{
  wait_hook_fn = fn;
  wait_hook_arg = arg;
}

void
wait_hook_run(void)
{
  void (*fn)(void *) = wait_hook_fn;
  if (fn) {
    wait_hook_fn = NULL;
    fn(wait_hook_arg);
  }
}

int
parse_size(const char *what, const char *text, uint64_t *out)
{
  if (!text || !*text || !isdigit((unsigned char)text[0]))
    return error_set(EINVAL, "%s: '%s' is not a size (expected e.g. 65536, 64K, 4M, 2G)", what,
                     text ? text : "");
  errno = 0;
  char *end;
  unsigned long long v = strtoull(text, &end, 10);
  if (errno == ERANGE)
    return error_set(ERANGE, "%s: '%s' is too large", what, text);
  unsigned shift = 0;
  if (*end) {
    switch (toupper((unsigned char)*end)) {
    case 'K': shift = 10; break;
    case 'M': shift = 20; break;
    case 'G': shift = 30; break;
    case 'T': shift = 40; break;
    case 'P': shift = 50; break;
    case 'E': shift = 60; break;
    case 'B': shift = 0; break;
    default:
      return error_set(EINVAL, "%s: '%s' has an unknown unit (use K, M, G, T)", what, text);
    }
    const char *rest = end + 1;
    if (toupper((unsigned char)*end) == 'B')
      rest = end + 1;
    else if (strcasecmp(rest, "iB") == 0 || strcasecmp(rest, "B") == 0)
      rest += strlen(rest);
    if (*rest)
      return error_set(EINVAL, "%s: '%s' has trailing characters", what, text);
  }
  if (shift && v > (UINT64_MAX >> shift))
    return error_set(ERANGE, "%s: '%s' is too large", what, text);
  *out = (uint64_t)v << shift;
  return 0;
}

int
parse_rate(const char *what, const char *text, uint64_t *out)
{
  size_t n = strlen(text);
  int r;
  if (n >= 2 && strcmp(text + n - 2, "/s") == 0) {
    char *number = strndup(text, n - 2);
    if (!number)
      return error_set(ENOMEM, "%s: out of memory", what);
    r = parse_size(what, number, out);
    free(number);
    if (r < 0)
      return error_set(-r, "%s: '%s' is not a rate (expected e.g. 100M or 100M/s)", what, text);
  } else if ((r = parse_size(what, text, out)) < 0)
    return r;
  if (*out == 0)
    return error_set(EINVAL, "%s: '%s' must be more than 0 bytes/s", what, text);
  return 0;
}

int
getopt_error(int c, char **argv)
{
  if (c == ':')
    return error_set(EINVAL, "option '%s' needs a value", argv[optind - 1]);
  if (optopt)
    return error_set(EINVAL, "unknown option '-%c'", optopt);
  return error_set(EINVAL, "unknown option '%s'", argv[optind - 1]);
}

int
parse_uint(const char *what, const char *text, uint64_t min, uint64_t max, uint64_t *out)
{
  if (!text || !*text || !isdigit((unsigned char)text[0]))
    return error_set(EINVAL, "%s: '%s' is not a number", what, text ? text : "");
  errno = 0;
  char *end;
  unsigned long long v = strtoull(text, &end, 10);
  if (*end)
    return error_set(EINVAL, "%s: '%s' is not a number", what, text);
  if (errno == ERANGE || v < min || v > max)
    return error_set(ERANGE, "%s: %s is out of range (%llu..%llu)", what, text,
                     (unsigned long long)min, (unsigned long long)max);
  *out = v;
  return 0;
}

char *
format_size(char *buf, size_t len, double bytes)
{
  static const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
  unsigned u = 0;
  while (bytes >= 1024 && u + 1 < sizeof units / sizeof units[0]) {
    bytes /= 1024;
    u++;
  }
  if (u == 0)
    snprintf(buf, len, "%.0f %s", bytes, units[u]);
  else
    snprintf(buf, len, "%.1f %s", bytes, units[u]);
  return buf;
}

double
now_seconds(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int
full_pread(int fd, void *buf, size_t len, uint64_t off)
{
  char *p = buf;
  while (len > 0) {
    ssize_t r = pread(fd, p, len, (off_t)off);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    if (r == 0) /* past the end of a file that shrank: the caller checked bounds */
      return -EIO;
    p += r;
    len -= (size_t)r;
    off += (uint64_t)r;
  }
  return 0;
}

int
full_pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
  const char *p = buf;
  while (len > 0) {
    ssize_t r = pwrite(fd, p, len, (off_t)off);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    p += r;
    len -= (size_t)r;
    off += (uint64_t)r;
  }
  return 0;
}

int
fsync_parent_dir(const char *path)
{
  char *copy = strdup(path);
  if (!copy)
    return error_set(ENOMEM, "out of memory");
  const char *dir = dirname(copy);
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int r = 0;
  if (fd < 0 || fsync(fd) < 0)
    r = error_set_errno(errno, "%s: fsync of the directory of %s", dir, path);
  if (fd >= 0)
    close(fd);
  free(copy);
  return r;
}
