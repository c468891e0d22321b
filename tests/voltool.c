/* voltool: drive one volume through the volume interface, for driver tests.
 *
 * The driver tests use it instead of `ferry copy` so they exercise exactly one driver:
 *   voltool info URI                       size, driver, block sizes, caps (opened read-write
 *                                          unless --readonly)
 *   voltool read URI OFF LEN > out         one volume_pread (split by the dispatcher)
 *   voltool write URI OFF < in             one volume_pwrite of all of stdin
 *   voltool zero URI OFF LEN               volume_zero (--may-trim, --fast-zero, --fua)
 *   voltool trim URI OFF LEN               volume_trim (--fua)
 *   voltool flush URI                      volume_flush
 *   voltool cache URI OFF LEN              volume_cache
 *   voltool extents URI [OFF LEN]          "offset length type" per extent (type as nbdinfo)
 *   voltool cat URI > out                  whole volume, -t threads in parallel (stdout: a file)
 *   voltool put URI < in                   whole stdin file written, -t threads in parallel
 * Exit: 0 ok, 1 the volume op failed (message on stderr), 2 bad usage.
 */
#include "backends/volume.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static struct {
  unsigned threads;
  uint64_t request_size;
  unsigned flags;
} opt = { .threads = 8, .request_size = 1u << 20 };

static void
usage(FILE *f)
{
  fprintf(f, "usage: voltool [OPTIONS] info|read|write|zero|trim|flush|cache|extents|cat|put URI "
             "[OFF [LEN]]\n"
             "  -c, --connections N   driver connections\n"
             "  -t, --threads N       parallel requests for cat/put (default 8)\n"
             "  -r, --request-size N  bytes per request for cat/put (default 1M)\n"
             "      --readonly        open read-only\n"
             "      --retries N       driver retries (http)\n"
             "      --timeout S       driver timeout in seconds (http)\n"
             "      --reconnect-wait S  seconds a request waits for a lost connection (nbd, http)\n"
             "      --fua --may-trim --fast-zero   request flags\n"
             "  -v, --verbose         debug messages\n");
}

static int
die(void)
{
  fprintf(stderr, "voltool: %s\n", error_message());
  return 1;
}

static void
print_info(struct volume *v)
{
  static const struct {
    unsigned cap;
    const char *name;
  } caps[] = {
    { VOLUME_CAN_WRITE, "write" },       { VOLUME_CAN_TRIM, "trim" },
    { VOLUME_CAN_ZERO, "zero" },         { VOLUME_CAN_FAST_ZERO, "fast_zero" },
    { VOLUME_CAN_EXTENTS, "extents" },   { VOLUME_CAN_FUA, "fua" },
    { VOLUME_CAN_FLUSH, "flush" },       { VOLUME_CAN_CACHE, "cache" },
    { VOLUME_MULTI_CONN, "multi_conn" },
  };
  printf("driver: %s\nsize: %" PRIu64 "\nmin_block: %u\npreferred_block: %u\nmax_request: %u\n"
         "caps:",
         v->ops->driver, v->size, v->min_block, v->preferred_block, v->max_request);
  for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++)
    if (v->caps & caps[i].cap)
      printf(" %s", caps[i].name);
  printf("\n");
}

/* cat/put: workers take the next chunk of the volume until done or the first error. */
struct job {
  struct volume *v;
  bool put;
  atomic_uint_fast64_t next;
  atomic_int failed;
  pthread_mutex_t lock;
  char *message; /* first error */
};

static void *
worker(void *arg)
{
  struct job *j = arg;
  char *buf = malloc(opt.request_size);
  if (!buf) {
    error_set(ENOMEM, "out of memory");
    goto fail;
  }
  while (!atomic_load(&j->failed)) {
    uint64_t off = atomic_fetch_add(&j->next, opt.request_size);
    if (off >= j->v->size)
      break;
    size_t n = (size_t)min_u64(opt.request_size, j->v->size - off);
    int r;
    if (j->put) {
      r = full_pread(0, buf, n, off);
      if (r < 0)
        error_set_errno(-r, "stdin: read at %" PRIu64, off);
      else
        r = volume_pwrite(j->v, buf, n, off, opt.flags);
    } else {
      r = volume_pread(j->v, buf, n, off);
      if (r == 0 && (r = full_pwrite(1, buf, n, off)) < 0)
        error_set_errno(-r, "stdout: write at %" PRIu64, off);
    }
    if (r < 0)
      goto fail;
  }
  free(buf);
  error_clear();
  return NULL;
fail:
  free(buf);
  pthread_mutex_lock(&j->lock);
  if (!j->message)
    j->message = strdup(error_message());
  pthread_mutex_unlock(&j->lock);
  atomic_store(&j->failed, 1);
  error_clear();
  return NULL;
}

