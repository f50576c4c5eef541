/* tests/engine/test_conv.c: the CPU backend's convolution algorithms against the plain GEMM
 * path, kernel by kernel: Winograd F(2x2, 2x2) for 4x4 and 3x3 stride-2 Conv and
 * ConvTranspose (winograd_s2.c), F(2x2, 3x3) / F(4x4, 3x3) for 3x3 stride-1 Conv and the
 * direct kernel for few outputs (direct.c) at odd sizes, the matrix products (gemm.c) and their
 * batches split over threads,
 * in every padding mode, in one chunk and in many, on 1 and 2 threads, with a cancel between
 * chunks, and what the dispatcher picks. The end-to-end numbers
 * against PyTorch are the golden tests'; this pins the cases the U-Net's sizes do not reach.
 * Ends with "N passed, N failed".
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "../common/check.h"
#include "cpu/cpu.h"

static uint64_t rs = 0x9E3779B97F4A7C15ull;
static float urand(void) {
  rs ^= rs << 13;
  rs ^= rs >> 7;
  rs ^= rs << 17;
  return (float)((double)(rs >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* A stride-2 pad-1 layer with a kxk kernel; a transposed 3x3 one has output padding 1 (the
 * ResNet's), so that every transposed one doubles the input. */
static conv_geom geom_k(int k, int c, int h, int w, int m, bool transpose, int mode) {
  conv_geom g = {0};
  g.c = c;
  g.h = h;
  g.w = w;
  g.m = m;
  g.kh = g.kw = k;
  g.sh = g.sw = 2;
  g.dh = g.dw = 1;
  g.pt = g.pl = g.pb = g.pr = 1;
  g.oph = g.opw = transpose && k == 3;
  g.pad_mode = transpose ? PAD_CONSTANT : mode;
  g.oh = transpose ? 2 * h : (h + 2 - k) / 2 + 1;
  g.ow = transpose ? 2 * w : (w + 2 - k) / 2 + 1;
  return g;
}

static conv_geom geom(int c, int h, int w, int m, bool transpose, int mode) {
  return geom_k(4, c, h, w, m, transpose, mode);
}

static int stop_after, chunks_seen;
static int stop_at(void *user, double f) {
  (void)user;
  (void)f;
  return ++chunks_seen >= stop_after;
}

/* One convolution's buffers: random input, weights and bias; the reference output (GEMM) and the
 * output under test, NaN-poisoned so that every value must be written; ss floats of scratch. */
typedef struct {
  float *x, *w, *b, *ref, *y, *s;
  size_t ys, ss;
} conv_bufs;

static conv_bufs bufs_new(const conv_geom *g, int taps, size_t ss) {
  size_t xs = (size_t)g->c * (size_t)g->h * (size_t)g->w, ws = (size_t)g->m * (size_t)g->c * (size_t)taps;
  conv_bufs b = {malloc(xs * 4), malloc(ws * 4), malloc((size_t)g->m * 4), NULL, NULL, malloc(ss * 4), 0, ss};
  b.ys = (size_t)g->m * (size_t)g->oh * (size_t)g->ow;
  b.ref = malloc(b.ys * 4), b.y = malloc(b.ys * 4);
  for (size_t i = 0; i < xs; i++) b.x[i] = urand();
  for (size_t i = 0; i < ws; i++) b.w[i] = urand() * 0.2f;
  for (int i = 0; i < g->m; i++) b.b[i] = urand();
  for (size_t i = 0; i < b.ys; i++) b.y[i] = NAN;
  return b;
}

/* max |y - ref| / max |ref| (NaN propagates), and frees the buffers. */
static double bufs_done(conv_bufs *b) {
  double d = 0, mx = 0;
  for (size_t i = 0; i < b->ys; i++) {
    double e = fabs((double)b->ref[i] - (double)b->y[i]);
    if (!(e <= d)) d = e;
    if (fabs(b->ref[i]) > mx) mx = fabs(b->ref[i]);
  }
  free(b->x), free(b->w), free(b->b), free(b->ref), free(b->y), free(b->s);
  return d / (mx > 0 ? mx : 1);
}

