/* cmd_finetune.c: `i2i finetune`: continue training a model on the user's own pictures.
 *
 * The command line of the training path (design.md, Training). The engine's training API
 * (backward ops, losses, Adam, the CycleGAN and Pix2Pix steps) is not in this version yet, so
 * the command says so instead of pretending.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

int cmd_finetune(int argc, char **argv) {
  GOptionContext *oc = g_option_context_new("MODEL DATA... - continue training a model on your own pictures");
  g_option_context_set_description(oc, "Not available in this version: the engine's training path is being built.");
  GError *gerr = NULL;
  if (!g_option_context_parse(oc, &argc, &argv, &gerr)) {
    cli_error("finetune", "%s", gerr->message);
    g_error_free(gerr);
    g_option_context_free(oc);
    return 2;
  }
  g_option_context_free(oc);
  cli_error("finetune", "not available in this version of i2i (the training path is not built yet)");
  return 2;
}
