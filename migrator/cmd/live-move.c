/* ferry live-move: move a running qemu guest's disk to DEST with a pause of milliseconds,
 * whatever its size (migrator/move-live.h; docs/live-move.md). */
#include "backends/clone.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "migrator/commands.h"
#include "migrator/move-live.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
usage(FILE *f)
{
  fprintf(f,
          "Usage: ferry live-move --qmp SOCKET --device ID --to DEST [OPTIONS]\n"
          "       ferry live-move --resume WORKDIR [--progress] [--json]\n"
          "\n"
          "Move the disk ID of the running qemu guest behind the QMP socket SOCKET to DEST,\n"
          "live: the guest is paused for milliseconds (whatever the disk's size) while its\n"
          "device moves onto a ferry-nbd clone of its image; the clone copies in the\n"
          "background, the guest's reads steering it; at convergence the device moves onto\n"
          "DEST itself and the clone server stops.  The old image is not written after the\n"
          "switch.  DEST is created sparse when missing.  raw and qcow2 images; the qcow2\n"
          "layer stays in qemu (the image file's bytes are moved).\n"
          "\n"
          "Options:\n"
          "  --qmp SOCKET          the guest's QMP socket (qemu -qmp unix:SOCKET,server=on)\n"
          "  --device ID           the disk: qdev id (-device ...,id=ID), -drive id or node name\n"
          "  --to DEST             destination path (file or block device)\n"
          "  --workdir DIR         clone server files and state (default DEST.ferry-live)\n"
          "  --region-size SIZE    clone region size (default 64K)\n"
          "  --rate BYTES/s        background copy rate limit (default unlimited)\n"
          "  --reconnect-delay S   seconds qemu holds the guest's I/O while the clone server\n"
          "                        restarts (default 300)\n"
          "  --resume WORKDIR      finish a move that was interrupted (ferry killed, the clone\n"
          "                        server killed): from wherever QMP shows the disk\n"
          "  -p, --progress        progress bar on stderr (a line a second when not a tty)\n"
          "  --json                one JSON object on stdout at the end\n"
          "  -v, --verbose         debug messages (FERRY_DEBUG=qmp,live,...)\n"
          "  -h, --help            this text\n"
          "\n"
          "Exit status: 0 when the guest runs on DEST with ferry out of its I/O path\n"
          "(verified through QMP), 1 on failure (the guest keeps running: on its own disk\n"
          "when the switch did not happen, else on the clone until --resume), 2 bad usage.\n");
}

enum {
  OPT_QMP = 256,
  OPT_DEVICE,
  OPT_TO,
  OPT_WORKDIR,
  OPT_REGION_SIZE,
  OPT_RATE,
  OPT_RECONNECT_DELAY,
  OPT_RESUME,
  OPT_JSON,
};

static const struct option long_options[] = {
  { "qmp", required_argument, NULL, OPT_QMP },
  { "device", required_argument, NULL, OPT_DEVICE },
  { "to", required_argument, NULL, OPT_TO },
  { "workdir", required_argument, NULL, OPT_WORKDIR },
  { "region-size", required_argument, NULL, OPT_REGION_SIZE },
  { "rate", required_argument, NULL, OPT_RATE },
  { "reconnect-delay", required_argument, NULL, OPT_RECONNECT_DELAY },
  { "resume", required_argument, NULL, OPT_RESUME },
  { "progress", no_argument, NULL, 'p' },
  { "json", no_argument, NULL, OPT_JSON },
  { "verbose", no_argument, NULL, 'v' },
  { "help", no_argument, NULL, 'h' },
  { NULL, 0, NULL, 0 },
};

static int bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int
bad_usage(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "ferry live-move: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\nTry 'ferry live-move --help'.\n");
  va_end(ap);
  return EXIT_USAGE;
}

static void
print_json(bool ok, const struct live_move_report *rep, const char *error)
{
  json_t *o = json_pack(
      "{s:b, s:f, s:s?, s:f, s:f, s:f, s:I, s:I, s:I, s:I, s:i, s:s?, s:s, s:s?}", "ok", ok,
      "paused_seconds", rep->paused_seconds, "switched_at",
      rep->switched_at[0] ? rep->switched_at : NULL, "converged_seconds", rep->converged_seconds,
      "pivot_seconds", rep->pivot_seconds, "total_seconds", rep->total_seconds, "size",
      (json_int_t)rep->size, "bytes_copied", (json_int_t)rep->bytes_copied, "bytes_fetched",
      (json_int_t)rep->bytes_fetched, "bytes_skipped", (json_int_t)rep->bytes_skipped,
      "server_restarts", (int)rep->server_restarts, "final_image",
      rep->final_image[0] ? rep->final_image : NULL, "workdir", rep->workdir, "error", error);
  char *text = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
  if (text)
    printf("%s\n", text);
  free(text);
  json_decref(o);
}

int
cmd_live_move(int argc, char **argv)
{
  struct live_move_options o = { .out = stdout };
  const char *resume = NULL;
  bool json = false;
  uint64_t v;
  int c;
  opterr = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, ":pvh", long_options, NULL)) != -1) {
    switch (c) {
    case OPT_QMP:
      o.qmp = optarg;
      break;
    case OPT_DEVICE:
      o.device = optarg;
      break;
    case OPT_TO:
      o.dest = optarg;
      break;
    case OPT_WORKDIR:
      o.workdir = optarg;
      break;
    case OPT_REGION_SIZE:
      if (clone_parse_region_size(optarg, &o.region_size) < 0)
        return bad_usage("%s", error_message());
      break;
    case OPT_RATE:
      if (parse_rate("--rate", optarg, &o.rate) < 0)
        return bad_usage("%s", error_message());
      break;
    case OPT_RECONNECT_DELAY:
      if (parse_uint("--reconnect-delay", optarg, 1, 86400, &v) < 0)
        return bad_usage("%s", error_message());
      o.reconnect_delay = (int)v;
      break;
    case OPT_RESUME:
      resume = optarg;
      break;
    case 'p':
      o.progress = true;
      break;
    case OPT_JSON:
      json = true;
      break;
    case 'v':
      log_set_verbose(true);
      break;
    case 'h':
      usage(stdout);
      return EXIT_OK;
    default:
      getopt_error(c, argv);
      return bad_usage("%s", error_message());
    }
  }
  if (optind < argc)
    return bad_usage("unexpected argument '%s'", argv[optind]);
  if (resume && (o.qmp || o.device || o.dest || o.workdir || o.region_size || o.rate))
    return bad_usage("--resume WORKDIR takes the move's settings from WORKDIR (give only "
                     "--progress, --json)");
  if (!resume && (!o.qmp || !o.device || !o.dest))
    return bad_usage("%s", !o.qmp      ? "--qmp SOCKET is required"
                           : !o.device ? "--device ID is required"
                                       : "--to DEST is required");
  if (json)
    o.out = NULL; /* stdout carries the JSON object only */
  struct live_move_report rep;
  int r = resume ? live_move_resume(resume, &o, &rep) : live_move(&o, &rep);
  if (r < 0)
    fprintf(stderr, "ferry live-move: %s\n", error_message());
  if (json)
    print_json(r == 0, &rep, r < 0 ? error_message() : NULL);
  else if (r == 0) {
    char sz[32];
    printf("live move done: device %s on %s; guest paused %.3f s, converged %.2f s after the "
           "switch (%s)\n",
           resume ? "(resumed)" : o.device, rep.final_image, rep.paused_seconds,
           rep.converged_seconds, format_size(sz, sizeof sz, (double)rep.size));
  }
  return r == 0 ? EXIT_OK : EXIT_FAIL;
}