/* max |winograd - gemm| / max |gemm| for one geometry, the Winograd side given `tiles` tiles of
 * scratch per chunk (0: all); *chunks gets how many chunks it took. */
static double compare(const conv_geom *g, bool transpose, size_t tiles, int threads, int *chunks) {
  size_t full, min;
  cpu_conv_scratch(g, threads, &full, &min);
  size_t ss = tiles ? cpu_s2_scratch(g, transpose, tiles) : cpu_s2_scratch(g, transpose, cpu_s2_tiles(g, transpose));
  if (full > ss) ss = full;
  conv_bufs b = bufs_new(g, g->kh * g->kw, ss);
  if (transpose) cpu_convt_forward(g, b.x, b.w, b.b, b.ref, b.s, ss, threads);
  else cpu_conv_forward(g, b.x, b.w, b.b, b.ref, b.s, ss, threads);
  size_t use = tiles ? cpu_s2_scratch(g, transpose, tiles) : ss;
  *chunks = cpu_conv_s2(g, transpose, b.x, b.w, b.b, b.y, b.s, use, threads);
  return bufs_done(&b);
}

/* Conv 4x4 stride 2 through Winograd equals GEMM: zero, reflect and edge padding, even and odd
 * sizes (a cropped last tile row and column), planes smaller than a tile, 1 and 2 threads. */
static void test_conv_s2(void) {
  static const char *names[] = {"zero", "reflect", "edge"};
  int sizes[][2] = {{16, 16}, {17, 15}, {9, 13}, {2, 2}, {3, 40}, {61, 7}};
  for (int mode = 0; mode < 3; mode++)
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
      for (int th = 1; th <= 2; th++) {
        conv_geom g = geom(16, sizes[k][0], sizes[k][1], 20, false, mode);
        int chunks;
        double e = compare(&g, false, 0, th, &chunks);
        CHECK(e < 2e-6, "Conv %s %dx%d, %d threads: relative error %.3g", names[mode], g.h, g.w, th, e);
        CHECK(chunks == 1, "one chunk when the scratch holds every tile (%d)", chunks);
      }
  conv_geom g = geom(32, 150, 141, 24, false, PAD_REFLECT);
  int chunks;
  double e = compare(&g, false, 0, 2, &chunks);
  printf("    Conv 32->24 150x141 reflect: relative error %.2e\n", e);
  CHECK(e < 2e-6, "%.3g", e);
}

/* ConvTranspose 4x4 stride 2 pad 1 through Winograd equals GEMM: the odd-row phases' tiles
 * start an output row earlier and are cropped at the top and left, odd sizes at the bottom and
 * right; a 1x1 input (every tile cropped). */
static void test_convt_s2(void) {
  int sizes[][2] = {{16, 16}, {9, 7}, {1, 1}, {1, 9}, {15, 16}, {33, 20}};
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
    for (int th = 1; th <= 2; th++) {
      conv_geom g = geom(16, sizes[k][0], sizes[k][1], 16, true, PAD_CONSTANT);
      int chunks;
      double e = compare(&g, true, 0, th, &chunks);
      CHECK(e < 2e-6, "ConvTranspose %dx%d, %d threads: relative error %.3g", g.h, g.w, th, e);
    }
  conv_geom g = geom(48, 70, 67, 16, true, PAD_CONSTANT);
  int chunks;
  double e = compare(&g, true, 0, 2, &chunks);
  printf("    ConvTranspose 48->16 70x67: relative error %.2e\n", e);
  CHECK(e < 2e-6, "%.3g", e);
}

/* The ResNet's 3x3 stride-2 layers through the same algorithm, the phases whose transform is
 * zero at a point left out of its product, equal GEMM: Conv in every padding mode and
 * ConvTranspose with output padding 1, even and odd sizes, a 1x1 input, 1 and 2 threads, one
 * chunk and many. */
