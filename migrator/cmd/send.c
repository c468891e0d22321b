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
#include "migrator/commands.h"

#include <errno.h>
#include <getopt.h>
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
  fprintf(f,
          "Usage: ferry send [OPTIONS] SRC > STREAM\n"
          "\n"
          "Write volume SRC to stdout as one stream for `ferry receive`, e.g.\n"
          "  ferry send /dev/vg/vm-disk | ssh host ferry receive /dev/vg/vm-disk\n"
          "Only data is sent: holes and zero extents become one small record each and are\n"
          "never read.  Data is compressed with zstd on several cores and every 1 MiB chunk\n"
          "carries its SHA-256; the stream ends with SRC's block digest (ferry verify\n"
          "--digest), which receive checks.  SRC is a path or volume URI (nbd://, http://,\n"
          "*.zst images).\n"
          "\n"
          "Options:\n"
          "  -l, --level N           zstd level, %d..%d (default %d; 1 is faster)\n"
          "  -R, --requests N        chunks in flight: reading and compressing (default 16)\n"
          "  -C, --connections N     connections to an nbd/http source (default: driver's)\n"
          "      --rate BYTES/s      limit the source read rate, e.g. 100M\n"
          "  -p, --progress          progress bar on stderr (when it is a terminal)\n"
          "      --json              print a summary object on stderr at the end\n"
          "  -v, --verbose           debug messages on stderr\n"
          "  -h, --help              this text\n"
          "\n"
          "Exit status: 0 sent, 1 failed, 2 bad usage.\n",
          ZST_MIN_LEVEL, ZST_MAX_LEVEL, ZST_DEFAULT_LEVEL);
}

enum { OPT_RATE = 256, OPT_JSON };

static const struct option long_options[] = {
  { "level", required_argument, NULL, 'l' },
  { "requests", required_argument, NULL, 'R' },
  { "connections", required_argument, NULL, 'C' },
  { "rate", required_argument, NULL, OPT_RATE },
  { "progress", no_argument, NULL, 'p' },
  { "json", no_argument, NULL, OPT_JSON },
  { "verbose", no_argument, NULL, 'v' },
  { "help", no_argument, NULL, 'h' },
  { NULL, 0, NULL, 0 },
};

struct settings {
  int level;
  unsigned requests, connections;
  uint64_t rate;
  bool progress, json;
  const char *src;
};

static int
bad_usage(void)
{
  fprintf(stderr, "ferry send: %s\nTry 'ferry send --help'.\n", error_message());
  return EXIT_USAGE;
}

static int
parse_args(int argc, char **argv, struct settings *s)
{
  uint64_t v;
  int c;
  opterr = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, ":l:R:C:pvh", long_options, NULL)) != -1) {
    switch (c) {
    case 'l': {
      char *end;
      long l = strtol(optarg, &end, 10);
      if (!*optarg || *end || l < ZST_MIN_LEVEL || l > ZST_MAX_LEVEL || l == 0) {
        error_set(EINVAL, "--level: '%s' must be %d..-1 or 1..%d", optarg, ZST_MIN_LEVEL,
                  ZST_MAX_LEVEL);
        return bad_usage();
      }
      s->level = (int)l;
      break;
    }
    case 'R':
      if (parse_uint("--requests", optarg, 1, 1024, &v) < 0)
        return bad_usage();
      s->requests = (unsigned)v;
      break;
    case 'C':
      if (parse_uint("--connections", optarg, 1, 64, &v) < 0)
        return bad_usage();
      s->connections = (unsigned)v;
      break;
    case OPT_RATE:
      if (parse_rate("--rate", optarg, &s->rate) < 0)
        return bad_usage();
      break;
    case 'p':
      s->progress = true;
      break;
    case OPT_JSON:
      s->json = true;
      break;
    case 'v':
      log_set_verbose(true);
      break;
    case 'h':
      usage(stdout);
      exit(EXIT_OK);
    default:
      getopt_error(c, argv);
      return bad_usage();
    }
  }
  if (argc - optind != 1) {
    if (argc == optind)
      error_set(EINVAL, "missing SRC");
    else
      error_set(EINVAL, "too many arguments: '%s' (only SRC)", argv[optind + 1]);
    return bad_usage();
  }
  s->src = argv[optind];
  if (isatty(STDOUT_FILENO)) {
    error_set(EINVAL, "stdout is a terminal: pipe the stream into `ferry receive` (or a file)");
    return bad_usage();
  }
  return 0;
}

int
cmd_send(int argc, char **argv)
{
  struct settings s = { .level = ZST_DEFAULT_LEVEL, .requests = 16 };
  int r = parse_args(argc, argv, &s);
  if (r)
    return r;
  /* A receiver that goes away is an error to report, not a signal to die of. */
  signal(SIGPIPE, SIG_IGN);
  int status = EXIT_FAIL;
  struct volume *src = NULL, *sink = NULL;
  struct ratelimit *rate = NULL;
  struct progress *bar = NULL;
  struct volume_options so;
  volume_options_init(&so);
  so.readonly = true;
  so.sequential = true;
  so.connections = s.connections;
  if (volume_open(s.src, &so, &src) < 0
      || stream_writer_open(STDOUT_FILENO, "stdout", src->size, s.level, &sink) < 0)
    goto out;
  struct copy_options o;
  copy_options_init(&o);
  o.workers = s.requests;
  if (s.rate && !(o.rate = rate = ratelimit_new(s.rate))) {
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
