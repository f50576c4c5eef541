/* train/train.h: the trainer's private state, shared by the files of engine/src/train/.
 *
 * The trainer (trainer.c) owns its networks (i2i_tnet, internal.h), the forward slots, the
 * gradient arena, the batch and pool buffers (all in the training backend's memory) and host
 * staging for the images; state.c saves and restores it, augment.c prepares images, patchgan.c
 * builds discriminators. The random streams here are counter-based (Philox), so every choice is
 * a pure function of the seed and the iteration and a resumed run repeats it.
 */
#ifndef I2I_TRAIN_H
#define I2I_TRAIN_H

#include "../internal.h"

enum { RNG_POOL = 1, RNG_AUGMENT = 2, RNG_INIT = 3 };

/* Four random words for (stream, a, b, c) under `seed`; a key distinct from the dropout mask's. */
static inline void train_rand4(uint64_t seed, uint32_t stream, uint64_t a, uint32_t b, uint32_t c, uint32_t out[4]) {
  uint32_t key[2] = {(uint32_t)seed ^ 0x6a09e667u, (uint32_t)(seed >> 32) ^ (0xbb67ae85u * stream)};
  uint32_t ctr[4] = {(uint32_t)a, (uint32_t)(a >> 32), b, c};
  philox4x32_10(ctr, key, out);
}

/* A uniform integer in [0, n) from a random word. */
static inline uint32_t rand_below(uint32_t word, uint32_t n) { return (uint32_t)(((uint64_t)word * n) >> 32); }

typedef struct {
  int cap, count;
  float *images;           /* backend: cap images */
  int count_before;        /* undo log of the current step */
  int n_undo;
  int *undo_slot;          /* batch entries */
  float *undo;             /* backend: batch images */
} train_pool;

typedef struct {
  char *key, *value;
} train_kv;

typedef struct {
  char *name;
  size_t off, numel;
  bool trainable;
} train_tensor;

struct i2i_trainer {
  i2i_ctx *ctx;
  i2i_train_params p;
  const i2i_train_backend_ops *be;
  void *self;
  i2i_tnet net[4];
  bool has[4];
  train_tensor *tensors[4];
  size_t n_tensors[4];
  int n_gslots;
  float *gslot[3], *dslot;
  float *grads, *scratch;
  float *real_a, *real_b, *gfake;  /* backend: batch x 3 x size x size each */
  size_t img_floats;               /* 3 x size x size */
  float *host_a, *host_b;          /* host staging of the next batch */
  float *host_tmp;                 /* host: one load_size x load_size RGBA image */
  bool *img_set;
  train_pool pool[2];              /* 0: fake A images (for D_rev), 1: fake B (for D) */
  float *snap_d[4];                /* backend: a discriminator's params, m, v before its update */
  uint64_t snap_t[4];
  float *snap_stats;               /* backend: every network's running statistics at step start */
  int64_t iteration;
  i2i_pool_choice_fn hook;
  void *hook_user;
  train_kv *meta;
  int n_meta;
  uint64_t serial_base;
};

/* trainer.c: creates a trainer that takes ownership of the models (NULL discriminators are
 * built); the models are freed on failure too. */
i2i_status trainer_create_owned(i2i_ctx *ctx, const i2i_train_params *p, i2i_model *models[4], i2i_trainer **out);
/* Runs make(ctx, arg, out) and, when it fails on the GPU (I2I_E_DEVICE, I2I_E_DEVICE_NOMEM)
 * with the backend left to AUTO, logs why and runs it again with training on the CPU. */
i2i_status trainer_make_with_fallback(i2i_ctx *ctx, i2i_status (*make)(i2i_ctx *, void *, i2i_trainer **), void *arg,
                                      i2i_trainer **out);
/* Copies a network's parameters from the backend into its model (no-op on the CPU). */
i2i_status trainer_sync_host(i2i_trainer *tr, int k);
/* Resolves defaults and checks the parameters. */
i2i_status train_params_check(i2i_ctx *ctx, i2i_train_params *p);

/* augment.c: writes image `index` of the batch into the host staging (CHW in [-1,1]). */
i2i_status augment_pair(i2i_trainer *tr, int index, const float *a, int aw, int ah, const float *b, int bw, int bh);

/* patchgan.c: a discriminator for the trainer, N(0, 0.02) from `seed`. */
i2i_status patchgan_build(i2i_ctx *ctx, int in_channels, int base, int n_layers, bool batchnorm, uint64_t seed,
                          i2i_model **out);

#endif
