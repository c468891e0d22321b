/* ferry copy: parallel, sparse-aware copy of one volume to another (backends/copy.h).
 *
 * The destination is opened before anything is written: a path that does not exist is
 * created with the source's size (and removed again if the copy fails, so a failed copy
 * never leaves a plausible-looking image behind); an existing destination smaller than the
 * source is refused untouched.  The destination is flushed at the end unless --no-flush.
 * A DST named *.zst (or --compress) is a seekable zstd image written by backends/zst-write.h;
 * a plain .zst SRC is read in order (volume_options.sequential).
 */
#include "backends/copy.h"
#include "backends/volume.h"
#include "backends/zst-format.h"
#include "backends/zst-write.h"
#include "common/error.h"
#include "common/log.h"
#include "common/progress.h"
#include "common/ratelimit.h"
#include "common/util.h"
#include "frontend/options.h"
#include "migrator/commands.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void
usage(FILE *f)
{
  fprintf(f, "Usage: ferry copy [OPTIONS] SRC DST\n"
             "\n"
             "Copy volume SRC to DST with many requests in flight.  Zero and hole extents of\n"
             "the source are never read: they become holes (or zeroes) on DST.  SRC and DST are\n"
             "paths, file:///path, nbd://host[:port]/export, nbd+unix:///export?socket=PATH, or\n"
             "(SRC only) http(s)://.  A DST path that does not exist is created with SRC's size;\n"
             "an existing DST smaller than SRC is refused before anything is written.\n"
             "A SRC named *.zst is a zstd image (seekable, or plain: read in order); a DST named\n"
             "*.zst (or - for stdout, with --compress) becomes a seekable zstd image.\n"
             "\n"
             "Options:\n");
  frontend_options_help(f, FRONTEND_VOLUME);
  frontend_options_help(f, FRONTEND_COPY);
  frontend_help_line(f, "    --sparse", "skip zero/hole extents and zero blocks (default)");
  frontend_help_line(f, "    --no-sparse", "copy every byte as data (fully allocated DST)");
  frontend_help_line(f, "    --flush", "flush DST at the end (default)");
  frontend_help_line(f, "    --no-flush", "do not flush DST (data may still be in a cache)");
  frontend_help_line(f, "    --compress zstd[:LEVEL]",
                     "write DST as a seekable zstd image (level 3)");
  frontend_options_help(f, FRONTEND_REPORT | FRONTEND_COMMON);
  fprintf(f, "\n"
             "Exit status: 0 copied (and flushed), 1 the copy failed, 2 bad usage.\n");
}

enum { OPT_SPARSE = 256, OPT_NO_SPARSE, OPT_FLUSH, OPT_NO_FLUSH, OPT_COMPRESS };

/* ferry copy's own flags; the volume, copy and report flags come from frontend/options.c. */
static const struct option long_options[] = {
  { "sparse", no_argument, NULL, OPT_SPARSE },
  { "no-sparse", no_argument, NULL, OPT_NO_SPARSE },
  { "flush", no_argument, NULL, OPT_FLUSH },
  { "no-flush", no_argument, NULL, OPT_NO_FLUSH },
  { "compress", required_argument, NULL, OPT_COMPRESS },
  { NULL, 0, NULL, 0 },
};

struct settings {
  struct frontend_options f; /* --connections --requests --request-size --rate ... */
  bool flush, sparse;
  int level; /* zstd level of a compressed DST; 0: DST is not compressed */
  const char *src, *dst;
};

static int
take_option(void *opaque, int code, const char *arg)
{
  struct settings *s = opaque;
  switch (code) {
  case OPT_COMPRESS:
    return zst_parse_compress("--compress", arg, &s->level) < 0 ? -1 : 0;
  case OPT_SPARSE:
  case OPT_NO_SPARSE:
    s->sparse = code == OPT_SPARSE;
    return 0;
  case OPT_FLUSH:
  case OPT_NO_FLUSH:
    s->flush = code == OPT_FLUSH;
    return 0;
  }
  return error_set(EINVAL, "option code %d is not understood", code);
}

static const struct frontend_program program = {
  .name = "ferry copy",
  .groups = FRONTEND_VOLUME | FRONTEND_COPY | FRONTEND_REPORT,
  .longopts = long_options,
  .take = take_option,
  .usage = usage,
};