static int
run_parallel(struct volume *v, bool put)
{
  int fd = put ? 0 : 1;
  struct stat st;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
    error_set(EINVAL, "%s must be a regular file for %s", put ? "stdin" : "stdout",
              put ? "put" : "cat");
    return -1;
  }
  if (put && (uint64_t)st.st_size != v->size) {
    error_set(EINVAL, "stdin is %jd bytes but %s is %" PRIu64, (intmax_t)st.st_size, v->name,
              v->size);
    return -1;
  }
  if (!put && ftruncate(1, (off_t)v->size) < 0) {
    error_set_errno(errno, "stdout: truncate");
    return -1;
  }
  struct job j = { .v = v, .put = put };
  pthread_mutex_init(&j.lock, NULL);
  pthread_t *t = calloc(opt.threads, sizeof *t);
  unsigned started = 0;
  if (t)
    for (; started < opt.threads; started++)
      if (pthread_create(&t[started], NULL, worker, &j) != 0)
        break;
  for (unsigned i = 0; i < started; i++)
    pthread_join(t[i], NULL);
  free(t);
  pthread_mutex_destroy(&j.lock);
  if (started == 0) {
    error_set(EAGAIN, "cannot start threads");
    return -1;
  }
  if (j.message) {
    error_set(EIO, "%s", j.message);
    free(j.message);
    return -1;
  }
  return 0;
}

static int
get_u64(const char *what, const char *text, uint64_t *out)
{
  return parse_size(what, text, out);
}

