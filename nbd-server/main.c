/* ferry-nbd: an NBD server over any ferry volume, or over a lazy clone that hydrates while
 * it is served.  This file: its own options, startup order, signals, shutdown (the shared
 * flags and daemonizing: frontend/). */
#include "nbd-server/nbd.h"
#include "nbd-server/protocol.h"
#include "nbd-server/serve.h"
#include "nbd-server/tls.h"
#include "backends/clone.h"
#include "backends/volume.h"
#include "common/control.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "frontend/daemon.h"
#include "frontend/options.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

static void
usage(FILE *f)
{
  fprintf(f,
          "Usage: ferry-nbd [OPTIONS] VOLUME\n"
          "       ferry-nbd [OPTIONS] --source SRC --map MAP [CLONE OPTIONS] DEST\n"
          "\n"
          "Serve a volume (a path, file://, nbd://, nbd+unix://, http(s):// URI) over NBD, or a\n"
          "lazy clone of SRC into DEST that is copied in the background while it is served.\n"
          "\n"
          "Listening (default --listen 127.0.0.1:10809):\n");
  frontend_help_line(f, "    --listen HOST:PORT", "TCP address; [ADDR]:PORT for IPv6; repeatable");
  frontend_help_line(
      f, "    --socket PATH",
      "unix socket; repeatable (systemd socket\nactivation via LISTEN_FDS is automatic)");
  frontend_help_line(f, "    --max-clients N",
                     "refuse connections beyond N at once\n(default 128, 0 = no limit)");
  frontend_help_line(f, "    --threads N", "worker threads per connection (default 16)");
  frontend_help_line(f, "    --handshake-timeout S",
                     "seconds a client gets to finish its handshake\n(default 10)");
  frontend_help_line(f, "    --poll-us N",
                     "spin up to N microseconds for the next request\nbefore sleeping "
                     "(adaptive; default 50, 0 = never)");
  frontend_help_line(f, "    --buffer-memory SIZE",
                     "request buffers shared by all clients\n(default 2G)");
  fprintf(f, "TLS (as nbdkit and qemu-nbd; clients use nbds:// URIs):\n");
  frontend_help_line(f, "    --tls off|on|require",
                     "STARTTLS refused, offered, or required\n(default: require with "
                     "credentials, else off)");
  frontend_help_line(f, "    --tls-certificates DIR",
                     "server-cert.pem, server-key.pem [, ca-cert.pem:\nclients must present "
                     "certificates it signed]");
  frontend_help_line(f, "    --tls-psk FILE", "pre-shared keys (psktool format)");
  fprintf(f, "Export:\n");
  frontend_help_line(f, "    --export-name NAME",
                     "the export's name; clients asking for another\nare refused");
  frontend_help_line(f, "    --description TEXT", "description shown to clients");
  frontend_help_line(f, "-r, --read-only", "refuse writes");
  frontend_help_line(f, "    --min-block-size N",
                     "advertise and enforce a minimum block size\n(power of two)");
  frontend_options_help(f, FRONTEND_VOLUME | FRONTEND_DIRECT);
  fprintf(f, "Clone:\n");
  frontend_options_help(f, FRONTEND_CLONE);
  fprintf(f, "Process:\n");
  frontend_options_help(f, FRONTEND_SERVE | FRONTEND_DAEMON | FRONTEND_COMMON);
  fprintf(
      f, "\n"
         "SIGTERM/SIGINT: stop accepting, finish in-flight requests, flush, commit the clone map.\n"
         "See ferry-nbd(1).\n");
}

/* The settings of one run, parsed from the command line before anything is done. */
struct options {
  struct frontend_options f; /* --source --map ... --control --pidfile --foreground --direct */
  const char *uri;
  const char *export_name, *description;
  const char **tcp, **sockets;
  size_t ntcp, nsockets;
  bool readonly;
  uint64_t max_clients, threads, min_block, buffer_memory, poll_us;
  double handshake_timeout;
  const char *tls, *tls_certificates, *tls_psk;
};

static struct server srv;

static void
on_signal(int sig)
{
  (void)sig;
  server_stop(&srv);
}

static int
push(const char ***v, size_t *n, const char *s)
{
  const char **p = realloc(*v, (*n + 1) * sizeof *p);
  if (!p)
    return error_set(ENOMEM, "out of memory");
  p[(*n)++] = s;
  *v = p;
  return 0;
}

