/* ferry hydrate: run a lazy clone (backends/clone.h) headless until every region is on the
 * destination.  Restarting it after a crash resumes from the committed map: regions already
 * marked are not copied again.
 */
#include "backends/clone.h"
#include "common/control.h"
#include "common/error.h"
#include "common/log.h"
#include "common/progress.h"
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
  fprintf(f, "Usage: ferry hydrate [OPTIONS] --source SRC --map MAP DEST\n"
             "\n"
             "Copy every region of SRC that the region map MAP does not yet mark onto DEST, in\n"
             "the background way a running clone does, and exit once the clone has converged\n"
             "(every region on DEST, the map committed).  MAP is created when missing; an\n"
             "existing MAP made for another source, size or region size is refused, and so is a\n"
             "DEST smaller than SRC.  A DEST path that does not exist is created with SRC's size.\n"
             "Killed at any moment, the same command resumes where the committed map left off.\n"
             "\n"
             "Options:\n"
             "  -s, --source SRC        the source volume (read only)\n"
             "  -m, --map MAP           the region map file\n"
             "      --region-size SIZE  for a new map: power of two, 4K..64M (default 64K)\n"
             "  -w, --workers N         hydrator requests in flight (default 16)\n"
             "      --request-size SIZE bytes per source read (default 4M)\n"
             "      --commit-interval S seconds between map commits (default 1): longer\n"
             "                          flushes less, shorter redoes less after a crash\n"
             "      --rate BYTES/s      limit the source read rate, e.g. 100M (default unlimited)\n"
             "      --paused            start paused (resume through --control)\n"
             "      --source-identity ID  name recorded in MAP for the source (default: SRC)\n"
             "  -p, --progress          progress bar on stderr (when it is a terminal)\n"
             "      --json              print a summary object on stdout at the end\n"
             "      --control PATH      serve the control socket at PATH (status, pause, ...)\n"
             "  -v, --verbose           debug messages on stderr\n"
             "  -h, --help              this text\n"
             "\n"
             "Exit status: 0 converged, 1 failed (the reason is printed), 2 bad usage.\n");
}

enum {
  OPT_REGION_SIZE = 256,
  OPT_RATE,
  OPT_JSON,
  OPT_CONTROL,
  OPT_PAUSED,
  OPT_SOURCE_ID,
  OPT_REQUEST_SIZE,
  OPT_COMMIT_INTERVAL
};

static const struct option long_options[] = {
  { "source", required_argument, NULL, 's' },
  { "map", required_argument, NULL, 'm' },
  { "region-size", required_argument, NULL, OPT_REGION_SIZE },
  { "workers", required_argument, NULL, 'w' },
  { "rate", required_argument, NULL, OPT_RATE },
  { "paused", no_argument, NULL, OPT_PAUSED },
  { "source-identity", required_argument, NULL, OPT_SOURCE_ID },
  { "request-size", required_argument, NULL, OPT_REQUEST_SIZE },
  { "commit-interval", required_argument, NULL, OPT_COMMIT_INTERVAL },
  { "progress", no_argument, NULL, 'p' },
  { "json", no_argument, NULL, OPT_JSON },
  { "control", required_argument, NULL, OPT_CONTROL },
  { "verbose", no_argument, NULL, 'v' },
  { "help", no_argument, NULL, 'h' },
  { NULL, 0, NULL, 0 },
};

struct settings {
  const char *source, *map, *dest, *control, *source_id;
  uint64_t region_size, rate, request_size;
  unsigned workers;
  double commit_interval;
  bool progress, json, paused;
};

static int
bad_usage(void)
{
  fprintf(stderr, "ferry hydrate: %s\n", error_message());
  fprintf(stderr, "Try 'ferry hydrate --help'.\n");
  return EXIT_USAGE;
}

