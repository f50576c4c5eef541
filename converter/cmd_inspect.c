/* cmd_inspect.c: `i2i inspect FILE`: what a model or checkpoint holds.
 *
 * For ONNX files: family, channels, size multiple, parameter count, op counts, metadata and
 * every compute node with its output shape at a sample size. For PyTorch checkpoints (picked
 * by their magic bytes): keys, shapes, architecture, domains, colour order and every pickle
 * global, through the converter's reader (convert.c). Strings from a file are printed in their
 * display form (pth_shown); FIFOs, devices and sockets are refused before anything opens them.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "convert.h"
#include "pth.h"

/* The display form of a string from a model file, bounded by buf[0..len) (pth_shown). */
static const char *shown(const char *s, char *buf, size_t len) { return pth_shown(s, s ? strlen(s) : 0, buf, len); }

static const char *family_name(i2i_family f) {
  switch (f) {
  case I2I_FAMILY_RESNET: return "resnet (CycleGAN ResnetGenerator)";
  case I2I_FAMILY_UNET: return "unet (Pix2Pix UnetGenerator)";
  case I2I_FAMILY_PATCHGAN: return "patchgan (PatchGAN discriminator)";
  default: return "unknown";
  }
}

static void print_count(uint64_t v) {
  char buf[32], out[48];
  snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
  int len = (int)strlen(buf), j = 0;
  for (int i = 0; i < len; i++) {
    out[j++] = buf[i];
    if ((len - i - 1) % 3 == 0 && i != len - 1) out[j++] = ',';
  }
  out[j] = 0;
  fputs(out, stdout);
}

static int inspect_onnx(const char *path, int size, bool quiet_nodes) {
  i2i_ctx *ctx = cli_ctx(I2I_BACKEND_CPU, 1, 0);
  if (!ctx) return 1;
  i2i_model *m;
  i2i_status st = i2i_model_load_file(ctx, path, &m);
  char b1[1024], b2[1024];
  if (st) {
    cli_error("inspect", "%s", shown(i2i_ctx_errmsg(ctx), b1, sizeof b1));
    i2i_ctx_free(ctx);
    return 1;
  }
  i2i_model_info in;
  i2i_model_get_info(m, &in);
  printf("model: %s\n", shown(path, b1, sizeof b1));
  printf("  family:        %s\n", family_name(in.family));
  printf("  channels:      %d in, %d out\n", in.in_channels, in.out_channels);
  printf("  size multiple: %d (smallest padded side %d)\n", in.size_multiple, in.min_side);
  printf("  parameters:    ");
  print_count(in.n_params);
  printf("\n  graph:         %d compute nodes (%d folded at load), opset %d, IR version %lld\n", in.n_nodes, in.n_folded,
         in.opset, (long long)in.ir_version);
  if (in.n_dropout || in.n_batchnorm) printf("  pix2pix:       %d Dropout, %d BatchNorm\n", in.n_dropout, in.n_batchnorm);
  int nn = i2i_model_node_count(m);
  /* op counts */
  const char *ops[64];
  int counts[64], nops = 0;
  for (int i = 0; i < nn; i++) {
    i2i_node_desc d;
    i2i_model_node(m, i, &d);
    int k = 0;
    while (k < nops && strcmp(ops[k], d.op_type)) k++;
    if (k == nops && nops < 64) {
      ops[nops] = d.op_type;
      counts[nops++] = 0;
    }
    if (k < 64) counts[k]++;
  }
  printf("  ops:          ");
  for (int k = 0; k < nops; k++) printf(" %s x%d%s", shown(ops[k], b1, 256), counts[k], k + 1 < nops ? "," : "");
  printf("\n");
  size_t nmeta = i2i_model_meta_count(m);
  printf("metadata (%zu):\n", nmeta);
  for (size_t i = 0; i < nmeta; i++) {
    /* a value is cut at about 200 bytes, between characters */
    printf("  %s = %s\n", shown(i2i_model_meta_key(m, i), b1, sizeof b1), shown(i2i_model_meta_value(m, i), b2, 204));
  }
  int status = 0;
  if (!quiet_nodes) {
    /* the sample side: SIZE rounded up to the size multiple, at least the smallest side */
    int mult = in.size_multiple > 0 ? in.size_multiple : 1, s = size, rem = size % mult;
    if (rem && __builtin_add_overflow(s, mult - rem, &s)) {
      cli_error("inspect", "--size %d rounded up to the model's size multiple %d exceeds %d", size, mult, INT_MAX);
      status = 1;
      goto done;
    }
    if (s < in.min_side) s = in.min_side;
    int64_t (*shapes)[4] = calloc((size_t)nn + 1, sizeof *shapes);
    if (!shapes) {
      cli_error("inspect", "out of memory listing %d nodes", nn);
      status = 1;
    } else if (i2i_model_shapes(ctx, m, 1, s, s, shapes) == I2I_OK) {
      printf("nodes (output shapes for a 1x%dx%dx%d input):\n", in.in_channels, s, s);
      for (int i = 0; i < nn; i++) {
        i2i_node_desc d;
        i2i_model_node(m, i, &d);
        printf("  %3d %-22s %-40s [%lld, %lld, %lld, %lld]\n", i, shown(d.op_type, b1, 256), shown(d.name, b2, 41), (long long)shapes[i][0],
               (long long)shapes[i][1], (long long)shapes[i][2], (long long)shapes[i][3]);
      }
    } else {
      printf("nodes: shapes at %dx%d fail: %s\n", s, s, shown(i2i_ctx_errmsg(ctx), b1, sizeof b1));
    }
    free(shapes);
  }
done:
  i2i_model_free(m);
  i2i_ctx_free(ctx);
  return status;
}

