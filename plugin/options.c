/* options.c: the plug-in's argument table, defaults and range checks.
 *
 * One table serves every GIMP version: the 2.10 glue turns it into GimpParamDefs, the GIMP 3
 * glue into typed, ranged arguments (with the nicks as dialog labels), and the README documents the same rows. The
 * checks return messages that name the argument, the value and the allowed range. Whether a
 * model exists or has an id0 variant is not checked here (models.c does that).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "i2i_plugin.h"

static const i2i_arg_def arg_table[] = {
  {"strength", I2I_ARG_FLOAT, 0, 100, 100,
   "Blend with the original in percent: 0 leaves the layer unchanged, 100 is the model's output "
   "(default 100)",
   "_Strength (%)"},
  {"device", I2I_ARG_INT, 0, 2, I2I_DEVICE_AUTO,
   "Device: 0 automatic (the GPU when a usable one exists, else the CPU), 1 GPU (CUDA; an error "
   "when none is usable), 2 CPU (default 0)",
   "_Device"},
  {"variant", I2I_ARG_INT, 0, 1, I2I_VARIANT_STANDARD,
   "Model variant: 0 standard, 1 id0 (the CycleGAN trained without identity loss; only for "
   "directions published with one) (default 0)",
   "_Variant"},
  {"seed", I2I_ARG_INT, INT32_MIN, INT32_MAX, 0,
   "Pix2Pix variation seed: the dropout pattern in faithful mode; CycleGAN models ignore it "
   "(default 0)",
   "Variation s_eed"},
  {"pix2pix-mode", I2I_ARG_INT, 0, 2, I2I_PIX2PIX_FAITHFUL,
   "Pix2Pix test-time behaviour: 0 faithful (batch statistics and dropout, as mmagic measured "
   "its scores), 1 deterministic (no dropout), 2 eval (running statistics); CycleGAN models "
   "ignore it (default 0)",
   "Pix2Pix _mode"},
  {"scale", I2I_ARG_INT, 0, I2I_SCALE_MAX, I2I_SCALE_DEFAULT,
   "Working resolution: the short side in pixels the model runs at, the change being brought "
   "back to full size; 0 runs at native size; layers whose short side is smaller run natively; "
   "otherwise 64..65536 (default 512, as `i2i translate`)",
   "_Working size (px, 0 = native)"},
  {"memory-mb", I2I_ARG_INT, 0, I2I_MEMORY_MB_MAX, 0,
   "Engine working-memory budget in MiB; past it the engine works in tiles; 0 = automatic "
   "(default 0)",
   "Memory _budget (MiB, 0 = auto)"},
};

static const i2i_arg_def arg_model = {
  "model", I2I_ARG_STRING, 0, 0, 0,
  "Model: a task name (e.g. winter2summer, looked up as <name>.onnx in $I2I_MODEL_PATH, "
  "~/.local/share/i2i/models and the installed models; fine-tuned models included) or the path "
  "of an .onnx file",
  "_Model"};

const i2i_arg_def *i2i_arg_table(size_t *n) {
  if (n) *n = G_N_ELEMENTS(arg_table);
  return arg_table;
}

const i2i_arg_def *i2i_arg_model(void) { return &arg_model; }

void i2i_opts_default(i2i_opts *o) {
  memset(o, 0, sizeof *o);
  o->strength = 100.0;
  o->device = I2I_DEVICE_AUTO;
  o->variant = I2I_VARIANT_STANDARD;
  o->seed = 0;
  o->pix2pix_mode = I2I_PIX2PIX_FAITHFUL;
  o->scale = I2I_SCALE_DEFAULT;
  o->memory_mb = 0;
}

static char *int_range(const char *name, long v, long lo, long hi, const char *what) {
  if (v >= lo && v <= hi) return NULL;
  return g_strdup_printf("i2i: argument '%s' is %ld; it must be within %ld..%ld (%s)", name, v, lo, hi, what);
}

char *i2i_opts_check(const i2i_opts *o) {
  char *e;
  if (!(o->strength >= 0.0 && o->strength <= 100.0)) {
    char buf[64];
    g_ascii_formatd(buf, sizeof buf, "%g", o->strength);
    return g_strdup_printf("i2i: argument 'strength' is %s; it must be within 0..100 (percent)", buf);
  }
  if ((e = int_range("device", o->device, 0, 2, "0 automatic, 1 GPU, 2 CPU"))) return e;
  if ((e = int_range("variant", o->variant, 0, 1, "0 standard, 1 id0"))) return e;
  if ((e = int_range("pix2pix-mode", o->pix2pix_mode, 0, 2, "0 faithful, 1 deterministic, 2 eval")))
    return e;
  if (o->scale != 0 && (o->scale < I2I_SCALE_MIN || o->scale > I2I_SCALE_MAX))
    return g_strdup_printf("i2i: argument 'scale' is %d; it must be 0 (native size) or a short side of "
                           "%d..%d pixels", (int)o->scale, I2I_SCALE_MIN, I2I_SCALE_MAX);
  if ((e = int_range("memory-mb", o->memory_mb, 0, I2I_MEMORY_MB_MAX, "MiB, 0 = automatic"))) return e;
  if (memchr(o->model, 0, sizeof o->model) == NULL)
    return g_strdup_printf("i2i: argument 'model' is longer than %d bytes", I2I_MODEL_MAX - 1);
  return NULL;
}

bool i2i_rgba_bytes(size_t width, size_t height, size_t *bytes) {
  size_t px, b;
  if (!g_size_checked_mul(&px, width, height)) return false;
  if (!g_size_checked_mul(&b, px, 4 * sizeof(float))) return false;
  *bytes = b;
  return true;
}