static int
parse_args(int argc, char **argv, struct settings *s)
{
  uint64_t v;
  int c;
  opterr = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, ":s:m:w:pvh", long_options, NULL)) != -1) {
    switch (c) {
    case 's':
      s->source = optarg;
      break;
    case 'm':
      s->map = optarg;
      break;
    case OPT_REGION_SIZE:
      if (clone_parse_region_size(optarg, &s->region_size) < 0)
        return bad_usage();
      break;
    case 'w':
      if (parse_uint("--workers", optarg, 1, 256, &v) < 0)
        return bad_usage();
      s->workers = (unsigned)v;
      break;
    case OPT_RATE:
      if (parse_rate("--rate", optarg, &s->rate) < 0)
        return bad_usage();
      break;
    case OPT_PAUSED:
      s->paused = true;
      break;
    case OPT_SOURCE_ID:
      s->source_id = optarg;
      break;
    case OPT_COMMIT_INTERVAL: {
      char *end;
      s->commit_interval = strtod(optarg, &end);
      if (*end || !(s->commit_interval >= 0.01 && s->commit_interval <= 3600)) {
        error_set(EINVAL, "--commit-interval: '%s' must be seconds from 0.01 to 3600", optarg);
        return bad_usage();
      }
      break;
    }
    case OPT_REQUEST_SIZE:
      if (parse_size("--request-size", optarg, &v) < 0)
        return bad_usage();
      if (v < 4096 || v > (256u << 20) || v % 4096) {
        error_set(EINVAL, "--request-size: '%s' must be a multiple of 4K between 4K and 256M",
                  optarg);
        return bad_usage();
      }
      s->request_size = v;
      break;
    case 'p':
      s->progress = true;
      break;
    case OPT_JSON:
      s->json = true;
      break;
    case OPT_CONTROL:
      s->control = optarg;
      break;
    case 'v':
      log_set_verbose(true);
      break;
    case 'h':
      usage(stdout);
      exit(EXIT_OK);
    default: /* ':' or '?' */
      getopt_error(c, argv);
      return bad_usage();
    }
  }
  if (!s->source) {
    error_set(EINVAL, "missing --source SRC");
    return bad_usage();
  }
  if (!s->map) {
    error_set(EINVAL, "missing --map MAP");
    return bad_usage();
  }
  int n = argc - optind;
  if (n != 1) {
    if (n == 0)
      error_set(EINVAL, "missing DEST");
    else
      error_set(EINVAL, "too many arguments: '%s' (need only DEST)", argv[optind + 1]);
    return bad_usage();
  }
  s->dest = argv[optind];
  return 0;
}

static const char *
local_path(const char *uri)
{
  if (strncmp(uri, "file://", 7) == 0)
    return uri + 7;
  return strstr(uri, "://") ? NULL : uri;
}

static volatile sig_atomic_t interrupted;

static void
on_signal(int sig)
{
  interrupted = sig;
}

static void
print_json(const struct settings *s, const struct clone_status *st, double seconds)
{
  json_t *o = json_pack(
      "{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:s}", "source", s->source,
      "map", s->map, "destination", s->dest, "state", clone_state_name(st->state), "size",
      (json_int_t)st->size, "region_size", (json_int_t)st->region_size, "regions_total",
      (json_int_t)st->regions_total, "regions_hydrated", (json_int_t)st->regions_hydrated,
      "bytes_copied", (json_int_t)st->bytes_copied, "bytes_fetched", (json_int_t)st->bytes_fetched,
      "bytes_skipped", (json_int_t)st->bytes_skipped, "seconds", seconds, "last_error",
      st->last_error);
  if (!o)
    return;
  char *text = json_dumps(o, JSON_COMPACT);
  if (text)
    printf("%s\n", text);
  free(text);
  json_decref(o);
}

int
cmd_hydrate(int argc, char **argv)
{
  struct settings s = { 0 };
  int r = parse_args(argc, argv, &s);
  if (r)
    return r;

  struct clone_options o;
  clone_options_init(&o);
  o.region_size = s.region_size;
  o.workers = s.workers;
  o.rate = s.rate;
  o.request_size = s.request_size;
  o.commit_interval = s.commit_interval;
  /* Headless bulk copy, like `ferry copy`: start write-back as data lands, so the periodic
   * destination flushes (before each map commit) stay short. */
  o.dest.write_behind = true;
  o.hydrate = true;
  o.start_paused = s.paused;
  o.source_identity = s.source_id;
  const char *path = local_path(s.dest);
  bool created = false;
  if (path && access(path, F_OK) < 0 && errno == ENOENT) {
    o.dest.create = true; /* with the source's size */
    created = true;
  }

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);

  double start = now_seconds();
  struct clone *c;
  if (clone_open(s.source, s.map, s.dest, &o, &c) < 0) {
    log_error("%s", error_message());
    if (created && access(path, F_OK) == 0 && unlink(path) == 0)
      fprintf(stderr, "ferry hydrate: removed the new %s again\n", s.dest);
    return EXIT_FAIL;
  }

  struct control_server *srv = NULL;
  if (s.control
      && control_server_start(s.control, "ferry hydrate", c, clone_volume(c)->size, NULL, &srv)
             < 0) {
    log_error("%s", error_message());
    clone_close(c);
    return EXIT_FAIL;
  }

  struct clone_status st;
  clone_get_status(c, &st);
  struct progress *bar = progress_new("hydrate", st.size, s.progress);
  int status = EXIT_FAIL;
  for (;;) {
    r = clone_wait(c, 0.25);
    clone_get_status(c, &st);
    progress_set(bar, min_u64(st.regions_hydrated * st.region_size, st.size));
    if (r == 0) {
      status = EXIT_OK;
      break;
    }
    if (r != -ETIMEDOUT) {
      log_error("%s", error_message());
      break;
    }
    if (interrupted) {
      log_error("interrupted by signal %d: stopping (the map keeps what is done)",
                (int)interrupted);
      break;
    }
  }
  progress_finish(bar);
  progress_free(bar);
  if (srv)
    control_server_stop(srv);
  /* clone_close flushes the destination and commits the map (in that order). */
  if (clone_close(c) < 0) {
    log_error("%s", error_message());
    status = EXIT_FAIL;
  }
  if (s.json)
    print_json(&s, &st, now_seconds() - start);
  return status;
}
