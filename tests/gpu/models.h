/* tests/gpu/models.h: ResNet and U-Net generator graphs with seeded random weights, built with
 * the public graph builder in the converter's structure (reflect Pads, InstanceNorms, Adds,
 * ConvTransposes; LeakyReLU skips, BatchNorm as InstanceNormalization plus running statistics,
 * Dropout, Concat), for the CUDA tests without Python. Not PyTorch's exporter output. */
#ifndef I2I_TEST_MODELS_H
#define I2I_TEST_MODELS_H

#include <stdint.h>

#include "i2i.h"

/* ResNet generator: `blocks` residual blocks, `ngf` channels after the first conv. */
i2i_status test_build_resnet(i2i_ctx *ctx, int blocks, int ngf, uint64_t seed, i2i_model **out);
/* U-Net generator of `depth` stride-2 levels (size multiple 2^depth), `ngf` channels. */
i2i_status test_build_unet(i2i_ctx *ctx, int depth, int ngf, uint64_t seed, i2i_model **out);

/* Seeded normal and uniform numbers (splitmix64 + Box-Muller), for inputs too. */
typedef struct {
  uint64_t s;
} test_rng;
void test_rng_seed(test_rng *r, uint64_t seed);
double test_rng_uniform(test_rng *r); /* [0, 1) */
double test_rng_normal(test_rng *r);

#endif
