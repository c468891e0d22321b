/* Test helper: serve a control socket with nothing else around it, so the control protocol
 * can be tested without ferry-nbd or ferry-fuse.
 *
 *   control-server [--pidfile F] [--clients N] --size BYTES SOCKET          (plain volume)
 *   control-server [--pidfile F] [--rate R] [--paused] [--region-size N] [--workers N]
 *                  --source SRC --map MAP DEST SOCKET                       (a clone)
 *
 * The pidfile is written once the socket accepts connections.  Runs until SIGTERM/SIGINT,
 * then stops the server and closes the clone (so leak checkers see a clean exit).
 */
#include "backends/clone.h"
#include "common/control.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static unsigned fake_clients;

static unsigned
count_clients(void *opaque)
{
  (void)opaque;
  return fake_clients;
}

int
main(int argc, char **argv)
{
  log_init("control-server");
  /* clang-format off */
  static const struct option opts[] = {
    { "pidfile", required_argument, NULL, 'p' },
    { "clients", required_argument, NULL, 'c' },
    { "size", required_argument, NULL, 's' },
    { "rate", required_argument, NULL, 'r' },
    { "paused", no_argument, NULL, 'P' },
    { "region-size", required_argument, NULL, 'R' },
    { "workers", required_argument, NULL, 'w' },
    { "source", required_argument, NULL, 'S' },
    { "map", required_argument, NULL, 'M' },
    { NULL, 0, NULL, 0 },
  };
  /* clang-format on */
  const char *pidfile = NULL, *source = NULL, *map = NULL;
  uint64_t size = 0, n = 0;
  struct clone_options co;
  clone_options_init(&co);
  int o;
  while ((o = getopt_long(argc, argv, "v", opts, NULL)) != -1) {
    int r = 0;
    switch (o) {
    case 'p':
      pidfile = optarg;
      break;
    case 'c':
      r = parse_uint("--clients", optarg, 0, 1000, &n);
      fake_clients = n;
      break;
    case 's':
      r = parse_size("--size", optarg, &size);
      break;
    case 'r':
      r = parse_size("--rate", optarg, &co.rate);
      break;
    case 'P':
      co.start_paused = true;
      break;
    case 'R':
      r = parse_size("--region-size", optarg, &co.region_size);
      break;
    case 'w':
      r = parse_uint("--workers", optarg, 1, 64, &n);
      co.workers = n;
      break;
    case 'S':
      source = optarg;
      break;
    case 'M':
      map = optarg;
      break;
    case 'v':
      log_set_verbose(true);
      break;
    default:
      return 2;
    }
    if (r < 0) {
      log_error("%s", error_message());
      return 2;
    }
  }
  bool is_clone = source || map;
  if (argc - optind != (is_clone ? 2 : 1) || (is_clone && !(source && map))) {
    fprintf(stderr, "usage: see the comment at the top of tests/control-server.c\n");
    return 2;
  }
  const char *sock = argv[argc - 1];

  /* Block the stop signals before any thread starts, then wait for them below. */
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, NULL);

  struct clone *c = NULL;
  if (is_clone) {
    if (clone_open(source, map, argv[optind], &co, &c) < 0) {
      log_error("%s", error_message());
      return 1;
    }
    size = clone_volume(c)->size;
  }
  struct control_hooks hooks = { .clients = count_clients };
  struct control_server *srv;
  if (control_server_start(sock, "control-server", c, size, &hooks, &srv) < 0) {
    log_error("%s", error_message());
    if (c)
      clone_close(c);
    return 1;
  }
  if (pidfile) {
    FILE *f = fopen(pidfile, "w");
    if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f) != 0) {
      log_error("%s: cannot write the pidfile", pidfile);
      return 1;
    }
  }
  int sig;
  sigwait(&stop, &sig);
  control_server_stop(srv);
  int r = 0;
  if (c && clone_close(c) < 0) {
    log_error("%s", error_message());
    r = 1;
  }
  if (pidfile)
    unlink(pidfile);
  return r;
}