enum {
  OPT_LISTEN = 256,
  OPT_SOCKET,
  OPT_MAX_CLIENTS,
  OPT_THREADS,
  OPT_EXPORT_NAME,
  OPT_DESCRIPTION,
  OPT_MIN_BLOCK,
  OPT_TLS,
  OPT_TLS_CERTIFICATES,
  OPT_TLS_PSK,
  OPT_HANDSHAKE_TIMEOUT,
  OPT_BUFFER_MEMORY,
  OPT_POLL_US,
};

/* ferry-nbd's own flags; the clone, process and volume flags come from frontend/options.c. */
static const struct option long_options[] = {
  { "listen", required_argument, NULL, OPT_LISTEN },
  { "socket", required_argument, NULL, OPT_SOCKET },
  { "max-clients", required_argument, NULL, OPT_MAX_CLIENTS },
  { "threads", required_argument, NULL, OPT_THREADS },
  { "export-name", required_argument, NULL, OPT_EXPORT_NAME },
  { "description", required_argument, NULL, OPT_DESCRIPTION },
  { "read-only", no_argument, NULL, 'r' },
  { "min-block-size", required_argument, NULL, OPT_MIN_BLOCK },
  { "tls", required_argument, NULL, OPT_TLS },
  { "tls-certificates", required_argument, NULL, OPT_TLS_CERTIFICATES },
  { "tls-psk", required_argument, NULL, OPT_TLS_PSK },
  { "handshake-timeout", required_argument, NULL, OPT_HANDSHAKE_TIMEOUT },
  { "buffer-memory", required_argument, NULL, OPT_BUFFER_MEMORY },
  { "poll-us", required_argument, NULL, OPT_POLL_US },
  { NULL, 0, NULL, 0 },
};

static int
take_option(void *opaque, int code, const char *arg)
{
  struct options *o = opaque;
  switch (code) {
  case OPT_LISTEN:
    return push(&o->tcp, &o->ntcp, arg);
  case OPT_SOCKET:
    return push(&o->sockets, &o->nsockets, arg);
  case OPT_MAX_CLIENTS:
    return parse_uint("--max-clients", arg, 0, 1000000, &o->max_clients);
  case OPT_THREADS:
    return parse_uint("--threads", arg, 1, 1024, &o->threads);
  case OPT_EXPORT_NAME:
    if (strlen(arg) > NBD_MAX_STRING)
      return error_set(EINVAL, "--export-name: longer than %d bytes", NBD_MAX_STRING);
    o->export_name = arg;
    return 0;
  case OPT_DESCRIPTION:
    if (strlen(arg) > NBD_MAX_STRING)
      return error_set(EINVAL, "--description: longer than %d bytes", NBD_MAX_STRING);
    o->description = arg;
    return 0;
  case 'r':
    o->readonly = true;
    return 0;
  case OPT_MIN_BLOCK:
    if (parse_size("--min-block-size", arg, &o->min_block) < 0)
      return -1;
    if (!is_power_of_two(o->min_block) || o->min_block > 65536)
      return error_set(EINVAL, "--min-block-size: %s is not a power of two between 1 and 64K", arg);
    return 0;
  case OPT_TLS:
    if (strcmp(arg, "off") && strcmp(arg, "on") && strcmp(arg, "require"))
      return error_set(EINVAL, "--tls: '%s' is not off, on or require", arg);
    o->tls = arg;
    return 0;
  case OPT_TLS_CERTIFICATES:
    o->tls_certificates = arg;
    return 0;
  case OPT_TLS_PSK:
    o->tls_psk = arg;
    return 0;
  case OPT_HANDSHAKE_TIMEOUT: {
    uint64_t v;
    if (parse_uint("--handshake-timeout", arg, 1, 3600, &v) < 0)
      return -1;
    o->handshake_timeout = (double)v;
    return 0;
  }
  case OPT_POLL_US:
    return parse_uint("--poll-us", arg, 0, 1000, &o->poll_us);
  case OPT_BUFFER_MEMORY:
    if (parse_size("--buffer-memory", arg, &o->buffer_memory) < 0)
      return -1;
    if (o->buffer_memory < NBD_MAX_REQUEST)
      return error_set(EINVAL, "--buffer-memory: %s is less than one request (32M)", arg);
    return 0;
  }
  return error_set(EINVAL, "option code %d is not understood", code);
}

static const struct frontend_program program = {
  .name = "ferry-nbd",
  .groups = FRONTEND_CLONE | FRONTEND_SERVE | FRONTEND_DAEMON | FRONTEND_VOLUME | FRONTEND_DIRECT,
  .shortopts = "r",
  .longopts = long_options,
  .take = take_option,
  .usage = usage,
};

