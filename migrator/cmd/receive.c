/* ferry receive: write the stream of `ferry send` (backends/stream.h) from stdin to a volume,
 * checking every chunk and, at the end, the whole volume's digest. */
#include "backends/stream.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "migrator/commands.h"

#include <errno.h>
#include <getopt.h>
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
          "Options:\n"
          "  -R, --workers N         decompressing writers (default: one per CPU)\n"
          "  -C, --connections N     connections to an nbd destination (default: driver's)\n"
          "      --no-flush          do not flush DST at the end\n"
          "  -p, --progress          progress bar on stderr (when it is a terminal)\n"
          "      --json              print a summary object on stdout\n"
          "  -q, --quiet             print nothing on success\n"
          "  -v, --verbose           debug messages on stderr\n"
          "  -h, --help              this text\n"
          "\n"
          "Exit status: 0 received and verified, 1 failed, 2 bad usage.\n");
}

enum { OPT_NO_FLUSH = 256, OPT_JSON };

static const struct option long_options[] = {
  { "workers", required_argument, NULL, 'R' },
  { "connections", required_argument, NULL, 'C' },
  { "no-flush", no_argument, NULL, OPT_NO_FLUSH },
  { "progress", no_argument, NULL, 'p' },
  { "json", no_argument, NULL, OPT_JSON },
  { "quiet", no_argument, NULL, 'q' },
  { "verbose", no_argument, NULL, 'v' },
  { "help", no_argument, NULL, 'h' },
  { NULL, 0, NULL, 0 },
};

static int
bad_usage(void)
{
  fprintf(stderr, "ferry receive: %s\nTry 'ferry receive --help'.\n", error_message());
  return EXIT_USAGE;
}

int
cmd_receive(int argc, char **argv)
{
  struct receive_options o;
  receive_options_init(&o);
  bool json = false, quiet = false;
  uint64_t v;
  int c;
  opterr = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, ":R:C:pqvh", long_options, NULL)) != -1) {
    switch (c) {
    case 'R':
      if (parse_uint("--workers", optarg, 1, 256, &v) < 0)
        return bad_usage();
      o.workers = (unsigned)v;
      break;
    case 'C':
      if (parse_uint("--connections", optarg, 1, 64, &v) < 0)
        return bad_usage();
      o.connections = (unsigned)v;
      break;
    case OPT_NO_FLUSH:
      o.flush = false;
      break;
    case 'p':
      o.show_progress = true;
      break;
    case OPT_JSON:
      json = true;
      break;
    case 'q':
      quiet = true;
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
      error_set(EINVAL, "missing DST");
    else
      error_set(EINVAL, "too many arguments: '%s' (only DST)", argv[optind + 1]);
    return bad_usage();
  }
  const char *dst = argv[optind];
  if (isatty(STDIN_FILENO)) {
    error_set(EINVAL, "stdin is a terminal: pipe `ferry send` into it");
    return bad_usage();
  }
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
