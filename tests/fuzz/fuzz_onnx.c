/* fuzz_onnx.c: libFuzzer target for the engine's ONNX load: limits, the wire-format pre-scan,
 * protobuf-c decoding under a byte budget, graph checks, constant folding, and shape inference at
 * input sizes taken from the input's last bytes. Every input must either load or fail with a
 * status and a message. Not a unit test; built with -Dfuzz=true (clang), run by tests/fuzz/run.
 */
#include <stdint.h>
#include <string.h>

#include "i2i.h"

static i2i_ctx *ctx;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!ctx) {
    i2i_ctx_params p;
    i2i_ctx_default_params(&p);
    p.backend = I2I_BACKEND_CPU;
    p.threads = 1;
    p.limits.max_model_bytes = 1 << 22;
    if (i2i_ctx_create(&p, &ctx)) return 0;
  }
  i2i_model *m = NULL;
  i2i_status st = i2i_model_load_memory(ctx, data, size, &m);
  if (st != I2I_OK) {
    if (m || !i2i_ctx_errmsg(ctx)[0]) __builtin_trap(); /* a failure always has a message and no model */
    return 0;
  }
  i2i_model_info in;
  i2i_model_get_info(m, &in);
  int nn = i2i_model_node_count(m);
  static int64_t shapes[4096][4];
  if (nn <= 4096 && size >= 2) {
    int h = 1 + data[size - 1] % 64, w = 1 + data[size - 2] % 64;
    (void)i2i_model_shapes(ctx, m, 1, h, w, shapes);
    (void)i2i_model_shapes(ctx, m, 1, in.min_side > 0 ? in.min_side : 8, in.min_side > 0 ? in.min_side : 8, shapes);
  }
  for (int i = 0; i < nn; i++) {
    i2i_node_desc d;
    i2i_model_node(m, i, &d);
  }
  void *buf = NULL;
  size_t len = 0;
  if (i2i_model_save_memory(ctx, m, &buf, &len) == I2I_OK) {
    i2i_model *m2 = NULL;
    if (i2i_model_load_memory(ctx, buf, len, &m2) != I2I_OK) __builtin_trap(); /* what we write we read back */
    i2i_model_free(m2);
    i2i_free(ctx, buf);
  }
  i2i_model_free(m);
  return 0;
}
