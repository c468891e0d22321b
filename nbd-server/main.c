/* ferry-nbd: an NBD server over any ferry volume, or over a lazy clone that hydrates while
 * it is served.  This file: options, startup order, daemonizing, signals, shutdown. */
#include "nbd-server/nbd.h"
#include "nbd-server/protocol.h"
#include "nbd-server/serve.h"
#include "backends/clone.h"
#include "backends/volume.h"
#include "common/control.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

static void
usage(FILE *f)
{
  fprintf(
      f,
      "Usage: ferry-nbd [OPTIONS] VOLUME\n"
      "       ferry-nbd [OPTIONS] --source SRC --map MAP [CLONE OPTIONS] DEST\n"
      "\n"
      "Serve a volume (a path, file://, nbd://, nbd+unix://, http(s):// URI) over NBD, or a\n"
      "lazy clone of SRC into DEST that is copied in the background while it is served.\n"
      "\n"
      "Listening (default --listen 127.0.0.1:10809):\n"
      "  --listen HOST:PORT      TCP address; [ADDR]:PORT for IPv6; repeatable\n"
      "  --socket PATH           unix socket; repeatable\n"
      "                          (systemd socket activation via LISTEN_FDS is automatic)\n"
      "  --max-clients N         refuse connections beyond N at once (default 128, 0 = no limit)\n"
      "  --threads N             worker threads per connection (default 16)\n"
      "Export:\n"
      "  --export-name NAME      the export's name; clients asking for another are refused\n"
      "  --description TEXT      description shown to clients (NBD_INFO_DESCRIPTION)\n"
      "  -r, --read-only         refuse writes\n"
      "  --min-block-size N      advertise and enforce a minimum block size (power of two)\n"
      "  --direct                open files with O_DIRECT\n"
      "Clone:\n"
      "  --source SRC            the read-only source volume\n"
      "  --map MAP               region map file (created when missing)\n"
      "  --region-size S         region size for a new map (default 64K)\n"
      "  --workers N             hydrator workers\n"
      "  --rate R                hydrator rate limit, bytes/s (e.g. 50M; default unlimited)\n"
      "  --paused                the hydrator starts paused (resume through --control)\n"
      "  --size S                the clone's size when larger than SRC (reads zeroes past\n"
      "                          SRC's end: room for a qcow2 image file to grow)\n"
      "Process:\n"
      "  -f, --foreground        do not daemonize (default: daemonize once listening)\n"
      "  --pidfile PATH          write the server's PID once it accepts connections\n"
      "  --control PATH          control socket (status, pause, resume, set-rate, wait)\n"
      "  -v, --verbose           debug messages (or FERRY_DEBUG=nbd,clone,...)\n"
      "  -h, --help              this text\n"
      "  -V, --version           print the version\n"
      "\n"
      "SIGTERM/SIGINT: stop accepting, finish in-flight requests, flush, commit the clone map.\n"
      "See ferry-nbd(1).\n");
}

struct options {
  const char *uri, *source, *map;
  const char *export_name, *description, *pidfile, *control;
  const char **tcp, **sockets;
  size_t ntcp, nsockets;
  bool readonly, foreground, direct;
  uint64_t max_clients, threads, min_block;
  struct clone_options clone;
  bool clone_flags; /* a clone-only flag was given */
};

static struct server srv;

static void
on_signal(int sig)
{
  (void)sig;
  server_stop(&srv);
}

static int bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int
bad_usage(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "ferry-nbd: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\nTry 'ferry-nbd --help'.\n");
  va_end(ap);
  return EXIT_USAGE;
}

static int
push(const char ***v, size_t *n, const char *s)
{
  const char **p = realloc(*v, (*n + 1) * sizeof *p);
  if (!p)
    return -1;
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
  OPT_DIRECT,
  OPT_SOURCE,
  OPT_MAP,
  OPT_REGION_SIZE,
  OPT_WORKERS,
  OPT_RATE,
  OPT_PAUSED,
  OPT_SIZE,
  OPT_PIDFILE,
  OPT_CONTROL,
};

