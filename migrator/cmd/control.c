/* ferry status|wait|pause|resume|release|set-rate CONTROL: talk to a running ferry-nbd, ferry-fuse
 * or `ferry hydrate --control` through its control socket (common/control.h). */
#include "common/control.h"
#include "common/error.h"
#include "common/log.h"
#include "common/progress.h"
#include "common/util.h"
#include "migrator/commands.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Seconds a single request may take (status, pause, ...): the server answers at once. */
#define REQUEST_TIMEOUT 10.0
/* How often `ferry wait` asks for the status while drawing its progress bar. */
#define WAIT_POLL_SECONDS 0.25

static const char *
str_field(json_t *o, const char *key)
{
  const char *v = json_string_value(json_object_get(o, key));
  return v ? v : "";
}

static double
num_field(json_t *o, const char *key)
{
  json_t *v = json_object_get(o, key);
  return json_is_number(v) ? json_number_value(v) : 0;
}

static void
format_eta(char *buf, size_t len, json_t *eta)
{
  if (!json_is_number(eta) || json_number_value(eta) < 0) {
    snprintf(buf, len, "unknown");
    return;
  }
  unsigned long s = (unsigned long)ceil(json_number_value(eta));
  snprintf(buf, len, "%lu:%02lu:%02lu", s / 3600, s / 60 % 60, s % 60);
}

static void
print_status(FILE *f, const char *path, json_t *st)
{
  char a[32], b[32], c[32], d[32];
  const char *state = str_field(st, "state");
  fprintf(f, "%s: %s (pid %.0f)\n", path, str_field(st, "program"), num_field(st, "pid"));
  format_size(a, sizeof a, num_field(st, "size"));
  if (strcmp(state, "direct") == 0) {
    fprintf(f, "  state:       direct (a plain volume, nothing to hydrate)\n");
    fprintf(f, "  size:        %s\n", a);
    fprintf(f, "  clients:     %.0f\n", num_field(st, "clients"));
    return;
  }
  bool held = json_is_true(json_object_get(st, "held"));
  fprintf(f, "  state:       %s%s\n", state, held ? " (held: ferry release starts the copy)" : "");
  format_size(b, sizeof b, num_field(st, "region_size"));
  fprintf(f, "  progress:    %.1f%% (%.0f of %.0f regions of %s)\n", num_field(st, "percent"),
          num_field(st, "regions_hydrated"), num_field(st, "regions_total"), b);
  fprintf(f, "  size:        %s\n", a);
  format_size(a, sizeof a, num_field(st, "bytes_copied"));
  format_size(b, sizeof b, num_field(st, "bytes_fetched"));
  format_size(c, sizeof c, num_field(st, "bytes_skipped"));
  fprintf(f, "  bytes:       %s copied, %s fetched on demand, %s skipped (zero)\n", a, b, c);
  format_size(a, sizeof a, num_field(st, "rate"));
  double limit = num_field(st, "rate_limit");
  format_size(b, sizeof b, limit);
  fprintf(f, "  rate:        %s/s (limit: %s%s)\n", a, limit > 0 ? b : "none",
          limit > 0 ? "/s" : "");
  format_eta(d, sizeof d, json_object_get(st, "eta"));
  fprintf(f, "  eta:         %s\n", strcmp(state, "converged") == 0 ? "done" : d);
  fprintf(f, "  clients:     %.0f\n", num_field(st, "clients"));
  const char *err = str_field(st, "last_error");
  fprintf(f, "  last error:  %s\n", *err ? err : "none");
}

static void
print_json(json_t *st)
{
  char *text = json_dumps(st, JSON_COMPACT);
  if (text)
    printf("%s\n", text);
  free(text);
}

/* ---------------------------------------------------------------- option parsing */

enum { OPT_HELP = 'h', OPT_JSON = 256, OPT_TIMEOUT, OPT_PROGRESS, OPT_NO_PROGRESS };