static void test_s2_3x3(void) {
  static const char *names[] = {"zero", "reflect", "edge"};
  int sizes[][2] = {{16, 16}, {17, 15}, {9, 13}, {1, 1}, {2, 2}, {3, 40}, {61, 7}};
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
    for (int th = 1; th <= 2; th++) {
      int chunks;
      for (int mode = 0; mode < 3; mode++) {
        conv_geom g = geom_k(3, 16, sizes[k][0], sizes[k][1], 20, false, mode);
        double e = compare(&g, false, 0, th, &chunks);
        CHECK(e < 2e-6, "Conv 3x3 %s %dx%d, %d threads: relative error %.3g", names[mode], g.h, g.w, th, e);
      }
      conv_geom t = geom_k(3, 16, sizes[k][0], sizes[k][1], 24, true, PAD_CONSTANT);
      double e = compare(&t, true, 0, th, &chunks);
      CHECK(e < 2e-6, "ConvTranspose 3x3 %dx%d, %d threads: relative error %.3g", t.h, t.w, th, e);
    }
  size_t tiles[] = {1, 7, 100};
  for (size_t k = 0; k < sizeof tiles / sizeof tiles[0]; k++) {
    conv_geom a = geom_k(3, 32, 45, 38, 16, false, PAD_CONSTANT), b = geom_k(3, 32, 21, 26, 16, true, PAD_CONSTANT);
    int ca, cb;
    double ea = compare(&a, false, tiles[k], 2, &ca), eb = compare(&b, true, tiles[k], 2, &cb);
    CHECK(ea < 2e-6 && eb < 2e-6, "3x3, %zu tiles a chunk: Conv %.3g, ConvTranspose %.3g", tiles[k], ea, eb);
    CHECK(ca > 1 && cb > 1, "3x3, %zu tiles a chunk: %d and %d chunks", tiles[k], ca, cb);
  }
  conv_geom g = geom_k(3, 64, 130, 97, 128, false, PAD_CONSTANT), t = geom_k(3, 128, 33, 40, 64, true, PAD_CONSTANT);
  int chunks;
  /* however large the scratch, a chunk holds at most 8 MiB of V and products (fresh pages fault) */
  conv_geom big = geom_k(3, 32, 256, 256, 64, false, PAD_CONSTANT);
  size_t per_tile = 9 * (4 * 32 + 64), most = cpu_s2_chunk_tiles(&big, false);
  double eb = compare(&big, false, 0, 1, &chunks);
  CHECK(eb < 2e-6 && most * per_tile <= ((size_t)8 << 18) && (most + 1) * per_tile > ((size_t)8 << 18) &&
            (size_t)chunks == (cpu_s2_tiles(&big, false) + most - 1) / most,
        "chunks of at most 8 MiB: %zu tiles each, %d chunks, error %.3g", most, chunks, eb);
  double e = compare(&g, false, 0, 2, &chunks), et = compare(&t, true, 0, 2, &chunks);
  printf("    Conv 3x3 64->128 130x97: relative error %.2e; ConvTranspose 3x3 128->64 33x40: %.2e\n", e, et);
  CHECK(e < 2e-6 && et < 2e-6, "%.3g, %.3g", e, et);
}

/* Chunks that start and end inside a tile row give the same output as one chunk. */
static void test_s2_chunks(void) {
  size_t tiles[] = {1, 5, 16, 77, 200};
  for (size_t k = 0; k < sizeof tiles / sizeof tiles[0]; k++) {
    conv_geom a = geom(16, 41, 37, 16, false, PAD_REFLECT), b = geom(16, 23, 19, 16, true, PAD_CONSTANT);
    int ca, cb;
    double ea = compare(&a, false, tiles[k], 2, &ca), eb = compare(&b, true, tiles[k], 2, &cb);
    size_t want_a = (cpu_s2_tiles(&a, false) + tiles[k] - 1) / tiles[k], want_b = (cpu_s2_tiles(&b, true) + tiles[k] - 1) / tiles[k];
    CHECK(ea < 2e-6 && eb < 2e-6, "%zu tiles a chunk: Conv %.3g, ConvTranspose %.3g", tiles[k], ea, eb);
    CHECK((size_t)ca == want_a && (size_t)cb == want_b, "%zu tiles a chunk: %d and %d chunks, want %zu and %zu",
          tiles[k], ca, cb, want_a, want_b);
  }
}

