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
#include "frontend/daemon.h"
#include "frontend/options.h"
#include "migrator/commands.h"

#include <errno.h>
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
             "Clone:\n");
  frontend_options_help(f, FRONTEND_CLONE);
  fprintf(f, "Process:\n");
  frontend_options_help(f, FRONTEND_SERVE | FRONTEND_REPORT | FRONTEND_COMMON);
  fprintf(f, "\n"
             "Exit status: 0 converged, 1 failed (the reason is printed), 2 bad usage.\n");
}

/* Every flag of `ferry hydrate` is a shared one (frontend/options.c). */
static const struct frontend_program program = {
  .name = "ferry hydrate",
  .groups = FRONTEND_CLONE | FRONTEND_SERVE | FRONTEND_REPORT,
  .clone_required = true,
  .usage = usage,
};

struct settings {
  struct frontend_options f;
  const char *dest;
};

/* -1 to go on, else the exit code. */
static int
parse_args(int argc, char **argv, struct settings *s)
{
  frontend_options_init(&s->f);
  int rc = frontend_parse(&program, argc, argv, &s->f, NULL);
  if (rc != FRONTEND_CONTINUE)
    return rc;
  int n = argc - optind;
  if (n != 1) {
    if (n == 0)
      error_set(EINVAL, "missing DEST");
    else
      error_set(EINVAL, "too many arguments: '%s' (need only DEST)", argv[optind + 1]);
    return frontend_usage_error(&program);
  }
  s->dest = argv[optind];
  return -1;
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
      "{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:s}", "source", s->f.source,
      "map", s->f.map, "destination", s->dest, "state", clone_state_name(st->state), "size",
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

/* Wait for convergence, a hydrator failure or a signal; the exit code. */
static int
wait_converged(struct clone *c, bool progress, struct clone_status *st)
{
  clone_get_status(c, st);
  struct progress *bar = progress_new("hydrate", st->size, progress);
  int status = EXIT_FAIL;
  for (;;) {
    int r = clone_wait(c, 0.25);
    clone_get_status(c, st);
    progress_set(bar, min_u64(st->regions_hydrated * st->region_size, st->size));
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
  return status;
}

static int
run(const struct settings *s)
{
  struct clone_options o;
  frontend_clone_options(&s->f, &o);
  /* Headless bulk copy, like `ferry copy`: start write-back as data lands, so the periodic
   * destination flushes (before each map commit) stay short. */
  o.dest.write_behind = true;
  const char *path = local_path(s->dest);
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
  struct daemon d;
  daemon_start(&d, true, s->f.pidfile); /* always in the foreground: only the pidfile */
  struct clone *c;
  if (clone_open(s->f.source, s->f.map, s->dest, &o, &c) < 0) {
    log_error("%s", error_message());
    if (created && access(path, F_OK) == 0 && unlink(path) == 0)
      fprintf(stderr, "ferry hydrate: removed the new %s again\n", s->dest);
    return EXIT_FAIL;
  }

  struct control_server *srv = NULL;
  if ((s->f.control
       && control_server_start(s->f.control, "ferry hydrate", c, clone_volume(c)->size, NULL, &srv)
              < 0)
      || daemon_ready(&d) < 0) {
    log_error("%s", error_message());
    if (srv)
      control_server_stop(srv);
    clone_close(c);
    return EXIT_FAIL;
  }

  struct clone_status st;
  int status = wait_converged(c, s->f.progress, &st);
  if (srv)
    control_server_stop(srv);
  /* clone_close flushes the destination and commits the map (in that order). */
  if (clone_close(c) < 0) {
    log_error("%s", error_message());
    status = EXIT_FAIL;
  }
  daemon_finish(&d);
  if (s->f.json)
    print_json(s, &st, now_seconds() - start);
  return status;
}

int
cmd_hydrate(int argc, char **argv)
{
  struct settings s = { .dest = NULL };
  int r = parse_args(argc, argv, &s);
  return r >= 0 ? r : run(&s);
}