struct args {
  bool json;
  double timeout; /* < 0: none */
  int progress;   /* -1: when stderr is a terminal, 0 off, 1 on */
  const char *path;
  uint64_t rate; /* set-rate's RATE, bytes/s */
};

/* Parse the options of one subcommand; returns -1 to go on, else an exit code. */
static int
parse_args(int argc, char **argv, const char *usage, bool wait_opts, bool want_rate, struct args *a)
{
  /* clang-format off */
  static const struct option all[] = {
    { "help", no_argument, NULL, OPT_HELP },
    { "json", no_argument, NULL, OPT_JSON },
    { "verbose", no_argument, NULL, 'v' },
    { "timeout", required_argument, NULL, OPT_TIMEOUT },
    { "progress", no_argument, NULL, OPT_PROGRESS },
    { "no-progress", no_argument, NULL, OPT_NO_PROGRESS },
    { NULL, 0, NULL, 0 },
  };
  /* clang-format on */
  *a = (struct args){ .timeout = -1, .progress = -1 };
  const char *cmd = argv[0];
  opterr = 0;
  optind = 1;
  int o, li = 0;
  while ((o = getopt_long(argc, argv, "hv", all, &li)) != -1) {
    switch (o) {
    case OPT_HELP:
      printf("%s", usage);
      return EXIT_OK;
    case 'v':
      log_set_verbose(true);
      break;
    case OPT_JSON:
      a->json = true;
      break;
    case OPT_TIMEOUT:
    case OPT_PROGRESS:
    case OPT_NO_PROGRESS:
      if (!wait_opts) {
        fprintf(stderr, "ferry %s: unknown option '--%s'\n%s", cmd, all[li].name, usage);
        return EXIT_USAGE;
      }
      if (o == OPT_PROGRESS || o == OPT_NO_PROGRESS) {
        a->progress = o == OPT_PROGRESS;
      } else {
        char *end;
        errno = 0;
        a->timeout = strtod(optarg, &end);
        if (!*optarg || *end || errno || !(a->timeout >= 0) || !isfinite(a->timeout)) {
          fprintf(stderr, "ferry %s: --timeout: '%s' is not a number of seconds >= 0\n", cmd,
                  optarg);
          return EXIT_USAGE;
        }
      }
      break;
    default:
      if (optopt && optopt < 256 && optopt != '?')
        fprintf(stderr, "ferry %s: unknown option '-%c'\n%s", cmd, optopt, usage);
      else if (optopt)
        fprintf(stderr, "ferry %s: option '%s' needs a value\n%s", cmd, argv[optind - 1], usage);
      else
        fprintf(stderr, "ferry %s: unknown option '%s'\n%s", cmd, argv[optind - 1], usage);
      return EXIT_USAGE;
    }
  }
  int want = want_rate ? 2 : 1;
  if (argc - optind != want) {
    fprintf(stderr, "ferry %s: expected %s, got %d argument%s\n%s", cmd,
            want_rate ? "CONTROL and RATE" : "one CONTROL socket path", argc - optind,
            argc - optind == 1 ? "" : "s", usage);
    return EXIT_USAGE;
  }
  a->path = argv[optind];
  if (want_rate && parse_size("RATE", argv[optind + 1], &a->rate) < 0) {
    fprintf(stderr, "ferry %s: %s\n", cmd, error_message());
    return EXIT_USAGE;
  }
  return -1;
}

static int
fail_with_error(void)
{
  log_error("%s", error_message());
  return EXIT_FAIL;
}

/* ---------------------------------------------------------------- status, pause, resume */

static const char status_usage[]
    = "Usage: ferry status [--json] CONTROL\n"
      "Show the state of the clone served by a running ferry-nbd, ferry-fuse or\n"
      "`ferry hydrate --control CONTROL`: state, progress, bytes copied, rate, ETA, last error.\n"
      "  --json     print the raw status object (one line of JSON)\n";