/* A cancel asked for between chunks stops the convolution and reports it (-1). */
static void test_s2_cancel(void) {
  conv_geom g = geom(16, 64, 64, 16, true, PAD_CONSTANT);
  g.chunk_done = stop_at;
  stop_after = 2;
  chunks_seen = 0;
  size_t ss = cpu_s2_scratch(&g, true, 100), xs = 16 * 64 * 64, ys = 16 * 128 * 128, ws = 16 * 16 * 16;
  float *x = calloc(xs, 4), *w = calloc(ws, 4), *y = calloc(ys, 4), *s = malloc(ss * 4);
  int r = cpu_conv_s2(&g, true, x, w, NULL, y, s, ss, 1);
  CHECK(r == -1 && chunks_seen == 2, "stopped after the second chunk: returned %d after %d", r, chunks_seen);
  free(x), free(w), free(y), free(s);
}

/* The dispatcher takes Winograd where it pays (the U-Net's 128x128 and 64x64 layers) and not
 * where it does not (few tiles, few outputs, other kernels, strides, paddings). */
static void test_s2_applies(void) {
  conv_geom down = geom(64, 256, 256, 128, false, PAD_CONSTANT), up = geom(256, 64, 64, 64, true, PAD_CONSTANT);
  CHECK(cpu_s2_applies(&down, false) && cpu_s2_applies(&up, true), "U-Net layers at 256x256");
  conv_geom small = geom(512, 16, 16, 512, false, PAD_CONSTANT), smallt = geom(1024, 8, 8, 512, true, PAD_CONSTANT);
  CHECK(!cpu_s2_applies(&small, false) && !cpu_s2_applies(&smallt, true), "8x8 outputs, 8x8 inputs: GEMM");
  conv_geom rgb = geom(128, 128, 128, 3, true, PAD_CONSTANT), first = geom(3, 256, 256, 64, false, PAD_CONSTANT);
  CHECK(!cpu_s2_applies(&rgb, true) && !cpu_s2_applies(&first, false), "3 outputs or 3 inputs: GEMM");
  conv_geom rdown = geom_k(3, 64, 256, 256, 128, false, PAD_CONSTANT), rup = geom_k(3, 128, 128, 128, 64, true, 0);
  CHECK(cpu_s2_applies(&rdown, false) && cpu_s2_applies(&rup, true), "ResNet layers at 256x256");
  conv_geom rsmall = geom_k(3, 128, 64, 64, 256, false, PAD_CONSTANT), rsmallt = geom_k(3, 256, 32, 32, 128, true, 0);
  CHECK(!cpu_s2_applies(&rsmall, false) && !cpu_s2_applies(&rsmallt, true), "ResNet layers at 128x128: GEMM");
  conv_geom k5 = down;
  k5.kh = k5.kw = 5;
  conv_geom p2 = down;
  p2.pt = p2.pb = 2;
  conv_geom op = up;
  op.oph = 1;
  conv_geom op0 = rup;
  op0.oph = op0.opw = 0;
  op0.oh = op0.ow = 255;
  CHECK(!cpu_s2_applies(&k5, false) && !cpu_s2_applies(&p2, false) && !cpu_s2_applies(&op, true) &&
            !cpu_s2_applies(&op0, true),
        "5x5 kernel, padding 2, output padding on 4x4, none on 3x3: not this algorithm");
}

/* ---- 3x3 stride 1 (winograd.c) ------------------------------------------------------------ */

static conv_geom geom3(int c, int h, int w, int m, int mode) {
  conv_geom g = {0};
  g.c = c;
  g.h = g.oh = h;
  g.w = g.ow = w;
  g.m = m;
  g.kh = g.kw = 3;
  g.sh = g.sw = g.dh = g.dw = 1;
  g.pt = g.pl = g.pb = g.pr = 1;
  g.pad_mode = mode;
  return g;
}

/* max |winograd - gemm| / max |gemm| for a 3x3 convolution by Winograd with output tiles of
 * edge `tile`, in chunks of `tiles` tiles (0: all); *chunks gets how many it took. */
