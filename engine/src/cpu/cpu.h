/* cpu.h: the CPU backend's kernels (plain C11, OpenMP threads, OpenBLAS sgemm).
 *
 * Every kernel works on one image in NCHW float32 and on buffers the plan gave it; none
 * allocates. The forward and backward of an op live side by side in one file (conv.c, norm.c,
 * pointwise.c). exec.c walks a plan's steps and calls them.
 */
#ifndef I2I_CPU_H
#define I2I_CPU_H

#include "../internal.h"

typedef struct {
  int c, h, w;          /* input */
  int m, oh, ow;        /* output */
  int kh, kw, sh, sw, dh, dw;
  int pt, pl, pb, pr;   /* input padding */
  int pad_mode;         /* PAD_CONSTANT (zeros), PAD_REFLECT, PAD_EDGE */
  int oph, opw;         /* ConvTranspose output padding */
  /* called after each chunk (tile) with the fraction of this convolution done; a nonzero return
   * stops the convolution early (the caller then reports the cancel) */
  int (*chunk_done)(void *user, double fraction);
  void *user;
} conv_geom;

/* y[m][oh][ow] = conv(x[c][h][w] padded as g says, w[m][c][kh][kw]) + bias[m] (bias may be
 * NULL). `scratch` holds `scratch_floats` floats (at least kh*kw*c*64). */
int cpu_conv_forward(const conv_geom *g, const float *x, const float *w, const float *bias, float *y,
                     float *scratch, size_t scratch_floats, int threads);

/* ConvTranspose: y[m][oh][ow] from x[c][h][w] and w[c][m][kh][kw]; scratch at least
 * m*kh*kw*64 floats. Both return the number of chunks (tiles) the output was computed in, or -1
 * when chunk_done asked to stop. */
int cpu_convt_forward(const conv_geom *g, const float *x, const float *w, const float *bias, float *y,
                      float *scratch, size_t scratch_floats, int threads);

/* Winograd F(2x2,3x3) for 3x3 stride-1 pad-1 convolutions with at least 16 channels in and out
 * (winograd.c). Needs cpu_winograd_scratch(g, 16) floats at least; returns the chunks or -1. */
bool cpu_winograd_applies(const conv_geom *g);
size_t cpu_winograd_scratch(const conv_geom *g, size_t tiles);
int cpu_conv_winograd(const conv_geom *g, const float *x, const float *w, const float *bias, float *y, float *scratch,
                      size_t scratch_floats, int threads);
/* Direct convolution for at most 4 output channels; cpu_direct_scratch(g, threads) floats. */
bool cpu_direct_applies(const conv_geom *g);
size_t cpu_direct_scratch(const conv_geom *g, int threads);
int cpu_conv_direct(const conv_geom *g, const float *x, const float *w, const float *bias, float *y, float *scratch,
                    int threads);

/* The geometry of a convolution step of a plan (exec.c). */
conv_geom cpu_step_geom(const i2i_model *m, const i2i_plan *p, const i2i_step *s);
/* Scratch floats a convolution step wants for one chunk (full) and at least (min) (exec.c). */
void cpu_conv_scratch(const conv_geom *g, int threads, size_t *full, size_t *min);

/* Per-channel normalisation of x[c][hw] into y (y may equal x), then the activation:
 * with mean/var NULL the statistics of each channel are computed (instance / batch-of-one
 * statistics, biased variance, double sums); otherwise the given running statistics are used. */
void cpu_norm_forward(const float *x, float *y, int c, size_t hw, const float *scale, const float *bias,
                      const float *mean, const float *var, float eps, int act, float alpha, int threads);

void cpu_pad_forward(const float *x, float *y, int c, int h, int w, const int pads[4], int mode, float value,
                     int threads);
/* y = act(x) elementwise; ACT_NONE copies (unless y == x). */
void cpu_act_forward(const float *x, float *y, size_t n, int act, float alpha, int threads);
void cpu_tanh_forward(const float *x, float *y, size_t n, int threads);
void cpu_add_forward(const float *a, const float *b, float *y, size_t n, int act, float alpha, int threads);
/* Dropout with the counter-based mask of design.md: x[c][h][w] of image `batch_index`. */
void cpu_dropout_forward(const float *x, float *y, int c, int h, int w, float ratio, uint64_t seed,
                         uint32_t ordinal, uint32_t batch_index, uint64_t step, int threads);

#endif
