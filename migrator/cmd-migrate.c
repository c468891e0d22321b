/* ferry migrate: PLACEHOLDER, being written. */
#include "migrator/commands.h"
#include <stdio.h>

int
cmd_migrate(int argc, char **argv)
{
  (void)argc;
  (void)argv;
  fprintf(stderr, "ferry migrate: not implemented yet\n");
  return EXIT_FAIL;
}
