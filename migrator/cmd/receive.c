/* ferry receive: write the stream of `ferry send` (backends/stream.h) from stdin to a volume,
 * checking every chunk and, at the end, the whole volume's digest. */
#include "backends/stream.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "frontend/options.h"
#include "migrator/commands.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void
usage(FILE *f)
{
  fprintf(f,
          "Usage: ferry receive [OPTIONS] DST < STREAM\n"
          "\n"
          "Write the stream of `ferry send` from stdin to volume DST.  A DST path that does\n"
          "not exist is created with the stream's size (and removed again if the stream fails);\n"
          "a DST smaller than the stream's volume is refused before anything is written; a DST\n"
          "named *.zst becomes a seekable zstd image.  Every chunk's SHA-256 is checked before\n"
          "it is written, and at the end the volume's block digest (printed) against the one\n"
          "sent.  A stream that stops early fails, saying where: everything before that offset\n"
          "is written.\n"
          "\n"
          "Options:\n");
  frontend_help_line(f, "-R, --workers N", "decompressing writers (default: one per CPU)");
  frontend_help_line(f, "    --no-flush", "do not flush DST at the end");
  frontend_help_line(f, "-q, --quiet", "print nothing on success");
  frontend_options_help(f, FRONTEND_VOLUME | FRONTEND_REPORT | FRONTEND_COMMON);
  fprintf(f, "\n"
             "Exit status: 0 received and verified, 1 failed, 2 bad usage.\n");
}

enum { OPT_NO_FLUSH = 256 };

static const struct option long_options[] = {
  { "workers", required_argument, NULL, 'R' },
  { "no-flush", no_argument, NULL, OPT_NO_FLUSH },
  { "quiet", no_argument, NULL, 'q' },
  { NULL, 0, NULL, 0 },
};

struct settings {
  struct frontend_options f; /* --connections --progress --json */
  struct receive_options o;
  bool quiet;
};

static int
take_option(void *opaque, int code, const char *arg)
{
  struct settings *s = opaque;
  uint64_t v;
  switch (code) {
  case 'R':
    if (parse_uint("--workers", arg, 1, 256, &v) < 0)
      return -1;
    s->o.workers = (unsigned)v;
    return 0;
  case OPT_NO_FLUSH:
    s->o.flush = false;
    return 0;
  case 'q':
    s->quiet = true;
    return 0;
  }
  return error_set(EINVAL, "option code %d is not understood", code);
}

static const struct frontend_program program = {
  .name = "ferry receive",
  .groups = FRONTEND_VOLUME | FRONTEND_REPORT,
  .shortopts = "R:q",
  .longopts = long_options,
  .take = take_option,
  .usage = usage,
};

int
cmd_receive(int argc, char **argv)
{
  struct settings s = { .quiet = false };
  receive_options_init(&s.o);
  frontend_options_init(&s.f);
  int rc = frontend_parse(&program, argc, argv, &s.f, &s);
  if (rc != FRONTEND_CONTINUE)
    return rc;
  struct receive_options o = s.o;
  o.connections = s.f.connections;
  o.show_progress = s.f.progress;
  bool json = s.f.json, quiet = s.quiet;
  if (argc - optind != 1) {
    if (argc == optind)
      error_set(EINVAL, "missing DST");
    else
      error_set(EINVAL, "too many arguments: '%s' (only DST)", argv[optind + 1]);
    return frontend_usage_error(&program);
  }
  const char *dst = argv[optind];
  if (isatty(STDIN_FILENO)) {
    error_set(EINVAL, "stdin is a terminal: pipe `ferry send` into it");
    return frontend_usage_error(&program);
  }
  /* As in send: a bigger pipe rides out the reader's pauses.  Best effort. */
  if (fcntl(STDIN_FILENO, F_GETPIPE_SZ) > 0)
    fcntl(STDIN_FILENO, F_SETPIPE_SZ, 1 << 20);
  double start = now_seconds();
  struct receive_stats st;
  int r = stream_receive(STDIN_FILENO, "stdin", dst, &o, &st);
  double seconds = now_seconds() - start;
  if (r < 0) {
    log_error("%s", error_message());
    /* Never leave a half-received new image that looks like a good one. */
    if (st.created && unlink(strncmp(dst, "file://", 7) == 0 ? dst + 7 : dst) == 0)
      fprintf(stderr, "ferry receive: removed the incomplete %s\n", dst);
    return EXIT_FAIL;
  }
  if (json) {
    json_t *j
        = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:s, s:f}", "destination", dst, "size",
                    (json_int_t)st.size, "data_bytes", (json_int_t)st.data_bytes, "zero_bytes",
                    (json_int_t)st.zero_bytes, "bytes_received", (json_int_t)st.bytes_in, "records",
                    (json_int_t)st.records, "digest", st.digest, "seconds", seconds);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (text)
      printf("%s\n", text);
    free(text);
    json_decref(j);
  } else if (!quiet) {
    printf("%s  %s\n", st.digest, dst);
  }
  return EXIT_OK;
}