/* -1 to go on, else the exit code (0 after --help, 2 after a usage message). */
static int
parse_args(int argc, char **argv, struct settings *s)
{
  *s = (struct settings){ .flush = true, .sparse = true };
  frontend_options_init(&s->f);
  s->f.requests = 16;
  s->f.request_size = COPY_DEFAULT_REQUEST_SIZE;
  int rc = frontend_parse(&program, argc, argv, &s->f, s);
  if (rc != FRONTEND_CONTINUE)
    return rc;
  int n = argc - optind;
  if (n != 2) {
    if (n == 0)
      error_set(EINVAL, "missing SRC and DST");
    else if (n == 1)
      error_set(EINVAL, "missing DST (after SRC '%s')", argv[optind]);
    else
      error_set(EINVAL, "too many arguments: '%s' (need only SRC and DST)", argv[optind + 2]);
    return frontend_usage_error(&program);
  }
  s->src = argv[optind];
  s->dst = argv[optind + 1];
  if (!s->level && zst_name_matches(s->dst))
    s->level = ZST_DEFAULT_LEVEL;
  if (strcmp(s->dst, "-") == 0 && !s->level) {
    error_set(EINVAL, "DST '-' (stdout) needs --compress zstd");
    return frontend_usage_error(&program);
  }
  return -1;
}

/* A plain path or file:// URI (which we may create), not a network volume. */
static const char *
local_path(const char *uri)
{
  if (strncmp(uri, "file://", 7) == 0)
    return uri + 7;
  return strstr(uri, "://") ? NULL : uri;
}

/* Open DST: existing, or created with `size` bytes when it is a path that does not exist. */
static int
open_destination(const struct settings *s, uint64_t size, struct volume **out, bool *created)
{
  struct volume_options o;
  volume_options_init(&o);
  o.connections = s->f.connections;
  o.write_behind = true; /* file: keep the page cache small, the final flush short */
  *created = false;
  const char *path = local_path(s->dst);
  if (s->level) {
    const char *zpath = path && strncmp(path, "zst:", 4) == 0 ? local_path(path + 4) : path;
    if (!zpath)
      return error_set(EINVAL, "%s: a compressed image is written to a local file or - (stdout)",
                       s->dst);
    return zst_writer_open(zpath, size, s->level, out);
  }
  if (path && access(path, F_OK) < 0 && errno == ENOENT) {
    o.create = true;
    o.create_size = size;
    *created = true;
  }
  int r = volume_open(s->dst, &o, out);
  if (r < 0) {
    *created = false;
    return r;
  }
  if ((*out)->size < size) {
    r = error_set(
        ENOSPC, "%s: destination is %" PRIu64 " bytes, smaller than the source (%" PRIu64 " bytes)",
        s->dst, (*out)->size, size);
    volume_close(*out);
    *out = NULL;
    return r;
  }
  return 0;
}

/* Ctrl-C, SIGTERM or SIGHUP during the copy: the signals are blocked in every thread but one
 * that waits for them, stops the workers and wakes any waiting on the rate limit.  The copy
 * then fails like any other (exit 1, a destination we created removed) instead of dying with
 * a half-written image.  SIGUSR1 from ourselves ends the waiting thread. */
struct interrupt {
  pthread_t thread;
  bool started;
  sigset_t set, old;
  volatile int stop;
  volatile int signal;
  struct ratelimit *rate;
};

static void *
interrupt_main(void *arg)
{
  struct interrupt *in = arg;
  for (;;) {
    int sig = 0;
    if (sigwait(&in->set, &sig) != 0 || sig == SIGUSR1)
      return NULL;
    in->signal = sig;
    in->stop = 1;
    if (in->rate)
      ratelimit_wake(in->rate);
  }
}

static void
interrupt_start(struct interrupt *in, struct ratelimit *rate)
{
  sigemptyset(&in->set);
  sigaddset(&in->set, SIGINT);
  sigaddset(&in->set, SIGTERM);
  sigaddset(&in->set, SIGHUP);
  sigaddset(&in->set, SIGUSR1);
  in->rate = rate;
  /* Blocked before the workers start, so they inherit it. */
  pthread_sigmask(SIG_BLOCK, &in->set, &in->old);
  in->started = pthread_create(&in->thread, NULL, interrupt_main, in) == 0;
}