int cmd_inspect(int argc, char **argv) {
  int size = 256;
  gboolean brief = FALSE, strict = FALSE;
  GOptionEntry entries[] = {
    {"size", 's', 0, G_OPTION_ARG_INT, &size, "Show node shapes for an input of SIZE x SIZE (default 256)", "SIZE"},
    {"brief", 'b', 0, G_OPTION_ARG_NONE, &brief, "Omit the node list", NULL},
    {"strict", 0, 0, G_OPTION_ARG_NONE, &strict, "Checkpoints: refuse any global outside the allowlist, also in meta", NULL},
    {NULL, 0, 0, 0, NULL, NULL, NULL}};
  GOptionContext *oc = g_option_context_new("FILE - show what a model (.onnx) or checkpoint (.pth) holds");
  g_option_context_add_main_entries(oc, entries, NULL);
  g_option_context_set_description(oc,
    "ONNX models: family, channels, size multiple, parameters, metadata and each node with its output shape.\n"
    "PyTorch checkpoints (zip or legacy format, by their first bytes; nothing in them is executed):\n"
    "keys, shapes and dtypes, the detected architecture, domains, colour order and every pickle global.");
  GError *err = NULL;
  if (!g_option_context_parse(oc, &argc, &argv, &err)) {
    cli_error("inspect", "%s", err->message);
    g_error_free(err);
    g_option_context_free(oc);
    return 2;
  }
  g_option_context_free(oc);
  if (argc != 2) {
    cli_error("inspect", "expects one FILE (see --help)");
    return 2;
  }
  if (size < 1) {
    cli_error("inspect", "--size must be at least 1, not %d", size);
    return 2;
  }
  const char *path = argv[1];
  /* a FIFO would block the first open() until a writer comes; a missing file or a folder is
   * reported by the loaders below */
  struct stat sb;
  if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode) && !S_ISDIR(sb.st_mode)) {
    char b[1024];
    cli_error("inspect", "'%s' is %s, not a model or checkpoint file; nothing was read", shown(path, b, sizeof b),
              S_ISFIFO(sb.st_mode) ? "a FIFO (named pipe)" : S_ISSOCK(sb.st_mode) ? "a socket" : "a device");
    return 1;
  }
  if (convert_is_checkpoint(path)) {
    cli_check_manifest_override("inspect"); /* ONNX files do not use the manifest */
    return convert_inspect_checkpoint(path, strict, stdout);
  }
  return inspect_onnx(path, size, brief);
}
