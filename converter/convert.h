/* convert.h: the converter: PyTorch checkpoints (mmagic, older mmediting/mmgen and the original
 * authors' layouts) into engine models through the graph builder, and their inspection.
 *
 * The .pth bytes are read by pth/ (never executed); this layer recognises the networks in a
 * state dict, maps their keys onto the ResNet / U-Net / PatchGAN graphs, folds BGR weights into
 * RGB and names each model from the manifest or the file. `i2i convert`, `i2i inspect`,
 * `i2i fetch` and `i2i finetune` use it.
 */
#ifndef I2I_CONVERT_H
#define I2I_CONVERT_H

#include <stdbool.h>
#include <stdio.h>

#include "i2i.h"

typedef struct {
  const char *channel_order; /* "rgb" / "bgr" / NULL: from the manifest or the file name */
  const char *domains;       /* "SRC,DST" names for files whose keys do not name domains */
  const char *task;          /* task name for a single-generator file (default: derived) */
  bool strict;               /* refuse any global outside the allowlist, also in meta */
} convert_opts;

typedef struct {
  char *task;               /* "winter2summer"; a discriminator carries its generator's task */
  bool discriminator;       /* written as <task>.D.onnx, family patchgan */
  char *key;                /* where it came from: "generators.summer", "model" ... */
  char *architecture;       /* "resnet, 9 blocks, 64 channels" */
  i2i_model *model;
} convert_net;

typedef struct {
  convert_net *nets;
  size_t n;
  char *container;          /* "zip" or "legacy" */
  char *layout;             /* "mmagic", "mmediting (generators.a/b)", "original authors (junyanz)" ... */
  char *channel_order;      /* of the checkpoint: "bgr" or "rgb" */
  char *channel_order_from; /* "manifest", "file name", "option", "layout" */
  bool has_discriminators;
  char *globals;            /* every pickle global, comma-separated */
  char *opaque;             /* globals kept as inert values in meta, comma-separated, or "" */
  const i2i_manifest_entry *published; /* a direction of the published file, or NULL */
} convert_set;

/* True when the file starts like a PyTorch checkpoint (zip or legacy pickle magic). */
bool convert_is_checkpoint(const char *path);

/* Reads the checkpoint at `path` and builds a model for every network in it. On success the
 * caller owns *set (convert_set_free). Errors: I2I_E_IO, I2I_E_FORMAT (malformed, a global
 * outside the allowlist inside the weights, missing / unexpected / mis-shaped keys, each named),
 * I2I_E_UNSUPPORTED (unknown architecture), I2I_E_ARG (colour order unknown: the message asks
 * for --channel-order); the message is in `err`. */
i2i_status convert_load(i2i_ctx *ctx, const char *path, const convert_opts *opts, convert_set *set, char *err,
                        size_t errlen);
void convert_set_free(convert_set *set);

/* Writes every network of `set` into `dir` (created if missing) as <task>.onnx / <task>.D.onnx:
 * all into a staging folder inside `dir`, then renamed into place, so a failure (a full disk)
 * changes nothing; Ctrl-C or SIGTERM meanwhile waits for the set. Prints one line per file to
 * `log` (may be NULL). */
/* Removes the files of a staging folder (not the folder itself; not recursive). */
void convert_clear_stage(const char *stage);

i2i_status convert_write(i2i_ctx *ctx, const convert_set *set, const char *dir, FILE *log, char *err, size_t errlen);

/* `i2i inspect` on a checkpoint: keys, shapes, dtypes, architecture, domains, colour order and
 * every pickle global. Returns the process exit status. */
int convert_inspect_checkpoint(const char *path, bool strict, FILE *out);

#endif