static double compare3(const conv_geom *g, int tile, size_t tiles, int threads, int *chunks) {
  size_t full, min;
  cpu_conv_scratch(g, threads, &full, &min);
  size_t use = cpu_winograd_scratch(g, tile, tiles ? tiles : cpu_winograd_tiles(g, tile));
  conv_bufs b = bufs_new(g, 9, full > use ? full : use);
  cpu_conv_forward(g, b.x, b.w, b.b, b.ref, b.s, b.ss, threads);
  *chunks = cpu_conv_winograd(g, tile, b.x, b.w, b.b, b.y, b.s, use, threads);
  return bufs_done(&b);
}

/* Both tile sizes equal GEMM in every padding mode, at sizes that crop the last tile row and
 * column (a plane of 1x1 too), planes narrower than one segment of tiles and wider, on 1 and 2
 * threads; F(2x2, 3x3) within float rounding, F(4x4, 3x3) within 1e-5 of the largest output
 * (4e-5 over the 2304 products of a ResNet block). */
static void test_wino3(void) {
  static const char *names[] = {"zero", "reflect", "edge"};
  int sizes[][2] = {{16, 16}, {17, 15}, {9, 13}, {1, 1}, {3, 40}, {61, 7}, {10, 150}};
  double worst[2] = {0, 0};
  for (int mode = 0; mode < 3; mode++)
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
      for (int th = 1; th <= 2; th++)
        for (int tile = 2; tile <= 4; tile += 2) {
          conv_geom g = geom3(16, sizes[k][0], sizes[k][1], 20, mode);
          int chunks;
          double e = compare3(&g, tile, 0, th, &chunks);
          if (e > worst[tile / 4]) worst[tile / 4] = e;
          CHECK(e < (tile == 2 ? 2e-6 : 1e-5), "F(%dx%d) %s %dx%d, %d threads: relative error %.3g", tile, tile,
                names[mode], g.h, g.w, th, e);
          CHECK(chunks == 1, "one chunk when the scratch holds every tile (%d)", chunks);
        }
  printf("    worst relative error: F(2x2, 3x3) %.2e, F(4x4, 3x3) %.2e\n", worst[0], worst[1]);
  conv_geom g = geom3(256, 64, 64, 256, PAD_REFLECT);
  int chunks;
  double e2 = compare3(&g, 2, 0, 2, &chunks), e4 = compare3(&g, 4, 0, 2, &chunks);
  printf("    ResNet block 256->256 64x64 reflect: F(2x2) %.2e, F(4x4) %.2e\n", e2, e4);
  CHECK(e2 < 2e-6 && e4 < 4e-5, "ResNet block: %.3g, %.3g", e2, e4);
}

/* Chunks that start and end inside a tile row give the same output as one chunk. */
static void test_wino3_chunks(void) {
  size_t tiles[] = {1, 5, 16, 77};
  for (size_t k = 0; k < sizeof tiles / sizeof tiles[0]; k++)
    for (int tile = 2; tile <= 4; tile += 2) {
      conv_geom g = geom3(16, 41, 37, 16, PAD_REFLECT);
      int chunks;
      double e = compare3(&g, tile, tiles[k], 2, &chunks);
      size_t want = (cpu_winograd_tiles(&g, tile) + tiles[k] - 1) / tiles[k];
      CHECK(e < (tile == 2 ? 2e-6 : 1e-5), "F(%dx%d), %zu tiles a chunk: %.3g", tile, tile, tiles[k], e);
      CHECK((size_t)chunks == want, "F(%dx%d), %zu tiles a chunk: %d chunks, want %zu", tile, tile, tiles[k], chunks,
            want);
    }
}

/* A cancel asked for between chunks stops the convolution and reports it (-1). */
static void test_wino3_cancel(void) {
  conv_geom g = geom3(16, 64, 64, 16, PAD_REFLECT);
  g.chunk_done = stop_at;
  stop_after = 2;
  chunks_seen = 0;
  size_t ss = cpu_winograd_scratch(&g, 4, 20), xs = 16 * 64 * 64, ws = 16 * 16 * 9;
  float *x = calloc(xs, 4), *w = calloc(ws, 4), *y = calloc(xs, 4), *s = malloc(ss * 4);
  int r = cpu_conv_winograd(&g, 4, x, w, NULL, y, s, ss, 1);
  CHECK(r == -1 && chunks_seen == 2, "stopped after the second chunk: returned %d after %d", r, chunks_seen);
  free(x), free(w), free(y), free(s);
}

