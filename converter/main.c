/* main.c: the `i2i` command-line tool: dispatch to its subcommands.
 *
 * i2i translate | inspect | convert | finetune | fetch; each subcommand has --help. The tool is
 * a client of the engine API (engine/include/i2i.h) like the plug-in; it links no CUDA library.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct {
  const char *name;
  int (*fn)(int, char **);
  const char *what;
} cmds[] = {
  {"translate", cmd_translate, "translate images, folders or .npy arrays with a model"},
  {"inspect", cmd_inspect, "show what a model (.onnx) or checkpoint (.pth) holds"},
  {"convert", cmd_convert, "convert a PyTorch checkpoint (.pth) into ONNX models"},
  {"finetune", cmd_finetune, "continue training a model on your own pictures"},
  {"fetch", cmd_fetch, "download, verify, convert and install the published models"},
};

static void usage(FILE *f) {
  fprintf(f, "Usage: i2i COMMAND [OPTIONS...]\n\nImage-to-image translation with the CycleGAN and Pix2Pix models.\n\nCommands:\n");
  for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) fprintf(f, "  %-10s %s\n", cmds[i].name, cmds[i].what);
  fprintf(f, "\n`i2i COMMAND --help` describes a command. `i2i --version` prints the version.\n");
}

int main(int argc, char **argv) {
  i2i_openmp_reexec(argv);
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    usage(stdout);
    return 0;
  }
  if (!strcmp(argv[1], "--version")) {
    printf("i2i %s\n", i2i_version());
    return 0;
  }
  for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
    if (!strcmp(argv[1], cmds[i].name)) {
      /* GOption's usage line and messages name the program: "i2i translate", not "translate" */
      char prg[32];
      snprintf(prg, sizeof prg, "i2i %s", cmds[i].name);
      g_set_prgname(prg);
      return cmds[i].fn(argc - 1, argv + 1);
    }
  fprintf(stderr, "i2i: unknown command '%s'\n\n", argv[1]);
  usage(stderr);
  return 2;
}
