/* tests/cuda/fake_module.c: a stand-in CUDA module (same contract, cuda_api.h) for the fallback
 * tests without a GPU. I2I_FAKE_CUDA: open-fail (refuses with a reason), oom (every run reports
 * device out-of-memory), sticky (an illegal address, then a dead GPU). I2I_FAKE_CUDA_SCRIBBLE=1
 * first writes NaN over the output tensor in the host arena, as a cut-short download would
 * (the arena may put the output over the input). It never computes anything. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_api.h"

typedef struct {
  const i2i_cuda_host *host;
  int dead;
  int runs;
} fake;

static i2i_status fake_execute(void *self, i2i_ctx *ctx, const i2i_model *m, const i2i_plan *p, i2i_run_state *st) {
  fake *F = self;
  const char *mode = getenv("I2I_FAKE_CUDA");
  F->runs++;
  const char *scribble = getenv("I2I_FAKE_CUDA_SCRIBBLE");
  if (scribble && !strcmp(scribble, "1") && st && st->arena && p->offset[m->g.output] != SIZE_MAX) {
    float *y = st->arena + p->offset[m->g.output];
    size_t n = shape_numel(p->shape[m->g.output]);
    for (size_t i = 0; i < n; i++) y[i] = NAN;
  }
  if (F->dead)
    return F->host->fail(ctx, I2I_E_DEVICE,
                         "cuda: the GPU is unusable in this process after an earlier error (fake: an illegal memory "
                         "access was encountered)");
  if (mode && !strcmp(mode, "oom"))
    return F->host->fail(ctx, I2I_E_DEVICE_NOMEM,
                         "cuda: out of GPU memory after freeing the caches and retrying: cudaMalloc of 64.0 MiB for "
                         "the activations: out of memory (fake)");
  if (mode && !strcmp(mode, "sticky")) {
    F->dead = 1;
    return F->host->fail(ctx, I2I_E_DEVICE,
                         "cuda: kernel launch: an illegal memory access was encountered (cudaErrorIllegalAddress, "
                         "fake); the GPU is disabled for this process");
  }
  return F->host->fail(ctx, I2I_E_DEVICE, "cuda: the fake module computes nothing (I2I_FAKE_CUDA=%s)",
                       mode ? mode : "");
}

static void fake_destroy(void *self) { free(self); }

static const i2i_backend_ops fake_ops = {"fake-cuda", fake_execute, fake_destroy};

__attribute__((visibility("default"))) int i2i_cuda_open(const i2i_cuda_host *host, int device,
                                                         const i2i_backend_ops **ops, void **self, char *why,
                                                         size_t whylen) {
  *ops = NULL;
  *self = NULL;
  const char *mode = getenv("I2I_FAKE_CUDA");
  if (!host || host->api_version != I2I_CUDA_API_VERSION) {
    snprintf(why, whylen, "fake: API version mismatch");
    return 1;
  }
  if (!mode || !strcmp(mode, "open-fail")) {
    snprintf(why, whylen, "fake: no CUDA device found (device %d)", device);
    return 1;
  }
  fake *F = calloc(1, sizeof *F);
  if (!F) {
    snprintf(why, whylen, "fake: out of host memory");
    return 1;
  }
  F->host = host;
  *ops = &fake_ops;
  *self = F;
  return 0;
}