/* The dispatcher's tile: 4 for outputs of 8x8 and more when the scratch holds 16 such tiles and
 * the caller allows it (inference, not training), 2 for smaller outputs or less scratch, none
 * below that. */
static void test_wino3_tile(void) {
  conv_geom big = geom3(256, 64, 64, 256, PAD_REFLECT), small = geom3(256, 7, 64, 256, PAD_REFLECT);
  CHECK(cpu_winograd_applies(&big) && cpu_winograd_tile(&big, 4, SIZE_MAX) == 4, "64x64: F(4x4, 3x3)");
  CHECK(cpu_winograd_tile(&big, 2, SIZE_MAX) == 2, "training's bound: F(2x2, 3x3)");
  CHECK(cpu_winograd_tile(&small, 4, SIZE_MAX) == 2, "7 rows: F(2x2, 3x3)");
  CHECK(cpu_winograd_tile(&big, 4, cpu_winograd_scratch(&big, 4, 16) - 1) == 2, "scratch short of 16 F(4x4) tiles");
  CHECK(cpu_winograd_tile(&big, 4, cpu_winograd_scratch(&big, 2, 16) - 1) == 0, "scratch short of 16 F(2x2) tiles");
  conv_geom s2 = big;
  s2.sh = s2.sw = 2;
  conv_geom few = geom3(3, 64, 64, 64, PAD_REFLECT);
  CHECK(!cpu_winograd_applies(&s2) && !cpu_winograd_applies(&few), "stride 2, 3 input channels: not Winograd");
}

/* ---- direct convolution for few outputs (winograd.c) ------------------------------------- */

/* The direct kernel equals GEMM for 1 to 4 outputs: the ResNet's last 7x7 layer (reflect), the
 * PatchGAN's last 4x4 one (zeros), stride 2; for 3 inputs: the ResNet's first layer (64 outputs,
 * and 6, which leaves a group of two), widths that leave a tail short of a 32-column strip
 * and planes narrower than one, on 1 and 2 threads: within the rounding of 3136-term sums
 * summed in another order (1e-5). */
static void test_direct(void) {
  struct {
    int c, h, w, m, k, s, pad, mode;
  } cases[] = {{64, 19, 70, 3, 7, 1, 3, PAD_REFLECT}, {64, 9, 37, 4, 7, 1, 3, PAD_EDGE},
               {32, 11, 64, 1, 4, 1, 1, PAD_CONSTANT}, {32, 12, 5, 2, 4, 1, 1, PAD_CONSTANT},
               {16, 17, 41, 3, 4, 2, 1, PAD_REFLECT}, {8, 33, 96, 3, 3, 1, 1, PAD_CONSTANT},
               {3, 21, 70, 64, 7, 1, 3, PAD_REFLECT}, {3, 10, 37, 6, 7, 1, 3, PAD_CONSTANT}};
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
    for (int th = 1; th <= 2; th++) {
      conv_geom g = {0};
      g.c = cases[k].c, g.h = cases[k].h, g.w = cases[k].w, g.m = cases[k].m;
      g.kh = g.kw = cases[k].k, g.sh = g.sw = cases[k].s, g.dh = g.dw = 1;
      g.pt = g.pl = g.pb = g.pr = cases[k].pad, g.pad_mode = cases[k].mode;
      g.oh = (g.h + 2 * g.pt - g.kh) / g.sh + 1, g.ow = (g.w + 2 * g.pl - g.kw) / g.sw + 1;
      CHECK(cpu_direct_applies(&g), "case %zu takes the direct kernel", k);
      size_t full, min;
      cpu_conv_scratch(&g, th, &full, &min);
      size_t gs = (size_t)g.c * g.kh * g.kw * (size_t)g.oh * g.ow;
      conv_bufs b = bufs_new(&g, g.kh * g.kw, full > gs ? full : gs);
      cpu_conv_forward(&g, b.x, b.w, b.b, b.ref, b.s, b.ss, th);
      cpu_conv_direct(&g, b.x, b.w, b.b, b.y, b.s, th);
      double e = bufs_done(&b);
      CHECK(e < 1e-5, "%d -> %d, %dx%d kernel %d stride %d, %d threads: relative error %.3g", g.c, g.m, g.h, g.w, g.kh,
            g.sh, th, e);
    }
}