int
main(int argc, char **argv)
{
  enum {
    OPT_READONLY = 256,
    OPT_RETRIES,
    OPT_TIMEOUT,
    OPT_RECONNECT_WAIT,
    OPT_FUA,
    OPT_MAY_TRIM,
    OPT_FAST_ZERO
  };
  static const struct option longopts[] = {
    { "connections", required_argument, NULL, 'c' },
    { "threads", required_argument, NULL, 't' },
    { "request-size", required_argument, NULL, 'r' },
    { "readonly", no_argument, NULL, OPT_READONLY },
    { "retries", required_argument, NULL, OPT_RETRIES },
    { "timeout", required_argument, NULL, OPT_TIMEOUT },
    { "reconnect-wait", required_argument, NULL, OPT_RECONNECT_WAIT },
    { "fua", no_argument, NULL, OPT_FUA },
    { "may-trim", no_argument, NULL, OPT_MAY_TRIM },
    { "fast-zero", no_argument, NULL, OPT_FAST_ZERO },
    { "verbose", no_argument, NULL, 'v' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  log_init("voltool");
  struct volume_options vo;
  volume_options_init(&vo);
  uint64_t n;
  int c;
  while ((c = getopt_long(argc, argv, "c:t:r:vh", longopts, NULL)) != -1) {
    switch (c) {
    case 'c':
      if (parse_uint("--connections", optarg, 1, 64, &n) < 0)
        goto bad;
      vo.connections = (unsigned)n;
      break;
    case 't':
      if (parse_uint("--threads", optarg, 1, 256, &n) < 0)
        goto bad;
      opt.threads = (unsigned)n;
      break;
    case 'r':
      if (parse_size("--request-size", optarg, &opt.request_size) < 0 || !opt.request_size)
        goto bad;
      break;
    case OPT_READONLY:
      vo.readonly = true;
      break;
    case OPT_RETRIES:
      if (parse_uint("--retries", optarg, 0, 100, &n) < 0)
        goto bad;
      vo.retries = (unsigned)n;
      break;
    case OPT_TIMEOUT:
      if (parse_uint("--timeout", optarg, 1, 3600, &n) < 0)
        goto bad;
      vo.timeout = (double)n;
      break;
    case OPT_RECONNECT_WAIT:
      if (parse_uint("--reconnect-wait", optarg, 1, 3600, &n) < 0)
        goto bad;
      vo.reconnect_wait = (double)n;
      break;
    case OPT_FUA:
      opt.flags |= VOLUME_FUA;
      break;
    case OPT_MAY_TRIM:
      opt.flags |= VOLUME_MAY_TRIM;
      break;
    case OPT_FAST_ZERO:
      opt.flags |= VOLUME_FAST_ZERO;
      break;
    case 'v':
      log_set_verbose(true);
      break;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  if (argc - optind < 2) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[optind], *uri = argv[optind + 1];
  char **rest = argv + optind + 2;
  int nrest = argc - optind - 2;
  uint64_t off = 0, len = 0;
  bool want_range = !strcmp(cmd, "read") || !strcmp(cmd, "zero") || !strcmp(cmd, "trim")
                    || !strcmp(cmd, "cache");
  if (want_range
      && (nrest != 2 || get_u64("offset", rest[0], &off) < 0
          || get_u64("length", rest[1], &len) < 0))
    goto bad_args;
  if (!strcmp(cmd, "write") && (nrest != 1 || get_u64("offset", rest[0], &off) < 0))
    goto bad_args;
  if (!strcmp(cmd, "extents") && nrest != 0
      && (nrest != 2 || get_u64("offset", rest[0], &off) < 0
          || get_u64("length", rest[1], &len) < 0))
    goto bad_args;
  if (!want_range && strcmp(cmd, "write") && strcmp(cmd, "extents") && nrest != 0)
    goto bad_args;

  bool writes = !strcmp(cmd, "write") || !strcmp(cmd, "zero") || !strcmp(cmd, "trim")
                || !strcmp(cmd, "put") || !strcmp(cmd, "flush") || !strcmp(cmd, "info");
  if (!writes)
    vo.readonly = true;
  if (strcmp(cmd, "info") && strcmp(cmd, "read") && strcmp(cmd, "write") && strcmp(cmd, "zero")
      && strcmp(cmd, "trim") && strcmp(cmd, "flush") && strcmp(cmd, "cache")
      && strcmp(cmd, "extents") && strcmp(cmd, "cat") && strcmp(cmd, "put")) {
    fprintf(stderr, "voltool: unknown command '%s'\n", cmd);
    return 2;
  }

  struct volume *v;
  if (volume_open(uri, &vo, &v) < 0)
    return die();
  /* $VOLTOOL_START_AFTER=FILE: open, then wait for FILE before the command (a test takes the
   * server down in between). */
  const char *start_gate = getenv("VOLTOOL_START_AFTER");
  while (start_gate && *start_gate && access(start_gate, F_OK) != 0)
    usleep(20000);
  int r = 0;
  if (!strcmp(cmd, "info")) {
    print_info(v);
  } else if (!strcmp(cmd, "read")) {
    char *buf = malloc(len ? len : 1);
    if (!buf)
      r = error_set(ENOMEM, "out of memory");
    if (r == 0 && (r = volume_pread(v, buf, len, off)) == 0 && fwrite(buf, 1, len, stdout) != len)
      r = error_set(EIO, "stdout: short write");
    free(buf);
  } else if (!strcmp(cmd, "write")) {
    size_t cap = 1 << 20, got = 0;
    char *buf = malloc(cap);
    size_t k;
    while (buf && (k = fread(buf + got, 1, cap - got, stdin)) > 0) {
      got += k;
      if (got == cap) {
        char *nb = realloc(buf, cap * 2);
        if (!nb) {
          free(buf);
          buf = NULL;
          break;
        }
        buf = nb;
        cap *= 2;
      }
    }
    if (!buf)
      r = error_set(ENOMEM, "out of memory");
    else
      r = volume_pwrite(v, buf, got, off, opt.flags);
    free(buf);
    /* $VOLTOOL_FLUSH_AFTER=FILE: once FILE exists, flush (a test restarts the server in
     * between: the flush must then say the write may be lost). */
    const char *gate = getenv("VOLTOOL_FLUSH_AFTER");
    if (r == 0 && gate && *gate) {
      while (access(gate, F_OK) != 0)
        usleep(20000);
      r = volume_flush(v);
    }
  } else if (!strcmp(cmd, "zero")) {
    r = volume_zero(v, len, off, opt.flags);
  } else if (!strcmp(cmd, "trim")) {
    r = volume_trim(v, len, off, opt.flags);
  } else if (!strcmp(cmd, "flush")) {
    r = volume_flush(v);
  } else if (!strcmp(cmd, "cache")) {
    r = volume_cache(v, len, off);
  } else if (!strcmp(cmd, "extents")) {
    if (nrest == 0)
      len = v->size;
    struct extent_list l = { 0 };
    uint64_t end = off + len;
    /* One list across calls: extent_list_add merges neighbours with equal flags. */
    while (r == 0 && off < end) {
      if ((r = volume_extents(v, end - off, off, &l)) < 0)
        break;
      off = l.v[l.n - 1].offset + l.v[l.n - 1].length;
    }
    for (size_t i = 0; r == 0 && i < l.n; i++)
      printf("%" PRIu64 " %" PRIu64 " %u\n", l.v[i].offset, l.v[i].length, l.v[i].flags);
    extent_list_free(&l);
  } else {
    r = run_parallel(v, !strcmp(cmd, "put"));
  }
  if (r < 0) {
    fprintf(stderr, "voltool: %s\n", error_message());
    volume_close(v);
    error_clear();
    return 1;
  }
  volume_close(v);
  error_clear();
  return fflush(stdout) == 0 ? 0 : 1;

bad:
  fprintf(stderr, "voltool: %s\n", error_message());
  error_clear();
  return 2;
bad_args:
  fprintf(stderr, "voltool: %s: wrong arguments\n", cmd);
  usage(stderr);
  error_clear();
  return 2;
}