static const struct option long_options[] = {
  { "listen", required_argument, NULL, OPT_LISTEN },
  { "socket", required_argument, NULL, OPT_SOCKET },
  { "max-clients", required_argument, NULL, OPT_MAX_CLIENTS },
  { "threads", required_argument, NULL, OPT_THREADS },
  { "export-name", required_argument, NULL, OPT_EXPORT_NAME },
  { "description", required_argument, NULL, OPT_DESCRIPTION },
  { "read-only", no_argument, NULL, 'r' },
  { "min-block-size", required_argument, NULL, OPT_MIN_BLOCK },
  { "direct", no_argument, NULL, OPT_DIRECT },
  { "source", required_argument, NULL, OPT_SOURCE },
  { "map", required_argument, NULL, OPT_MAP },
  { "region-size", required_argument, NULL, OPT_REGION_SIZE },
  { "workers", required_argument, NULL, OPT_WORKERS },
  { "rate", required_argument, NULL, OPT_RATE },
  { "paused", no_argument, NULL, OPT_PAUSED },
  { "size", required_argument, NULL, OPT_SIZE },
  { "foreground", no_argument, NULL, 'f' },
  { "pidfile", required_argument, NULL, OPT_PIDFILE },
  { "control", required_argument, NULL, OPT_CONTROL },
  { "verbose", no_argument, NULL, 'v' },
  { "help", no_argument, NULL, 'h' },
  { "version", no_argument, NULL, 'V' },
  { NULL, 0, NULL, 0 },
};

/* Returns -1 to continue, else an exit code. */
static int
parse_options(int argc, char **argv, struct options *o)
{
  memset(o, 0, sizeof *o);
  o->max_clients = 128;
  o->threads = 16;
  o->min_block = 0;
  clone_options_init(&o->clone);
  o->clone.hydrate = true;
  int c;
  uint64_t v;
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":rfvhV", long_options, NULL)) != -1) {
    switch (c) {
    case OPT_LISTEN:
      if (push(&o->tcp, &o->ntcp, optarg) < 0)
        return EXIT_FAIL;
      break;
    case OPT_SOCKET:
      if (push(&o->sockets, &o->nsockets, optarg) < 0)
        return EXIT_FAIL;
      break;
    case OPT_MAX_CLIENTS:
      if (parse_uint("--max-clients", optarg, 0, 1000000, &o->max_clients) < 0)
        return bad_usage("%s", error_message());
      break;
    case OPT_THREADS:
      if (parse_uint("--threads", optarg, 1, 1024, &o->threads) < 0)
        return bad_usage("%s", error_message());
      break;
    case OPT_EXPORT_NAME:
      if (strlen(optarg) > NBD_MAX_STRING)
        return bad_usage("--export-name: longer than %d bytes", NBD_MAX_STRING);
      o->export_name = optarg;
      break;
    case OPT_DESCRIPTION:
      if (strlen(optarg) > NBD_MAX_STRING)
        return bad_usage("--description: longer than %d bytes", NBD_MAX_STRING);
      o->description = optarg;
      break;
    case 'r':
      o->readonly = true;
      break;
    case OPT_MIN_BLOCK:
      if (parse_size("--min-block-size", optarg, &o->min_block) < 0)
        return bad_usage("%s", error_message());
      if (!is_power_of_two(o->min_block) || o->min_block > 65536)
        return bad_usage("--min-block-size: %s is not a power of two between 1 and 64K", optarg);
      break;
    case OPT_DIRECT:
      o->direct = true;
      break;
    case OPT_SOURCE:
      o->source = optarg;
      break;
    case OPT_MAP:
      o->map = optarg;
      break;
    case OPT_REGION_SIZE:
      o->clone_flags = true;
      if (clone_parse_region_size(optarg, &o->clone.region_size) < 0)
        return bad_usage("%s", error_message());
      break;
    case OPT_WORKERS:
      o->clone_flags = true;
      if (parse_uint("--workers", optarg, 1, 256, &v) < 0)
        return bad_usage("%s", error_message());
      o->clone.workers = (unsigned)v;
      break;
    case OPT_RATE:
      o->clone_flags = true;
      if (parse_rate("--rate", optarg, &o->clone.rate) < 0)
        return bad_usage("%s", error_message());
      break;
    case OPT_PAUSED:
      o->clone_flags = true;
      o->clone.start_paused = true;
      break;
    case OPT_SIZE:
      o->clone_flags = true;
      if (parse_size("--size", optarg, &o->clone.size) < 0)
        return bad_usage("%s", error_message());
      break;
    case 'f':
      o->foreground = true;
      break;
    case OPT_PIDFILE:
      o->pidfile = optarg;
      break;
    case OPT_CONTROL:
      o->control = optarg;
      break;
    case 'v':
      log_set_verbose(true);
      break;
    case 'h':
      usage(stdout);
      return EXIT_OK;
    case 'V':
      printf("ferry-nbd %s\n", FERRY_VERSION);
      return EXIT_OK;
    default: /* ':' or '?' */
      getopt_error(c, argv);
      return bad_usage("%s", error_message());
    }
  }
  if (optind == argc)
    return bad_usage(o->source ? "missing DEST (the clone's destination volume)"
                               : "missing VOLUME to serve");
  if (argc - optind > 1)
    return bad_usage("unexpected argument '%s' (one volume only)", argv[optind + 1]);
  o->uri = argv[optind];
  if (o->source && !o->map)
    return bad_usage("--source needs --map MAP (the clone's region map)");
  if (o->map && !o->source)
    return bad_usage("--map needs --source SRC");
  if (o->clone_flags && !o->source)
    return bad_usage("--region-size, --workers, --rate, --paused and --size apply to a clone "
                     "(--source)");
  return -1;
}