static int
show_status(const struct args *a)
{
  json_t *st;
  if (control_client_call(a->path, "status", NULL, &st, REQUEST_TIMEOUT) < 0) {
    json_decref(st);
    return fail_with_error();
  }
  if (a->json)
    print_json(st);
  else
    print_status(stdout, a->path, st);
  json_decref(st);
  return EXIT_OK;
}

int
cmd_status(int argc, char **argv)
{
  struct args a;
  int r = parse_args(argc, argv, status_usage, false, false, &a);
  return r >= 0 ? r : show_status(&a);
}

/* pause, resume, set-rate: one request, then a one-line confirmation (or the status). */
static int
simple_command(const struct args *a, const char *command, json_t *extra)
{
  json_t *st;
  if (control_client_call(a->path, command, extra, &st, REQUEST_TIMEOUT) < 0) {
    json_decref(st);
    return fail_with_error();
  }
  if (a->json) {
    print_json(st);
  } else {
    char lim[32];
    double limit = num_field(st, "rate_limit");
    format_size(lim, sizeof lim, limit);
    printf("%s: state %s, rate limit %s%s\n", a->path, str_field(st, "state"),
           limit > 0 ? lim : "none", limit > 0 ? "/s" : "");
  }
  json_decref(st);
  return EXIT_OK;
}

static const char pause_usage[]
    = "Usage: ferry pause [--json] CONTROL\n"
      "Pause the background copy (hydrator) of a running clone; reads of regions not yet\n"
      "copied still fetch them from the source.  `ferry resume` continues.\n";

int
cmd_pause(int argc, char **argv)
{
  struct args a;
  int r = parse_args(argc, argv, pause_usage, false, false, &a);
  return r >= 0 ? r : simple_command(&a, "pause", NULL);
}

static const char resume_usage[] = "Usage: ferry resume [--json] CONTROL\n"
                                   "Resume a paused (or failed) clone's background copy.\n";

int
cmd_resume(int argc, char **argv)
{
  struct args a;
  int r = parse_args(argc, argv, resume_usage, false, false, &a);
  return r >= 0 ? r : simple_command(&a, "resume", NULL);
}

static const char release_usage[]
    = "Usage: ferry release [--json] CONTROL\n"
      "End the hold of a clone started with --hold (its source has stopped changing): reads\n"
      "keep what they fetch again and the background copy starts.\n";

int
cmd_release(int argc, char **argv)
{
  struct args a;
  int r = parse_args(argc, argv, release_usage, false, false, &a);
  return r >= 0 ? r : simple_command(&a, "release", NULL);
}

static const char set_rate_usage[]
    = "Usage: ferry set-rate [--json] CONTROL RATE\n"
      "Limit a running clone's background copy to RATE bytes/s: a number or a size such as\n"
      "50M (MiB/s); 0 removes the limit.\n";

int
cmd_set_rate(int argc, char **argv)
{
  struct args a;
  int r = parse_args(argc, argv, set_rate_usage, false, true, &a);
  if (r >= 0)
    return r;
  json_t *extra = json_pack("{s:I}", "rate", (json_int_t)a.rate);
  r = simple_command(&a, "set-rate", extra);
  json_decref(extra);
  return r;
}

/* ---------------------------------------------------------------- wait */

static const char wait_usage[]
    = "Usage: ferry wait [--timeout SECONDS] [--progress|--no-progress] [--json] CONTROL\n"
      "Wait until the clone served behind CONTROL has converged (every region copied to the\n"
      "destination, map committed).  Exit 0 when converged (or for a plain volume), 1 when the\n"
      "clone failed (the reason is printed) or the timeout expired.\n"
      "  --timeout SECONDS   give up after SECONDS (default: wait for ever)\n"
      "  --progress          draw progress (a bar on a terminal, else a line per second)\n"
      "  --no-progress       draw nothing (default when stderr is not a terminal)\n"
      "  --json              print the final status object on stdout\n";