/* Returns -1 to continue, else an exit code. */
static int
parse_options(int argc, char **argv, struct options *o)
{
  memset(o, 0, sizeof *o);
  o->max_clients = 128;
  o->threads = 16;
  o->poll_us = 50;
  o->min_block = 0;
  frontend_options_init(&o->f);
  int rc = frontend_parse(&program, argc, argv, &o->f, o);
  if (rc != FRONTEND_CONTINUE)
    return rc;
  if (optind == argc) {
    error_set(EINVAL, o->f.source ? "missing DEST (the clone's destination volume)"
                                  : "missing VOLUME to serve");
    return frontend_usage_error(&program);
  }
  if (argc - optind > 1) {
    error_set(EINVAL, "unexpected argument '%s' (one volume only)", argv[optind + 1]);
    return frontend_usage_error(&program);
  }
  o->uri = argv[optind];
  if (o->tls_certificates && o->tls_psk) {
    error_set(EINVAL, "--tls-certificates and --tls-psk: give one of them");
    return frontend_usage_error(&program);
  }
  bool creds = o->tls_certificates || o->tls_psk;
  if (!o->tls)
    o->tls = creds ? "require" : "off";
  if (strcmp(o->tls, "off") != 0 && !creds) {
    error_set(EINVAL, "--tls=%s needs --tls-certificates DIR or --tls-psk FILE", o->tls);
    return frontend_usage_error(&program);
  }
  if (strcmp(o->tls, "off") == 0 && creds) {
    error_set(EINVAL, "--tls=off with --tls-certificates/--tls-psk: say --tls=on or require");
    return frontend_usage_error(&program);
  }
  return -1;
}

static unsigned
count_clients(void *opaque)
{
  return server_clients(opaque);
}

/* Sockets from the service manager, or the --listen/--socket ones.  -1 when listening, else
 * the exit code. */
static int
start_listening(struct options *o, struct listeners *l)
{
  int act = listen_activation(l);
  if (act < 0) {
    log_error("%s", error_message());
    return EXIT_FAIL;
  }
  if (act > 0) {
    if (o->ntcp || o->nsockets) {
      error_set(EINVAL, "--listen/--socket cannot be combined with socket activation (LISTEN_FDS)");
      return frontend_usage_error(&program);
    }
    o->f.foreground = true; /* the service manager supervises us */
    return -1;
  }
  if (!o->ntcp && !o->nsockets && push(&o->tcp, &o->ntcp, "127.0.0.1:10809") < 0) {
    log_error("%s", error_message());
    return EXIT_FAIL;
  }
  for (size_t i = 0; i < o->ntcp; i++)
    if (listen_tcp(l, o->tcp[i]) < 0) {
      log_error("%s", error_message());
      return EXIT_FAIL;
    }
  for (size_t i = 0; i < o->nsockets; i++)
    if (listen_unix(l, o->sockets[i]) < 0) {
      log_error("%s", error_message());
      return EXIT_FAIL;
    }
  return -1;
}

/* The volume to serve: VOLUME, or the clone of --source into DEST.  0 or -1 (message set). */
static int
open_volume(const struct options *o, struct volume **vol, struct clone **clone)
{
  struct volume_options vo;
  volume_options_init(&vo);
  vo.readonly = o->readonly;
  vo.direct = o->f.direct;
  vo.connections = o->f.connections;
  if (!o->f.source)
    return volume_open(o->uri, &vo, vol) < 0 ? -1 : 0;
  struct clone_options co;
  frontend_clone_options(&o->f, &co);
  co.dest = vo;
  co.dest.readonly = false; /* hydration writes the destination */
  if (clone_open(o->f.source, o->f.map, o->uri, &co, clone) < 0)
    return -1;
  *vol = clone_volume(*clone);
  return 0;
}