/* The largest error of C = op(A) B (row-major, rows lda / ldb / ldc apart; op(A) = A^T with
 * ta) against the sum in double, as a fraction of the magnitude of its terms. */
static double product_error(bool ta, int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                            const float *c, int ldc) {
  double err = 0;
  for (int i = 0; i < m; i++)
    for (int j = 0; j < n; j++) {
      double r = 0, mag = 0;
      for (int q = 0; q < k; q++) {
        double p = (double)(ta ? a[q * lda + i] : a[i * lda + q]) * b[q * ldb + j];
        r += p;
        mag += fabs(p);
      }
      double e = fabs(c[i * ldc + j] - r) / (mag > 0 ? mag : 1);
      if (!(e <= err)) err = e;
    }
  return err;
}

/* The matrix products (gemm.c) against a double-precision sum: 1 to 64 columns, through the
 * narrow kernel (A^T B to 16 columns), sgemm split by rows (to 64 columns, m 600: 2 and 5 pieces,
 * the last one short) and sgemm otherwise, both layouts, sizes off the kernels' blocks (4 rows of
 * A, 16 and 512 rows of C), rows wider than the matrix (lda, ldc), whose gaps must stay
 * untouched, and the same bits on 1, 2 and 5 threads. */
static void test_gemm_small(void) {
  const int ms[] = {1, 7, 77, 600}, ns[] = {1, 2, 3, 5, 16, 17, 33, 64}, ks[] = {1, 15, 33, 300};
  for (int t = 0; t < 2; t++)
    for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++)
      for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
        for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
          const bool ta = t == 1;
          const int m = ms[mi], n = ns[ni], k = ks[ki];
          const int lda = (ta ? m : k) + 3, rows = ta ? k : m, ldb = n + 2, ldc = n + 5;
          float *a = malloc(sizeof(float) * (size_t)rows * lda), *b = malloc(sizeof(float) * (size_t)k * ldb);
          float *c1 = malloc(sizeof(float) * (size_t)m * ldc), *c2 = malloc(sizeof(float) * (size_t)m * ldc);
          float *c5 = malloc(sizeof(float) * (size_t)m * ldc);
          for (int i = 0; i < rows * lda; i++) a[i] = urand();
          for (int i = 0; i < k * ldb; i++) b[i] = urand();
          for (int i = 0; i < m * ldc; i++) c1[i] = c2[i] = c5[i] = 7.0f;
          cpu_gemm(ta, m, n, k, a, lda, b, ldb, c1, ldc, 1);
          cpu_gemm(ta, m, n, k, a, lda, b, ldb, c2, ldc, 2);
          cpu_gemm(ta, m, n, k, a, lda, b, ldb, c5, ldc, 5);
          const double err = product_error(ta, m, n, k, a, lda, b, ldb, c1, ldc);
          bool same = true, gaps = true;
          for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j++)
              same = same && c1[i * ldc + j] == c2[i * ldc + j] && c1[i * ldc + j] == c5[i * ldc + j];
            for (int j = n; j < ldc; j++)
              gaps = gaps && c1[i * ldc + j] == 7.0f && c2[i * ldc + j] == 7.0f && c5[i * ldc + j] == 7.0f;
          }
          CHECK(err < 1e-6, "%s m %d n %d k %d: error %.3g of the terms' magnitude", ta ? "A^T B" : "A B", m, n, k, err);
          CHECK(same, "%s m %d n %d k %d: 1, 2 and 5 threads give the same bits", ta ? "A^T B" : "A B", m, n, k);
          CHECK(gaps, "%s m %d n %d k %d: C's row gaps untouched", ta ? "A^T B" : "A B", m, n, k);
          free(a), free(b), free(c1), free(c2), free(c5);
        }
}