static int
write_pidfile(const char *path)
{
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
  FILE *f = fopen(tmp, "w");
  if (!f)
    return error_set_errno(errno, "--pidfile %s", path);
  fprintf(f, "%d\n", (int)getpid());
  /* Written whole, then renamed: a watcher never reads a partial PID. */
  if (fclose(f) != 0 || rename(tmp, path) < 0) {
    int e = errno;
    unlink(tmp);
    return error_set_errno(e, "--pidfile %s", path);
  }
  return 0;
}

/* Fork; the parent waits until the child is ready to serve (exit 0) or failed (exit 1). */
static int
daemonize(int *ready_fd)
{
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0)
    return error_set_errno(errno, "pipe");
  pid_t pid = fork();
  if (pid < 0)
    return error_set_errno(errno, "fork");
  if (pid > 0) {
    close(p[1]);
    char b = 0;
    ssize_t n;
    do
      n = read(p[0], &b, 1);
    while (n < 0 && errno == EINTR);
    if (n == 1 && b == 'R')
      _exit(EXIT_OK);
    int st;
    waitpid(pid, &st, 0);
    _exit(EXIT_FAIL);
  }
  close(p[0]);
  setsid();
  *ready_fd = p[1];
  return 0;
}

static void
detach_stdio(void)
{
  int fd = open("/dev/null", O_RDWR);
  if (fd >= 0) {
    dup2(fd, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    if (fd > 2)
      close(fd);
  }
  log_use_syslog();
}

static unsigned
count_clients(void *opaque)
{
  return server_clients(opaque);
}

int
main(int argc, char **argv)
{
  log_init("ferry-nbd");
  struct options o;
  int rc = parse_options(argc, argv, &o);
  if (rc >= 0) {
    free(o.tcp);
    free(o.sockets);
    return rc;
  }
  rc = EXIT_FAIL;
  struct listeners l = { 0 };
  struct volume *vol = NULL;
  struct clone *clone = NULL;
  struct control_server *ctl = NULL;
  int ready_fd = -1;
  bool srv_ok = false, pid_written = false;

  int act = listen_activation(&l);
  if (act < 0) {
    log_error("%s", error_message());
    goto out;
  }
  if (act > 0) {
    if (o.ntcp || o.nsockets) {
      rc = bad_usage("--listen/--socket cannot be combined with socket activation (LISTEN_FDS)");
      goto out;
    }
    o.foreground = true; /* the service manager supervises us */
  } else {
    if (!o.ntcp && !o.nsockets && push(&o.tcp, &o.ntcp, "127.0.0.1:10809") < 0)
      goto out;
    for (size_t i = 0; i < o.ntcp; i++)
      if (listen_tcp(&l, o.tcp[i]) < 0) {
        log_error("%s", error_message());
        goto out;
      }
    for (size_t i = 0; i < o.nsockets; i++)
      if (listen_unix(&l, o.sockets[i]) < 0) {
        log_error("%s", error_message());
        goto out;
      }
  }

  /* Fork before opening the volume: drivers and the clone start threads. */
  if (!o.foreground && daemonize(&ready_fd) < 0) {
    log_error("%s", error_message());
    goto out;
  }

  struct volume_options vo;
  volume_options_init(&vo);
  vo.readonly = o.readonly;
  vo.direct = o.direct;
  if (o.source) {
    o.clone.dest = vo;
    o.clone.dest.readonly = false; /* hydration writes the destination */
    o.clone.source.direct = o.direct;
    if (clone_open(o.source, o.map, o.uri, &o.clone, &clone) < 0) {
      log_error("%s", error_message());
      goto out;
    }
    vol = clone_volume(clone);
  } else if (volume_open(o.uri, &vo, &vol) < 0) {
    log_error("%s", error_message());
    goto out;
  }

  struct nbd_export exp = {
    .vol = vol,
    .clone = clone,
    .name = o.export_name ? o.export_name : "",
    .strict_name = o.export_name != NULL,
    .description = o.description,
    .readonly = o.readonly || !volume_can(vol, VOLUME_CAN_WRITE),
    .min_block = vol->min_block > o.min_block ? vol->min_block : (uint32_t)o.min_block,
    .preferred_block = vol->preferred_block,
    .max_block = NBD_MAX_REQUEST,
  };
  if (exp.min_block == 0)
    exp.min_block = 1;
  if (exp.preferred_block < exp.min_block || exp.preferred_block < 512)
    exp.preferred_block = exp.min_block > 512 ? exp.min_block : 512;

  if (server_init(&srv, &exp, (unsigned)o.threads, (unsigned)o.max_clients) < 0) {
    log_error("%s", error_message());
    goto out;
  }
  srv_ok = true;
  struct sigaction sa = { .sa_handler = on_signal };
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  if (o.control) {
    struct control_hooks hooks = { .clients = count_clients, .opaque = &srv };
    if (control_server_start(o.control, "ferry-nbd", clone, vol->size, &hooks, &ctl) < 0) {
      log_error("%s", error_message());
      goto out;
    }
  }
  if (o.pidfile) {
    if (write_pidfile(o.pidfile) < 0) {
      log_error("%s", error_message());
      goto out;
    }
    pid_written = true;
  }
  debug("nbd", "serving %s (%" PRIu64 " bytes%s%s) on %zu socket(s)", vol->name, vol->size,
        exp.readonly ? ", read-only" : "", clone ? ", clone" : "", l.n);
  if (ready_fd >= 0) {
    /* Listening, volume open, pidfile written: the parent may exit and scripts connect. */
    detach_stdio();
    ssize_t w = write(ready_fd, "R", 1);
    (void)w;
    close(ready_fd);
    ready_fd = -1;
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
  if (pid_written)
    unlink(o.pidfile);
  if (ready_fd >= 0)
    close(ready_fd);
  free(o.tcp);
  free(o.sockets);
  if (rc == EXIT_OK)
    log_info("stopped");
  return rc;
}
