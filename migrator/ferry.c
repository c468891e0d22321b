/* ferry: the user's tool.  `ferry COMMAND [OPTIONS] ...`; each command lives in its own
 * file (cmd-*.c) and parses its own options. */
#include "common/log.h"
#include "migrator/commands.h"

#include <stdio.h>
#include <string.h>

static const struct command {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *summary;
} commands[] = {
  { "copy", cmd_copy, "copy a volume to another, in parallel, skipping holes" },
  { "send", cmd_send, "write a volume to stdout as one compressed, checksummed stream" },
  { "receive", cmd_receive, "write a `ferry send` stream from stdin to a volume, verified" },
  { "verify", cmd_verify, "are two volumes identical? (or print a volume's block digest)" },
  { "hydrate", cmd_hydrate, "run a lazy clone's background copy until converged" },
  { "status", cmd_status, "show the state of a running clone (control socket)" },
  { "wait", cmd_wait, "wait until a running clone has converged" },
  { "pause", cmd_pause, "pause a running clone's hydrator" },
  { "resume", cmd_resume, "resume a paused hydrator" },
  { "release", cmd_release, "end a held clone's hold: the copy starts (--hold)" },
  { "set-rate", cmd_set_rate, "change a running clone's copy rate limit (bytes/s, 50M, 0)" },
  { "migrate", cmd_migrate, "move a VM's disks to another datastore/cluster" },
  { "live-move", cmd_live_move, "move a running qemu guest's disk live (QMP)" },
  { "demo", cmd_demo, "run a complete move on a built-in throwaway demo world" },
};

static void
usage(FILE *f)
{
  fprintf(f, "Usage: ferry COMMAND [OPTIONS] ...\n\nCommands:\n");
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].summary);
  fprintf(f, "\n`ferry COMMAND --help` describes each command; see also ferry(1).\n");
}

int
main(int argc, char **argv)
{
  log_init("ferry");
  if (argc < 2) {
    usage(stderr);
    return EXIT_USAGE;
  }
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0
      || strcmp(argv[1], "help") == 0) {
    usage(stdout);
    return EXIT_OK;
  }
  if (strcmp(argv[1], "--version") == 0) {
    printf("ferry %s\n", FERRY_VERSION);
    return EXIT_OK;
  }
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
    if (strcmp(argv[1], commands[i].name) == 0) {
      char prog[64];
      snprintf(prog, sizeof prog, "ferry %s", commands[i].name);
      log_init(prog);
      return commands[i].run(argc - 1, argv + 1);
    }
  }
  fprintf(stderr, "ferry: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return EXIT_USAGE;
}
