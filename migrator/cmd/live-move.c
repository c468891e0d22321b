/* ferry live-move: move a running qemu guest's disk to DEST with a pause of milliseconds,
 * whatever its size (migrator/move-live.h; docs/live-move.md). */
#include "backends/clone.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "frontend/options.h"
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
          "  --reconnect-delay S   seconds qemu holds the guest's I/O while the clone server\n"
          "                        restarts (default 300)\n"
          "  --resume WORKDIR      finish a move that was interrupted (ferry killed, the clone\n"
          "                        server killed): from wherever QMP shows the disk\n");
  frontend_options_help(f, FRONTEND_HYDRATE | FRONTEND_REPORT | FRONTEND_COMMON);
  fprintf(f, "\n"
             "Exit status: 0 when the guest runs on DEST with ferry out of its I/O path\n"
             "(verified through QMP), 1 on failure (the guest keeps running: on its own disk\n"
             "when the switch did not happen, else on the clone until --resume), 2 bad usage.\n");
}

enum {
  OPT_QMP = 256,
  OPT_DEVICE,
  OPT_TO,
  OPT_WORKDIR,
  OPT_RECONNECT_DELAY,
  OPT_RESUME,
};

/* live-move's own flags; --region-size --rate and -p --json come from frontend/options.c. */
static const struct option long_options[] = {
  { "qmp", required_argument, NULL, OPT_QMP },
  { "device", required_argument, NULL, OPT_DEVICE },
  { "to", required_argument, NULL, OPT_TO },
  { "workdir", required_argument, NULL, OPT_WORKDIR },
  { "reconnect-delay", required_argument, NULL, OPT_RECONNECT_DELAY },
  { "resume", required_argument, NULL, OPT_RESUME },
  { NULL, 0, NULL, 0 },
};

struct settings {
  struct frontend_options f; /* --region-size --rate --progress --json */
  struct live_move_options o;
  const char *resume;
};

static int
take_option(void *opaque, int code, const char *arg)
{
  struct settings *s = opaque;
  uint64_t v;
  switch (code) {
  case OPT_QMP:
    s->o.qmp = arg;
    return 0;
  case OPT_DEVICE:
    s->o.device = arg;
    return 0;
  case OPT_TO:
    s->o.dest = arg;
    return 0;
  case OPT_WORKDIR:
    s->o.workdir = arg;
    return 0;
  case OPT_RECONNECT_DELAY:
    if (parse_uint("--reconnect-delay", arg, 1, 86400, &v) < 0)
      return -1;
    s->o.reconnect_delay = (int)v;
    return 0;
  case OPT_RESUME:
    s->resume = arg;
    return 0;
  }
  return error_set(EINVAL, "option code %d is not understood", code);
}

static const struct frontend_program program = {
  .name = "ferry live-move",
  .groups = FRONTEND_HYDRATE | FRONTEND_REPORT,
  .longopts = long_options,
  .take = take_option,
  .usage = usage,
};

/* -1 to go on, else the exit code (0 after --help, 2 after a usage message). */
static int
parse_args(int argc, char **argv, struct settings *s)
{
  *s = (struct settings){ .o = { .out = stdout } };
  frontend_options_init(&s->f);
  int rc = frontend_parse(&program, argc, argv, &s->f, s);
  if (rc != FRONTEND_CONTINUE)
    return rc;
  struct live_move_options *o = &s->o;
  o->region_size = s->f.region_size;
  o->rate = s->f.rate;
  o->progress = s->f.progress;
  if (optind < argc)
    error_set(EINVAL, "unexpected argument '%s'", argv[optind]);
  else if (s->resume && (o->qmp || o->device || o->dest || o->workdir || o->region_size || o->rate))
    error_set(EINVAL, "--resume WORKDIR takes the move's settings from WORKDIR (give only "
                      "--progress, --json)");
  else if (!s->resume && (!o->qmp || !o->device || !o->dest))
    error_set(EINVAL, "%s",
              !o->qmp      ? "--qmp SOCKET is required"
              : !o->device ? "--device ID is required"
                           : "--to DEST is required");
  else
    return -1;
  return frontend_usage_error(&program);
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
  struct settings s;
  int rc = parse_args(argc, argv, &s);
  if (rc >= 0)
    return rc;
  struct live_move_options o = s.o;
  const char *resume = s.resume;
  bool json = s.f.json;
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