static void
export_init(const struct options *o, struct volume *vol, struct clone *clone,
            const struct tls_config *tls, struct nbd_budget *budget, struct nbd_export *exp)
{
  *exp = (struct nbd_export){
    .vol = vol,
    .clone = clone,
    .name = o->export_name ? o->export_name : "",
    .strict_name = o->export_name != NULL,
    .description = o->description,
    .readonly = o->readonly || !volume_can(vol, VOLUME_CAN_WRITE),
    .min_block = vol->min_block > o->min_block ? vol->min_block : (uint32_t)o->min_block,
    .preferred_block = vol->preferred_block,
    .max_block = NBD_MAX_REQUEST,
    .tls_mode = strcmp(o->tls, "require") == 0 ? NBD_TLS_REQUIRE
                : strcmp(o->tls, "on") == 0    ? NBD_TLS_ON
                                               : NBD_TLS_OFF,
    .tls = tls,
    .budget = budget,
  };
  if (exp->min_block == 0)
    exp->min_block = 1;
  if (exp->preferred_block < exp->min_block || exp->preferred_block < 512)
    exp->preferred_block = exp->min_block > 512 ? exp->min_block : 512;
}

/* Listen, daemonize, open, serve until a signal, shut down.  Returns the exit code. */
static int
run(struct options *o)
{
  int rc = EXIT_FAIL;
  struct listeners l = { 0 };
  struct volume *vol = NULL;
  struct clone *clone = NULL;
  struct control_server *ctl = NULL;
  struct daemon d = { .ready_fd = -1 };
  struct tls_config *tls = NULL;
  struct nbd_budget *budget = NULL;
  bool srv_ok = false;

  /* Credentials first: a bad certificate is a startup error, not every client's. */
  if (strcmp(o->tls, "off") != 0 && tls_config_load(o->tls_certificates, o->tls_psk, &tls) < 0) {
    log_error("%s", error_message());
    goto out;
  }
  if (!(budget = nbd_budget_new(o->buffer_memory))) {
    log_error("out of memory");
    goto out;
  }
  int r = start_listening(o, &l);
  if (r >= 0) {
    rc = r;
    goto out;
  }
  /* Fork before opening the volume: drivers and the clone start threads. */
  if (daemon_start(&d, o->f.foreground, o->f.pidfile) < 0 || open_volume(o, &vol, &clone) < 0) {
    log_error("%s", error_message());
    goto out;
  }
  struct nbd_export exp;
  export_init(o, vol, clone, tls, budget, &exp);
  struct server_params sp = { .threads = (unsigned)o->threads,
                              .max_clients = (unsigned)o->max_clients,
                              .handshake_timeout = o->handshake_timeout,
                              .poll_us = (unsigned)o->poll_us };
  if (server_init(&srv, &exp, &sp) < 0) {
    log_error("%s", error_message());
    goto out;
  }
  srv_ok = true;
  struct sigaction sa = { .sa_handler = on_signal };
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  if (o->f.control) {
    struct control_hooks hooks = { .clients = count_clients, .opaque = &srv };
    if (control_server_start(o->f.control, "ferry-nbd", clone, vol->size, &hooks, &ctl) < 0) {
      log_error("%s", error_message());
      goto out;
    }
  }
  debug("nbd", "serving %s (%" PRIu64 " bytes%s%s) on %zu socket(s)", vol->name, vol->size,
        exp.readonly ? ", read-only" : "", clone ? ", clone" : "", l.n);
  if (tls)
    debug("nbd", "TLS %s: %s", o->tls, tls_config_describe(tls));
  /* Listening, volume open: write the pidfile, and the parent may exit and scripts connect. */
  if (daemon_ready(&d) < 0) {
    log_error("%s", error_message());
    goto out;
  }
  if (server_run(&srv, l.fds, l.n) < 0) {
    log_error("%s", error_message());
    goto out;
  }
  rc = EXIT_OK;

out:
  if (ctl)
    control_server_stop(ctl);
  listeners_close(&l);
  /* Every connection is closed: make what clients wrote durable before we exit. */
  if (clone) {
    if (clone_close(clone) < 0) {
      log_error("%s", error_message());
      rc = EXIT_FAIL;
    }
  } else if (vol) {
    if (volume_can(vol, VOLUME_CAN_WRITE) && volume_flush(vol) < 0) {
      log_error("%s", error_message());
      rc = EXIT_FAIL;
    }
    volume_close(vol);
  }
  if (srv_ok) {
    /* The handlers write to the server's pipe, which is about to close. */
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    server_destroy(&srv);
  }
  daemon_finish(&d);
  tls_config_free(tls);
  nbd_budget_free(budget);
  return rc;
}

int
main(int argc, char **argv)
{
  log_init("ferry-nbd");
  struct options o;
  int rc = parse_options(argc, argv, &o);
  if (rc < 0) {
    rc = run(&o);
    if (rc == EXIT_OK)
      log_info("stopped");
  }
  free(o.tcp);
  free(o.sockets);
  return rc;
}
