/* ferry send: a volume as one stream on stdout (backends/stream.h), for `ferry receive` at
 * the other end of a pipe: `ferry send vol | ssh host ferry receive /dev/vg/vol`.  The copy
 * engine reads the source (data extents only, many requests in flight, retries); its workers
 * compress and hash the chunks; they are written in order.
 */
#include "backends/copy.h"
#include "backends/stream.h"
#include "backends/volume.h"
#include "backends/zst-write.h"
#include "common/error.h"
#include "common/log.h"
#include "common/progress.h"
#include "common/ratelimit.h"
#include "common/util.h"
#include "frontend/options.h"
#include "migrator/commands.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void
usage(FILE *f)
{
  fprintf(f, "Usage: ferry send [OPTIONS] SRC > STREAM\n"
             "\n"
             "Write volume SRC to stdout as one stream for `ferry receive`, e.g.\n"
             "  ferry send /dev/vg/vm-disk | ssh host ferry receive /dev/vg/vm-disk\n"
             "Only data is sent: holes and zero extents become one small record each and are\n"
             "never read.  Data is compressed with zstd on several cores and every 1 MiB chunk\n"
             "carries its SHA-256; the stream ends with SRC's block digest (ferry verify\n"
             "--digest), which receive checks.  SRC is a path or volume URI (nbd://, http://,\n"
             "*.zst images).\n"
             "\n"
             "Options:\n");
  char text[64];
  snprintf(text, sizeof text, "zstd level, %d..-1 or 1..%d (default %d)", ZST_MIN_LEVEL,
           ZST_MAX_LEVEL, ZST_DEFAULT_LEVEL);
  frontend_help_line(f, "-l, --level N", text);
  frontend_options_help(f, FRONTEND_VOLUME | FRONTEND_COPY);
  frontend_help_line(f, "-p, --progress", "progress bar on stderr (when it is a terminal)");
  frontend_help_line(f, "    --json", "print a summary object on stderr at the end");
  frontend_options_help(f, FRONTEND_COMMON);
  fprintf(f, "\n"
             "Exit status: 0 sent, 1 failed, 2 bad usage.\n");
}

enum { OPT_JSON = 256 };

/* send's own flags: stdout is the stream, so its report flags are its own (on stderr). */
static const struct option long_options[] = {
  { "level", required_argument, NULL, 'l' },
  { "progress", no_argument, NULL, 'p' },
  { "json", no_argument, NULL, OPT_JSON },
  { NULL, 0, NULL, 0 },
};

struct settings {
  struct frontend_options f; /* --connections --requests --request-size --rate */
  int level;
  bool progress, json;
  const char *src;
};

static int
take_option(void *opaque, int code, const char *arg)
{
  struct settings *s = opaque;
  char *end;
  long l;
  switch (code) {
  case 'l':
    l = strtol(arg, &end, 10);
    if (!*arg || *end || l < ZST_MIN_LEVEL || l > ZST_MAX_LEVEL || l == 0)
      return error_set(EINVAL, "--level: '%s' must be %d..-1 or 1..%d", arg, ZST_MIN_LEVEL,
                       ZST_MAX_LEVEL);
    s->level = (int)l;
    return 0;
  case 'p':
    s->progress = true;
    return 0;
  case OPT_JSON:
    s->json = true;
    return 0;
  }
  return error_set(EINVAL, "option code %d is not understood", code);
}

static const struct frontend_program program = {
  .name = "ferry send",
  .groups = FRONTEND_VOLUME | FRONTEND_COPY,
  .shortopts = "l:p",
  .longopts = long_options,
  .take = take_option,
  .usage = usage,
};

/* -1 to go on, else the exit code. */
static int
parse_args(int argc, char **argv, struct settings *s)
{
  *s = (struct settings){ .level = ZST_DEFAULT_LEVEL };
  frontend_options_init(&s->f);
  s->f.requests = 16;
  s->f.request_size = COPY_DEFAULT_REQUEST_SIZE;
  int rc = frontend_parse(&program, argc, argv, &s->f, s);
  if (rc != FRONTEND_CONTINUE)
    return rc;
  if (argc - optind != 1) {
    if (argc == optind)
      error_set(EINVAL, "missing SRC");
    else
      error_set(EINVAL, "too many arguments: '%s' (only SRC)", argv[optind + 1]);
    return frontend_usage_error(&program);
  }
  s->src = argv[optind];
  if (isatty(STDOUT_FILENO)) {
    error_set(EINVAL, "stdout is a terminal: pipe the stream into `ferry receive` (or a file)");
    return frontend_usage_error(&program);
  }
  return -1;
}

int
cmd_send(int argc, char **argv)
{
  struct settings s;
  int r = parse_args(argc, argv, &s);
  if (r >= 0)
    return r;
  /* A receiver that goes away is an error to report, not a signal to die of. */
  signal(SIGPIPE, SIG_IGN);
  /* A 64 KiB pipe holds 3 ms of a 200 Mbit/s link: any pause of the writer idles the link.
   * 1 MiB (the default maximum) holds a whole chunk.  Best effort. */
  if (fcntl(STDOUT_FILENO, F_GETPIPE_SZ) > 0)
    fcntl(STDOUT_FILENO, F_SETPIPE_SZ, 1 << 20);
  int status = EXIT_FAIL;
  struct volume *src = NULL, *sink = NULL;
  struct ratelimit *rate = NULL;
  struct progress *bar = NULL;
  struct volume_options so;
  volume_options_init(&so);
  so.readonly = true;
  so.sequential = true;
  so.connections = s.f.connections;
  if (volume_open(s.src, &so, &src) < 0
      || stream_writer_open(STDOUT_FILENO, "stdout", src->size, s.level, &sink) < 0)
    goto out;
  struct copy_options o;
  copy_options_init(&o);
  o.workers = s.f.requests;
  o.request_size = s.f.request_size;
  if (s.f.rate && !(o.rate = rate = ratelimit_new(s.f.rate))) {
    error_set(ENOMEM, "out of memory");
    goto out;
  }
  o.progress = bar = progress_new("send", src->size, s.progress);
  struct copy_stats cs;
  struct stream_stats st;
  r = copy_volume(src, sink, &o, &cs);
  if (r == 0)
    r = stream_writer_finish(sink, &st);
  progress_finish(bar);
  if (r < 0)
    goto out;
  debug("send",
        "%s: %" PRIu64 " bytes: %" PRIu64 " data, %" PRIu64 " zero; %" PRIu64
        " bytes sent in %" PRIu64 " records, %.3f s",
        s.src, src->size, st.data_bytes, st.zero_bytes, st.bytes_out, st.records, cs.seconds);
  if (s.json) {
    json_t *j
        = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:s, s:f}", "source", s.src, "size",
                    (json_int_t)src->size, "data_bytes", (json_int_t)st.data_bytes, "zero_bytes",
                    (json_int_t)st.zero_bytes, "bytes_sent", (json_int_t)st.bytes_out, "records",
                    (json_int_t)st.records, "digest", st.digest, "seconds", cs.seconds);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (text)
      fprintf(stderr, "%s\n", text);
    free(text);
    json_decref(j);
  }
  status = EXIT_OK;
out:
  if (status != EXIT_OK)
    log_error("%s", error_message());
  progress_free(bar);
  ratelimit_free(rate);
  volume_close(sink);
  volume_close(src);
  return status;
}