/* cpu_gemm_batch: products of unequal shapes (as the 3x3 stride-2 layers' points), some so small
 * that OpenBLAS takes its small-matrix kernel, split over 1 to 40 threads: every C bit for bit
 * the whole product's (one sgemm per item), within rounding of the exact sum, and C's row gaps
 * untouched. */
static void test_gemm_batch(void) {
  enum { COUNT = 9 };
  const int ms[COUNT] = {128, 64, 64, 32, 128, 7, 300, 16, 64}, ks[COUNT] = {256, 128, 128, 64, 256, 5, 33, 16, 512};
  const int ns[] = {1, 15, 16, 17, 100, 289, 700}, threads[] = {1, 2, 3, 5, 8, 13, 40};
  for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
    const int n = ns[ni], ldb = n + 3, ldc = n + 5;
    float *a[COUNT], *b[COUNT], *whole[COUNT], *c[COUNT];
    cpu_gemm_item items[COUNT];
    for (int i = 0; i < COUNT; i++) {
      a[i] = malloc(sizeof(float) * (size_t)ms[i] * ks[i]);
      b[i] = malloc(sizeof(float) * (size_t)ks[i] * ldb);
      whole[i] = malloc(sizeof(float) * (size_t)ms[i] * ldc);
      c[i] = malloc(sizeof(float) * (size_t)ms[i] * ldc);
      for (int q = 0; q < ms[i] * ks[i]; q++) a[i][q] = urand();
      for (int q = 0; q < ks[i] * ldb; q++) b[i][q] = urand();
      cpu_gemm(false, ms[i], n, ks[i], a[i], ks[i], b[i], ldb, whole[i], ldc, 1);
      items[i] = (cpu_gemm_item){a[i], b[i], c[i], ms[i], ks[i], ks[i]};
      const double err = product_error(false, ms[i], n, ks[i], a[i], ks[i], b[i], ldb, whole[i], ldc);
      CHECK(err < 1e-6, "n %d item %d: error %.3g of the terms' magnitude", n, i, err);
    }
    /* the whole batch, and batches of one item (a small one and a large one) and of two */
    const int firsts[] = {0, 5, 6, 0}, counts[] = {COUNT, 1, 1, 2};
    for (size_t bi = 0; bi < sizeof counts / sizeof counts[0]; bi++)
      for (size_t ti = 0; ti < sizeof threads / sizeof threads[0]; ti++) {
        const int i0 = firsts[bi], i1 = firsts[bi] + counts[bi];
        for (int i = i0; i < i1; i++)
          for (int q = 0; q < ms[i] * ldc; q++) c[i][q] = 7.0f;
        cpu_gemm_batch(items + i0, counts[bi], n, ldb, ldc, threads[ti]);
        bool same = true, gaps = true;
        for (int i = i0; i < i1; i++)
          for (int r = 0; r < ms[i]; r++) {
            for (int j = 0; j < n; j++) same = same && c[i][r * ldc + j] == whole[i][r * ldc + j];
            for (int j = n; j < ldc; j++) gaps = gaps && c[i][r * ldc + j] == 7.0f;
          }
        CHECK(same, "n %d, items %d..%d, %d threads: the same bits as whole products", n, i0, i1 - 1, threads[ti]);
        CHECK(gaps, "n %d, items %d..%d, %d threads: C's row gaps untouched", n, i0, i1 - 1, threads[ti]);
      }
    for (int i = 0; i < COUNT; i++) free(a[i]), free(b[i]), free(whole[i]), free(c[i]);
  }
}

int main(void) {
  RUN(test_conv_s2);
  RUN(test_convt_s2);
  RUN(test_s2_3x3);
  RUN(test_s2_chunks);
  RUN(test_s2_cancel);
  RUN(test_s2_applies);
  RUN(test_wino3);
  RUN(test_wino3_chunks);
  RUN(test_wino3_cancel);
  RUN(test_wino3_tile);
  RUN(test_direct);
  RUN(test_gemm_small);
  RUN(test_gemm_batch);
  return check_summary();
}
