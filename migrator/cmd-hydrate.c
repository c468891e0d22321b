/* ferry hydrate: PLACEHOLDER, being written. */
#include "migrator/commands.h"
#include <stdio.h>

int
cmd_hydrate(int argc, char **argv)
{
  (void)argc;
  (void)argv;
  fprintf(stderr, "ferry hydrate: not implemented yet\n");
  return EXIT_FAIL;
}
