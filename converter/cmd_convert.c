/* cmd_convert.c: `i2i convert CKPT.pth [-o DIR]`: a PyTorch checkpoint into ONNX models.
 *
 * Generators become DIR/<task>.onnx and discriminators DIR/<task>.D.onnx (DIR defaults to the
 * user's model folder, where the plug-in and `i2i translate` find them). The work is convert.c's;
 * this file is the command line around it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "convert.h"

int cmd_convert(int argc, char **argv) {
  gchar *outdir = NULL, *order = NULL, *domains = NULL, *task = NULL;
  gboolean strict = FALSE, no_disc = FALSE;
  GOptionEntry entries[] = {
    {"output-dir", 'o', 0, G_OPTION_ARG_FILENAME, &outdir, "Write the models into DIR (default: ~/.local/share/i2i/models)", "DIR"},
    {"channel-order", 0, 0, G_OPTION_ARG_STRING, &order, "The checkpoint's colour order when neither the manifest nor its name says: rgb or bgr", "ORDER"},
    {"domains", 0, 0, G_OPTION_ARG_STRING, &domains, "Domain names for files whose keys do not name them (generators.a/b, single networks): SRC,DST", "SRC,DST"},
    {"task", 0, 0, G_OPTION_ARG_STRING, &task, "Task name for a single-network file (default: from the domains or the file name)", "NAME"},
    {"strict", 0, 0, G_OPTION_ARG_NONE, &strict, "Refuse any pickle global outside the allowlist, also in meta", NULL},
    {"no-discriminators", 0, 0, G_OPTION_ARG_NONE, &no_disc, "Write the generators only", NULL},
    {NULL, 0, 0, 0, NULL, NULL, NULL}};
  GOptionContext *oc = g_option_context_new("CHECKPOINT.pth - convert a PyTorch checkpoint into ONNX models");
  g_option_context_add_main_entries(oc, entries, NULL);
  g_option_context_set_description(oc,
    "Reads mmagic checkpoints (generators.<domain>.*), older mmediting/mmgen ones (generators.a/b,\n"
    "generator./discriminator.) and the original authors' files (latest_net_G.pth, *_net_D_A.pth), zip or\n"
    "legacy format, without executing anything in them. Task names come from the manifest for the published\n"
    "files, otherwise from the domains. Every model written takes and produces RGB: BGR checkpoints are\n"
    "folded at the first and last layers.");
  GError *gerr = NULL;
  int rc = 2;
  i2i_ctx *ctx = NULL;
  char *dir = NULL;
  if (!g_option_context_parse(oc, &argc, &argv, &gerr)) {
    cli_error("convert", "%s", gerr->message);
    g_error_free(gerr);
    goto out;
  }
  if (argc != 2) {
    cli_error("convert", "expects one CHECKPOINT.pth (see --help)");
    goto out;
  }
  if (order && strcmp(order, "rgb") && strcmp(order, "bgr")) {
    cli_error("convert", "--channel-order must be rgb or bgr");
    goto out;
  }
  if (domains && (!strchr(domains, ',') || strchr(domains, '/'))) {
    cli_error("convert", "--domains takes SRC,DST");
    goto out;
  }
  rc = 1;
  cli_check_manifest_override("convert");
  ctx = cli_ctx(I2I_BACKEND_CPU, 1, 0);
  if (!ctx) goto out;
  if (outdir) dir = g_strdup(outdir);
  else {
    char *d;
    if (i2i_model_user_dir(ctx, &d)) {
      cli_error("convert", "%s", i2i_ctx_errmsg(ctx));
      goto out;
    }
    dir = g_strdup(d);
    i2i_free(ctx, d);
  }
  convert_opts o = {.channel_order = order, .domains = domains, .task = task, .strict = strict};
  convert_set set;
  char err[1024];
  if (convert_load(ctx, argv[1], &o, &set, err, sizeof err)) {
    cli_error("convert", "%s", err);
    goto out;
  }
  if (no_disc) {
    size_t k = 0;
    for (size_t i = 0; i < set.n; i++) {
      if (set.nets[i].discriminator) {
        g_free(set.nets[i].task);
        g_free(set.nets[i].key);
        g_free(set.nets[i].architecture);
        i2i_model_free(set.nets[i].model);
      } else {
        set.nets[k++] = set.nets[i];
      }
    }
    set.n = k;
  }
  printf("%s: %s format, %s layout, %s colour order (from the %s)%s\n", argv[1], set.container, set.layout,
         set.channel_order, set.channel_order_from, set.has_discriminators ? ", with discriminators" : "");
  if (set.opaque[0]) printf("  inert globals in meta (never called): %s\n", set.opaque);
  if (convert_write(ctx, &set, dir, stdout, err, sizeof err)) {
    cli_error("convert", "%s", err);
    convert_set_free(&set);
    goto out;
  }
  convert_set_free(&set);
  rc = 0;
out:
  g_option_context_free(oc);
  i2i_ctx_free(ctx);
  g_free(dir);
  g_free(outdir);
  g_free(order);
  g_free(domains);
  g_free(task);
  return rc;
}
