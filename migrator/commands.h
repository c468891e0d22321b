/* ferry: subcommands of the `ferry` program.  Each returns the process exit code:
 * 0 success, 1 the operation failed, 2 bad usage (unknown flag, bad value). */
#ifndef FERRY_COMMANDS_H
#define FERRY_COMMANDS_H

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

int cmd_copy(int argc, char **argv);
int cmd_hydrate(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_wait(int argc, char **argv);
int cmd_pause(int argc, char **argv);
int cmd_resume(int argc, char **argv);
int cmd_release(int argc, char **argv);
int cmd_set_rate(int argc, char **argv);
int cmd_migrate(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_live_move(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_send(int argc, char **argv);
int cmd_receive(int argc, char **argv);

#endif
