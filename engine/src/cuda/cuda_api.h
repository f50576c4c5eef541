/* cuda/cuda_api.h: the contract between libi2i and its run-time loaded CUDA module.
 *
 * The module (libi2i-cuda.so) is built from engine/src/cuda/ and opened with GModule; it
 * exports one symbol, i2i_cuda_open, and reaches the engine only through the host table below,
 * so neither the tool nor the plug-in links any CUDA library.
 */
#ifndef I2I_CUDA_API_H
#define I2I_CUDA_API_H

#include "../internal.h"

#define I2I_CUDA_API_VERSION 1

typedef struct {
  int api_version;
  i2i_status (*fail)(i2i_ctx *ctx, i2i_status st, const char *fmt, ...);
  void (*log)(i2i_ctx *ctx, i2i_log_level lvl, const char *fmt, ...);
  i2i_status (*progress)(i2i_ctx *ctx, i2i_run_state *st, double done, double total);
  bool (*dropout_keep)(uint64_t seed, uint32_t x, uint32_t y, uint32_t channel, uint32_t batch_index,
                       uint32_t ordinal, uint64_t step, uint32_t threshold);
} i2i_cuda_host;

/* Opens the backend on CUDA device `device`. Returns 0 and fills *ops and *self, or nonzero
 * with a one-line reason in `why` (no driver, driver too old, no device, compute capability
 * below 7.5, cuDNN missing...). Never exits. */
typedef int (*i2i_cuda_open_fn)(const i2i_cuda_host *host, int device, const i2i_backend_ops **ops, void **self,
                                char *why, size_t whylen);

#endif