/* The verdict on the reply to "wait": exit code and message. */
static int
wait_verdict(const struct args *a, json_t *reply)
{
  json_t *st = json_object_get(reply, "status");
  const char *state = str_field(st, "state");
  if (a->json && st)
    print_json(st);
  if (json_is_true(json_object_get(reply, "ok"))) {
    if (!a->json)
      printf("%s: %s\n", a->path,
             strcmp(state, "direct") == 0 ? "a plain volume (state direct): nothing to wait for"
                                          : "converged");
    return EXIT_OK;
  }
  if (strcmp(state, "failed") == 0) {
    const char *err = str_field(st, "last_error");
    log_error("%s: clone failed: %s", a->path, *err ? err : "unknown error");
  } else if (st && a->timeout >= 0) {
    log_error("%s: not converged after %g s (state %s, %.1f%% hydrated)", a->path, a->timeout,
              state, num_field(st, "percent"));
  } else {
    const char *err = str_field(reply, "error");
    log_error("%s: %s", a->path, *err ? err : "wait refused (no error message)");
  }
  return EXIT_FAIL;
}

static void
draw_progress(FILE *f, bool tty, json_t *st, double *last_line)
{
  double size = num_field(st, "size");
  double done = num_field(st, "regions_hydrated") * num_field(st, "region_size");
  if (done > size)
    done = size;
  char line[256];
  progress_format(line, sizeof line, str_field(st, "state"), (uint64_t)done, (uint64_t)size,
                  num_field(st, "rate"), 30);
  if (tty) {
    fprintf(f, "\r%s\033[K", line);
  } else {
    /* Not a terminal (a log): one line a second, not a stream of redraws. */
    double now = now_seconds();
    if (now - *last_line < 1.0)
      return;
    *last_line = now;
    fprintf(f, "%s\n", line);
  }
  fflush(f);
}

/* One "wait" request stays pending (the server answers it when the clone converges or fails,
 * or when its timeout expires — even when the program stops right after convergence); with
 * a progress display, status requests on the side feed the bar meanwhile. */
static int
wait_converged(const struct args *a, bool progress, bool tty)
{
  json_t *req = a->timeout >= 0 ? json_pack("{s:s, s:f}", "command", "wait", "timeout", a->timeout)
                                : json_pack("{s:s}", "command", "wait");
  struct control_call *call;
  int r = control_call_start(a->path, req, &call);
  json_decref(req);
  if (r < 0)
    return fail_with_error();
  double last_line = -1e9;
  bool drawn = false;
  json_t *reply = NULL;
  for (;;) {
    /* Without a bar only a server that never answers is guarded against. */
    double slice = progress          ? WAIT_POLL_SECONDS
                   : a->timeout >= 0 ? a->timeout + REQUEST_TIMEOUT
                                     : -1;
    r = control_call_finish(call, &reply, slice);
    if (r != -ETIMEDOUT || !progress)
      break;
    json_t *st;
    if (control_client_call(a->path, "status", NULL, &st, REQUEST_TIMEOUT) == 0) {
      draw_progress(stderr, tty, st, &last_line);
      drawn = true;
    }
    json_decref(st); /* a failed status: the pending wait tells what happened */
  }
  control_call_free(call);
  json_t *st = json_object_get(reply, "status");
  if (progress && st && strcmp(str_field(st, "state"), "direct") != 0) {
    last_line = -1e9; /* always show the final state */
    draw_progress(stderr, tty, st, &last_line);
    drawn = true;
  }
  if (drawn && tty)
    fputc('\n', stderr);
  if (r < 0) {
    json_decref(reply);
    return fail_with_error();
  }
  r = wait_verdict(a, reply);
  json_decref(reply);
  return r;
}

int
cmd_wait(int argc, char **argv)
{
  struct args a;
  int r = parse_args(argc, argv, wait_usage, true, false, &a);
  if (r >= 0)
    return r;
  bool tty = isatty(STDERR_FILENO);
  return wait_converged(&a, a.progress < 0 ? tty : a.progress, tty);
}
