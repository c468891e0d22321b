/* ferry copy: PLACEHOLDER, being written. */
#include "migrator/commands.h"
#include <stdio.h>

int
cmd_copy(int argc, char **argv)
{
  (void)argc;
  (void)argv;
  fprintf(stderr, "ferry copy: not implemented yet\n");
  return EXIT_FAIL;
}