static void
interrupt_end(struct interrupt *in)
{
  if (in->started) {
    pthread_kill(in->thread, SIGUSR1);
    pthread_join(in->thread, NULL);
  }
  pthread_sigmask(SIG_SETMASK, &in->old, NULL);
}

static void
print_json(const struct settings *s, uint64_t size, const struct copy_stats *st, double seconds,
           const struct zst_write_stats *z)
{
  json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:f}", "source", s->src, "destination",
                        s->dst, "size", (json_int_t)size, "bytes_read", (json_int_t)st->bytes_read,
                        "bytes_written", (json_int_t)st->bytes_written, "bytes_zeroed",
                        (json_int_t)st->bytes_zeroed, "seconds", seconds);
  if (!o)
    return;
  if (s->level)
    json_object_set_new(o, "compressed_size", json_integer((json_int_t)z->compressed_bytes));
  char *text = json_dumps(o, JSON_COMPACT);
  if (text)
    printf("%s\n", text);
  free(text);
  json_decref(o);
}

/* Open both volumes, copy, flush; the exit code. */
static int
run(const struct settings *s)
{
  int r;
  int status = EXIT_FAIL;
  struct volume *src = NULL, *dst = NULL;
  struct ratelimit *rate = NULL;
  struct progress *bar = NULL;
  bool created = false;
  double start = now_seconds();

  struct volume_options so;
  volume_options_init(&so);
  so.readonly = true;
  so.connections = s->f.connections;
  so.sequential = true; /* a plain .zst: read in order by one worker */
  if (volume_open(s->src, &so, &src) < 0)
    goto out;
  if (open_destination(s, src->size, &dst, &created) < 0)
    goto out;

  struct copy_options o;
  copy_options_init(&o);
  o.workers = s->f.requests;
  o.request_size = s->f.request_size;
  o.sparse = s->sparse;
  /* A file we just created is all holes: zero ranges need no request.  An existing
   * destination holds old data, so its zero ranges are really zeroed. */
  o.dst_is_zero = created && s->sparse;
  if (s->f.rate) {
    if (!(rate = ratelimit_new(s->f.rate))) {
      error_set(ENOMEM, "out of memory");
      goto out;
    }
    o.rate = rate;
  }
  bar = progress_new("copy", src->size, s->f.progress);
  o.progress = bar;

  struct interrupt intr = { .stop = 0 };
  o.stop = &intr.stop;
  interrupt_start(&intr, rate);
  struct copy_stats st;
  struct zst_write_stats zst = { 0 };
  r = copy_volume(src, dst, &o, &st);
  /* Success is reported only for data that is durable (unless --no-flush).  A compressed
   * image is always completed that way: its name appears only then. */
  if (r == 0 && s->level)
    r = zst_writer_finish(dst, &zst);
  else if (r == 0 && s->flush)
    r = volume_flush(dst);
  interrupt_end(&intr);
  progress_finish(bar);
  if (intr.stop)
    r = error_set(EINTR, "%s: copy interrupted by SIG%s", s->dst, sigabbrev_np(intr.signal));
  if (r < 0)
    goto out;
  double seconds = now_seconds() - start;
  debug("copy", "%" PRIu64 " bytes read, %" PRIu64 " written, %" PRIu64 " zeroed in %.3fs",
        st.bytes_read, st.bytes_written, st.bytes_zeroed, seconds);
  if (s->f.json)
    print_json(s, src->size, &st, seconds, &zst);
  status = EXIT_OK;

out:
  if (status != EXIT_OK)
    log_error("%s", error_message());
  progress_free(bar);
  ratelimit_free(rate);
  volume_close(dst);
  volume_close(src);
  if (status != EXIT_OK && created) {
    /* Never leave a half-copied new image that looks like a good one. */
    if (unlink(local_path(s->dst)) == 0)
      fprintf(stderr, "ferry copy: removed the incomplete %s\n", s->dst);
  }
  return status;
}

int
cmd_copy(int argc, char **argv)
{
  struct settings s;
  int r = parse_args(argc, argv, &s);
  return r >= 0 ? r : run(&s);
}
