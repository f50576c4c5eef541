/* tests/train/test_grad.c: central-difference checks of every backward kernel of the CPU
 * training path, one op at a time, then of whole small graphs through the training plan and
 * the CPU training backend (fusions, Add, Concat, Dropout, batch statistics).
 *
 * The loss is L = sum(r * y) for a fixed random r, so dL/dy = r; each checked element's
 * numerical derivative (L(x + h) - L(x - h)) / 2h is taken in double from the float forward.
 * The figure per tensor is max |numeric - analytic| / max |analytic| over the checked elements.
 * Ends with "N passed, N failed".
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/check.h"
#include "cpu/cpu.h"
#include "internal.h"

static uint64_t rs = 88172645463325252ull;
static double urand(void) {
  rs ^= rs << 13;
  rs ^= rs >> 7;
  rs ^= rs << 17;
  return (double)(rs >> 11) / 9007199254740992.0;
}
static void fill(float *x, size_t n, double lo, double hi) {
  for (size_t i = 0; i < n; i++) x[i] = (float)(lo + (hi - lo) * urand());
}
/* values away from zero (kinks of ReLU / L1): |v| in [0.1, 1] with a random sign */
static void fill_away(float *x, size_t n) {
  for (size_t i = 0; i < n; i++) x[i] = (float)((0.1 + 0.9 * urand()) * (urand() < 0.5 ? -1 : 1));
}
static double dotr(const float *y, const float *r, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += (double)y[i] * (double)r[i];
  return s;
}

typedef double (*loss_fn)(void *ctx);

/* Central differences on up to `samples` elements of x (all when fewer). */
static double check_tensor(float *x, size_t n, const float *ana, loss_fn f, void *ctx, double h, int samples) {
  double maxa = 0, maxe = 0;
  for (size_t i = 0; i < n; i++) maxa = fmax(maxa, fabs(ana[i]));
  size_t step = n <= (size_t)samples ? 1 : n / (size_t)samples;
  for (size_t i = 0; i < n; i += step) {
    size_t j = step == 1 ? i : (i + (size_t)(urand() * (double)step)) % n;
    float keep = x[j];
    x[j] = keep + (float)h;
    double lp = f(ctx);
    x[j] = keep - (float)h;
    double lm = f(ctx);
    x[j] = keep;
    double hh = ((double)(keep + (float)h) - (double)(keep - (float)h));
    double num = (lp - lm) / hh;
    maxe = fmax(maxe, fabs(num - ana[j]));
  }
  return maxa > 0 ? maxe / maxa : maxe;
}

/* As check_tensor for whole graphs, where a step can cross a ReLU kink: each element's derivative
 * is taken with h and h/2, and elements where the two disagree (a kink in between) are skipped
 * and counted. Tensors whose analytic gradient is zero up to rounding (a bias before an
 * InstanceNorm) are compared in absolute terms against the largest gradient of the graph. */
static double check_tensor_net(float *x, size_t n, const float *ana, loss_fn f, void *ctx, double h, int samples,
                               double gscale, int *skipped) {
  double maxa = 0, maxe = 0;
  for (size_t i = 0; i < n; i++) maxa = fmax(maxa, fabs(ana[i]));
  size_t step = n <= (size_t)samples ? 1 : n / (size_t)samples;
  for (size_t i = 0; i < n; i += step) {
    size_t j = step == 1 ? i : (i + (size_t)(urand() * (double)step)) % n;
    float keep = x[j];
    double num[2];
    for (int q = 0; q < 2; q++) {
      float hq = (float)(q ? h / 2 : h);
      x[j] = keep + hq;
      double lp = f(ctx);
      x[j] = keep - hq;
      double lm = f(ctx);
      x[j] = keep;
      num[q] = (lp - lm) / ((double)(keep + hq) - (double)(keep - hq));
    }
    if (fabs(num[0] - num[1]) > 0.005 * fmax(fabs(num[1]), 1e-2 * gscale)) {
      (*skipped)++;
      continue;
    }
    maxe = fmax(maxe, fabs(num[1] - ana[j]));
  }
  /* a gradient that is zero by construction: its numeric derivative must be rounding noise */
  if (maxa < 1e-5 * gscale) return maxe / gscale;
  return maxe / maxa;
}

/* ---- convolutions ---------------------------------------------------------------------------- */

typedef struct {
  conv_geom g;
  bool transpose;
  float *x, *w, *b, *y, *r, *scratch;
  size_t nx, nw, ny, scratch_n;
} conv_case;

static double conv_loss(void *p) {
  conv_case *c = p;
  if (c->transpose) cpu_convt_forward(&c->g, c->x, c->w, c->b, c->y, c->scratch, c->scratch_n, 2);
  else cpu_conv_forward(&c->g, c->x, c->w, c->b, c->y, c->scratch, c->scratch_n, 2);
  return dotr(c->y, c->r, c->ny);
}

static void conv_out_size(conv_geom *g, bool transpose) {
  if (transpose) {
    g->oh = (g->h - 1) * g->sh - g->pt - g->pb + g->kh + g->oph;
    g->ow = (g->w - 1) * g->sw - g->pl - g->pr + g->kw + g->opw;
  } else {
    g->oh = (g->h + g->pt + g->pb - g->kh) / g->sh + 1;
    g->ow = (g->w + g->pl + g->pr - g->kw) / g->sw + 1;
  }
}

static void run_conv_case(const char *name, int c, int h, int w, int m, int k, int s, int pad, int mode, bool transpose,
                          int op, size_t scratch_n) {
  conv_case cc;
  memset(&cc, 0, sizeof cc);
  conv_geom g = {c, h, w, m, 0, 0, k, k, s, s, 1, 1, pad, pad, pad, pad, mode, op, op, NULL, NULL};
  conv_out_size(&g, transpose);
  cc.g = g;
  cc.transpose = transpose;
  cc.nx = (size_t)c * h * w;
  cc.nw = (size_t)c * m * k * k;
  cc.ny = (size_t)m * g.oh * g.ow;
  cc.scratch_n = scratch_n ? scratch_n : (size_t)(c > m ? c : m) * k * k * (size_t)(g.oh * g.ow + h * w) + 4096;
  cc.x = malloc(cc.nx * 4);
  cc.w = malloc(cc.nw * 4);
  cc.b = malloc((size_t)m * 4);
  cc.y = malloc(cc.ny * 4);
  cc.r = malloc(cc.ny * 4);
  cc.scratch = malloc(cc.scratch_n * 4);
  float *gx = malloc(cc.nx * 4), *gw = calloc(cc.nw, 4), *gb = calloc((size_t)m, 4);
  fill(cc.x, cc.nx, -1, 1);
  fill(cc.w, cc.nw, -0.5, 0.5);
  fill(cc.b, (size_t)m, -0.5, 0.5);
  fill(cc.r, cc.ny, -1, 1);
  /* accumulate onto a known start to check the accumulate path too */
  fill(gx, cc.nx, -1, 1);
  float *gx0 = malloc(cc.nx * 4);
  memcpy(gx0, gx, cc.nx * 4);
  if (transpose) {
    cpu_convt_backward_data(&g, cc.r, cc.w, gx, true, cc.scratch, cc.scratch_n, 2);
    cpu_convt_backward_weights(&g, cc.x, cc.r, gw, gb, cc.scratch, cc.scratch_n, 2);
  } else {
    cpu_conv_backward_data(&g, cc.r, cc.w, gx, true, cc.scratch, cc.scratch_n, 2);
    cpu_conv_backward_weights(&g, cc.x, cc.r, gw, gb, cc.scratch, cc.scratch_n, 2);
  }
  for (size_t i = 0; i < cc.nx; i++) gx[i] -= gx0[i];
  double ex = check_tensor(cc.x, cc.nx, gx, conv_loss, &cc, 1e-2, 200);
  double ew = check_tensor(cc.w, cc.nw, gw, conv_loss, &cc, 1e-2, 200);
  double eb = check_tensor(cc.b, (size_t)m, gb, conv_loss, &cc, 1e-2, 200);
  printf("    %-44s dx %.2e  dw %.2e  db %.2e\n", name, ex, ew, eb);
  CHECK(ex < 2e-3 && ew < 2e-3 && eb < 2e-3, "%s: relative errors %g %g %g", name, ex, ew, eb);
  /* the write path equals the accumulate path minus the start */
  float *gx2 = malloc(cc.nx * 4);
  fill(gx2, cc.nx, 5, 6);
  if (transpose) cpu_convt_backward_data(&g, cc.r, cc.w, gx2, false, cc.scratch, cc.scratch_n, 2);
  else cpu_conv_backward_data(&g, cc.r, cc.w, gx2, false, cc.scratch, cc.scratch_n, 2);
  double d = 0;
  for (size_t i = 0; i < cc.nx; i++) d = fmax(d, fabs(gx2[i] - gx[i]));
  CHECK(d < 1e-5, "%s: write and accumulate paths differ by %g", name, d);
  free(gx2);
  free(cc.x);
  free(cc.w);
  free(cc.b);
  free(cc.y);
  free(cc.r);
  free(cc.scratch);
  free(gx);
  free(gx0);
  free(gw);
  free(gb);
}

static void test_conv(void) {
  run_conv_case("conv 3x3 s1 zero pad 1", 3, 9, 9, 4, 3, 1, 1, PAD_CONSTANT, false, 0, 0);
  run_conv_case("conv 3x3 s1 reflect pad 1 (fused Pad)", 5, 6, 7, 4, 3, 1, 1, PAD_REFLECT, false, 0, 0);
  run_conv_case("conv 7x7 s1 reflect pad 3", 3, 8, 9, 4, 7, 1, 3, PAD_REFLECT, false, 0, 0);
  run_conv_case("conv 3x3 reflect pad 5 > side 4 (numpy reflect)", 2, 4, 4, 3, 3, 1, 5, PAD_REFLECT, false, 0, 0);
  run_conv_case("conv 3x3 edge pad 2", 2, 5, 6, 3, 3, 1, 2, PAD_EDGE, false, 0, 0);
  run_conv_case("conv 4x4 s2 zero pad 1 (PatchGAN, U-Net down)", 6, 10, 10, 5, 4, 2, 1, PAD_CONSTANT, false, 0, 0);
  run_conv_case("conv 4x4 s1 zero pad 1 (PatchGAN tail)", 4, 7, 7, 1, 4, 1, 1, PAD_CONSTANT, false, 0, 0);
  run_conv_case("conv 3x3 s2 zero pad 1 (ResNet down, odd)", 4, 9, 8, 6, 3, 2, 1, PAD_CONSTANT, false, 0, 0);
  run_conv_case("conv 3x3 reflect, chunked scratch", 4, 8, 8, 5, 3, 1, 1, PAD_REFLECT, false, 0, 36 * 7 + 5);
  run_conv_case("convT 3x3 s2 p1 op1 (ResNet up)", 6, 5, 4, 4, 3, 2, 1, PAD_CONSTANT, true, 1, 0);
  run_conv_case("convT 4x4 s2 p1 (U-Net up)", 5, 4, 4, 3, 4, 2, 1, PAD_CONSTANT, true, 0, 0);
  run_conv_case("convT 4x4 s2 p1, chunked scratch", 5, 4, 4, 3, 4, 2, 1, PAD_CONSTANT, true, 0, 48 * 3 + 1);
}

/* The Winograd data gradient equals the GEMM one (every padding mode, odd sizes, accumulate). */
static void test_winograd_dgrad(void) {
  const int modes[3] = {PAD_REFLECT, PAD_CONSTANT, PAD_EDGE};
  static const char *names[3] = {"reflect", "zero", "edge"};
  for (int mi = 0; mi < 3; mi++) {
    int c = 16, m = 20, h = 7, w = 9;
    conv_geom g = {c, h, w, m, h, w, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, modes[mi], 0, 0, NULL, NULL};
    CHECK(cpu_winograd_applies(&g), "applies");
    size_t nx = (size_t)c * h * w, ny = (size_t)m * h * w, nw = (size_t)m * c * 9;
    size_t sc = cpu_winograd_backward_scratch(&g) + cpu_conv_backward_scratch(&g, false);
    float *dy = malloc(ny * 4), *wt = malloc(nw * 4), *a = malloc(nx * 4), *b = malloc(nx * 4), *s = malloc(sc * 4);
    fill(dy, ny, -1, 1);
    fill(wt, nw, -0.5, 0.5);
    fill(a, nx, -1, 1);
    memcpy(b, a, nx * 4);
    cpu_conv_backward_data(&g, dy, wt, a, true, s, sc, 2);
    cpu_conv_backward_data_winograd(&g, dy, wt, b, true, s, 2);
    double e = 0, mx = 0;
    for (size_t i = 0; i < nx; i++) {
      e = fmax(e, fabs(a[i] - b[i]));
      mx = fmax(mx, fabs(a[i]));
    }
    /* weights: GEMM against Winograd, whole and in chunks of 4 tiles, onto a nonzero start */
    float *w1 = malloc(nw * 4), *w2 = malloc(nw * 4), *w3 = malloc(nw * 4), bd1[20] = {0}, bd2[20] = {0};
    fill(w1, nw, -1, 1);
    memcpy(w2, w1, nw * 4);
    memcpy(w3, w1, nw * 4);
    cpu_conv_backward_weights(&g, a, dy, w1, bd1, s, sc, 2);
    cpu_conv_backward_weights_winograd(&g, a, dy, w2, bd2, s, sc, 2);
    cpu_conv_backward_weights_winograd(&g, a, dy, w3, NULL, s, cpu_winograd_wgrad_scratch(&g, 4), 2);
    double ew = 0, mw = 0, eb = 0;
    for (size_t i = 0; i < nw; i++) {
      ew = fmax(ew, fmax(fabs(w1[i] - w2[i]), fabs(w1[i] - w3[i])));
      mw = fmax(mw, fabs(w1[i]));
    }
    for (int i = 0; i < 20; i++) eb = fmax(eb, fabs(bd1[i] - bd2[i]));
    printf("    Winograd gradients, %-7s pad, 16->20, 7x9: data %.2e, weights %.2e\n", names[mi], e / mx, ew / mw);
    CHECK(e / mx < 1e-5 && ew / mw < 1e-5 && eb < 1e-4, "%s: relative differences %g %g, bias %g", names[mi], e / mx,
          ew / mw, eb);
    free(w1);
    free(w2);
    free(w3);
    free(dy);
    free(wt);
    free(a);
    free(b);
    free(s);
  }
}

/* The direct backward of the few-output convolutions (the generators' last 7x7 layer) equals
 * the GEMM one: every padding mode, one to four outputs, widths that leave a tail of columns,
 * accumulate and write; the data gradient is the same bit for bit on one and on two threads. */
static void test_direct_grads(void) {
  /* the checks after this one draw the same numbers as before it was added (theirs avoid kinks
   * for the draws they have) */
  uint64_t keep_rs = rs;
  static const struct {
    int c, h, w, m, k, pad, mode;
    const char *name;
  } cases[] = {
      {9, 12, 21, 3, 7, 3, PAD_REFLECT, "9->3 7x7 reflect 3, 12x21"},
      {5, 9, 16, 2, 7, 3, PAD_CONSTANT, "5->2 7x7 zero 3, 9x16"},
      {6, 8, 11, 1, 7, 3, PAD_EDGE, "6->1 7x7 edge 3, 8x11"},
      {7, 10, 13, 4, 4, 1, PAD_CONSTANT, "7->4 4x4 zero 1, 10x13"},
      {3, 6, 9, 3, 5, 2, PAD_REFLECT, "3->3 5x5 reflect 2, 6x9"},
  };
  for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
    int c = cases[ci].c, h = cases[ci].h, w = cases[ci].w, m = cases[ci].m, k = cases[ci].k, p = cases[ci].pad;
    conv_geom g = {c, h, w, m, 0, 0, k, k, 1, 1, 1, 1, p, p, p, p, cases[ci].mode, 0, 0, NULL, NULL};
    conv_out_size(&g, false);
    CHECK(cpu_direct_backward_applies(&g), "%s: applies", cases[ci].name);
    size_t nx = (size_t)c * h * w, ny = (size_t)m * g.oh * g.ow, nw = (size_t)m * c * k * k;
    size_t sc = cpu_direct_backward_scratch(&g, 2) + cpu_conv_backward_scratch(&g, false);
    float *x = malloc(nx * 4), *dy = malloc(ny * 4), *wt = malloc(nw * 4), *s = malloc(sc * 4);
    float *a = malloc(nx * 4), *b = malloc(nx * 4), *b1 = malloc(nx * 4), *bw = malloc(nx * 4), *a0 = malloc(nx * 4);
    fill(x, nx, -1, 1);
    fill(dy, ny, -1, 1);
    fill(wt, nw, -0.5, 0.5);
    fill(a, nx, -1, 1);
    memcpy(a0, a, nx * 4);
    memcpy(b, a, nx * 4);
    memcpy(b1, a, nx * 4);
    fill(bw, nx, 5, 6);
    cpu_conv_backward_data(&g, dy, wt, a, true, s, sc, 2);
    cpu_conv_backward_data_direct(&g, dy, wt, b, true, s, 2);
    cpu_conv_backward_data_direct(&g, dy, wt, b1, true, s, 1);
    cpu_conv_backward_data_direct(&g, dy, wt, bw, false, s, 2);
    double e = 0, mx = 0, ew0 = 0;
    int same = memcmp(b, b1, nx * 4) == 0;
    for (size_t i = 0; i < nx; i++) {
      e = fmax(e, fabs(a[i] - b[i]));
      mx = fmax(mx, fabs(a[i]));
    }
    /* the write path: the accumulated result less its start */
    for (size_t i = 0; i < nx; i++) ew0 = fmax(ew0, fabs(bw[i] - (b[i] - a0[i])));
    float *w1 = malloc(nw * 4), *w2 = malloc(nw * 4), bd1[4] = {0}, bd2[4] = {0};
    fill(w1, nw, -1, 1);
    memcpy(w2, w1, nw * 4);
    cpu_conv_backward_weights(&g, x, dy, w1, bd1, s, sc, 2);
    cpu_conv_backward_weights_direct(&g, x, dy, w2, bd2, s, 2);
    double ew = 0, mw = 0, eb = 0;
    for (size_t i = 0; i < nw; i++) {
      ew = fmax(ew, fabs(w1[i] - w2[i]));
      mw = fmax(mw, fabs(w1[i]));
    }
    for (int i = 0; i < m; i++) eb = fmax(eb, fabs(bd1[i] - bd2[i]));
    printf("    direct gradients, %-28s data %.2e, weights %.2e\n", cases[ci].name, e / mx, ew / mw);
    CHECK(e / mx < 1e-6 && ew / mw < 1e-6 && eb < 1e-5, "%s: relative differences %g %g, bias %g", cases[ci].name,
          e / mx, ew / mw, eb);
    CHECK(ew0 < 1e-5, "%s: write and accumulate paths differ by %g", cases[ci].name, ew0);
    CHECK(same, "%s: the data gradient differs between one and two threads", cases[ci].name);
    free(x);
    free(dy);
    free(wt);
    free(s);
    free(a);
    free(b);
    free(b1);
    free(bw);
    free(a0);
    free(w1);
    free(w2);
  }
  rs = keep_rs;
}

/* ---- norms ------------------------------------------------------------------------------------ */

typedef struct {
  int n, c, act;
  size_t hw;
  bool batch;
  float *x, *y, *r, *scale, *bias, *mean, *rstd;
} norm_case;

static double norm_loss(void *p) {
  norm_case *k = p;
  cpu_norm_train_forward(k->x, k->y, k->n, k->c, k->hw, k->batch, k->scale, k->bias, 1e-5f, k->act, 0.2f, k->mean, k->rstd,
                         NULL, NULL, 0.1f, 2);
  return dotr(k->y, k->r, (size_t)k->n * k->c * k->hw);
}

static void run_norm_case(const char *name, int n, int c, size_t hw, bool batch, int act) {
  norm_case k = {n, c, act, hw, batch, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
  size_t nx = (size_t)n * c * hw;
  k.x = malloc(nx * 4);
  k.y = malloc(nx * 4);
  k.r = malloc(nx * 4);
  k.scale = malloc((size_t)c * 4);
  k.bias = malloc((size_t)c * 4);
  k.mean = malloc((size_t)n * c * 4);
  k.rstd = malloc((size_t)n * c * 4);
  float *gx = malloc(nx * 4), *gs = calloc((size_t)c, 4), *gb = calloc((size_t)c, 4);
  fill(k.x, nx, -2, 2);
  fill(k.r, nx, -1, 1);
  fill(k.scale, (size_t)c, 0.5, 1.5);
  fill(k.bias, (size_t)c, 0.2, 0.6);
  norm_loss(&k);
  cpu_norm_backward(k.x, k.r, gx, false, n, c, hw, batch, k.scale, k.bias, k.mean, k.rstd, act, 0.2f, gs, gb, 2);
  /* with an activation a step can move an output across its kink (every output moves with the
   * statistics): those elements are skipped, as in the graph checks */
  int skipped = 0;
  double ex, es, eb;
  if (act == ACT_NONE) {
    ex = check_tensor(k.x, nx, gx, norm_loss, &k, 2e-3, 300);
    es = check_tensor(k.scale, (size_t)c, gs, norm_loss, &k, 2e-3, 100);
    eb = check_tensor(k.bias, (size_t)c, gb, norm_loss, &k, 2e-3, 100);
  } else {
    ex = check_tensor_net(k.x, nx, gx, norm_loss, &k, 2e-3, 300, 1.0, &skipped);
    es = check_tensor_net(k.scale, (size_t)c, gs, norm_loss, &k, 2e-3, 100, 1.0, &skipped);
    eb = check_tensor_net(k.bias, (size_t)c, gb, norm_loss, &k, 2e-3, 100, 1.0, &skipped);
  }
  printf("    %-44s dx %.2e  dscale %.2e  dbias %.2e", name, ex, es, eb);
  printf(skipped ? "  (%d elements skipped: a kink between x - h and x + h)\n" : "\n", skipped);
  CHECK(ex < 5e-3 && es < 5e-3 && eb < 5e-3, "%s: relative errors %g %g %g", name, ex, es, eb);
  free(k.x);
  free(k.y);
  free(k.r);
  free(k.scale);
  free(k.bias);
  free(k.mean);
  free(k.rstd);
  free(gx);
  free(gs);
  free(gb);
}

static void test_norm(void) {
  run_norm_case("instance norm, 2 images", 2, 3, 35, false, ACT_NONE);
  run_norm_case("instance norm + ReLU", 2, 3, 35, false, ACT_RELU);
  run_norm_case("batch norm over 3 images + LeakyReLU", 3, 4, 12, true, ACT_LRELU);
  run_norm_case("batch norm, 4 images of 1x1", 4, 3, 1, true, ACT_NONE);
  run_norm_case("batch norm, 1 image of 2x2 + ReLU", 1, 3, 4, true, ACT_RELU);
}

/* running statistics: momentum 0.1, unbiased variance */
static void test_running_stats(void) {
  int n = 3, c = 2;
  size_t hw = 5;
  float x[30], y[30], sc[2] = {1, 1}, bi[2] = {0, 0}, mean[2], rstd[2], rm[2] = {0.5f, -1}, rv[2] = {2, 0.5f};
  fill(x, 30, -3, 3);
  cpu_norm_train_forward(x, y, n, c, hw, true, sc, bi, 1e-5f, ACT_NONE, 0, mean, rstd, rm, rv, 0.1f, 1);
  for (int ci = 0; ci < c; ci++) {
    double s = 0, q = 0;
    for (int i = 0; i < n; i++)
      for (size_t k = 0; k < hw; k++) s += x[(i * c + ci) * hw + k];
    double mu = s / 15;
    for (int i = 0; i < n; i++)
      for (size_t k = 0; k < hw; k++) q += pow(x[(i * c + ci) * hw + k] - mu, 2);
    double want_m = 0.9 * (ci ? -1 : 0.5) + 0.1 * mu, want_v = 0.9 * (ci ? 0.5 : 2) + 0.1 * q / 14;
    CHECK(fabs(rm[ci] - want_m) < 1e-6 && fabs(rv[ci] - want_v) < 1e-6, "channel %d: running %g %g, want %g %g", ci, rm[ci],
          rv[ci], want_m, want_v);
  }
}

/* ---- pointwise --------------------------------------------------------------------------------- */

typedef struct {
  int kind;  /* 0 relu 1 lrelu 2 tanh 3 dropout 4 pad */
  size_t n, ny;
  int c, h, w, pads[4], mode;
  float *x, *y, *r;
} pw_case;

static double pw_loss(void *p) {
  pw_case *k = p;
  switch (k->kind) {
  case 0: cpu_act_forward(k->x, k->y, k->n, ACT_RELU, 0, 2); break;
  case 1: cpu_act_forward(k->x, k->y, k->n, ACT_LRELU, 0.2f, 2); break;
  case 2: cpu_tanh_forward(k->x, k->y, k->n, 2); break;
  case 3: cpu_dropout_forward(k->x, k->y, k->c, k->h, k->w, 0.5f, 1234, 2, 1, 77, 2); break;
  default: cpu_pad_forward(k->x, k->y, k->c, k->h, k->w, k->pads, k->mode, 0, 2); break;
  }
  return dotr(k->y, k->r, k->ny);
}

static void run_pw(const char *name, int kind, int c, int h, int w, int mode, int p0, int p1, int p2, int p3) {
  pw_case k = {kind, (size_t)c * h * w, 0, c, h, w, {p0, p1, p2, p3}, mode, NULL, NULL, NULL};
  k.ny = kind == 4 ? (size_t)c * (h + p0 + p2) * (w + p1 + p3) : k.n;
  k.x = malloc(k.n * 4);
  k.y = malloc(k.ny * 4);
  k.r = malloc(k.ny * 4);
  float *gx = malloc(k.n * 4);
  fill_away(k.x, k.n);
  fill(k.r, k.ny, -1, 1);
  pw_loss(&k);
  switch (kind) {
  case 0: cpu_act_backward(k.y, k.r, gx, k.n, ACT_RELU, 0, false, 2); break;
  case 1: cpu_act_backward(k.y, k.r, gx, k.n, ACT_LRELU, 0.2f, false, 2); break;
  case 2: cpu_tanh_backward(k.y, k.r, gx, k.n, false, 2); break;
  case 3: cpu_dropout_backward(k.r, gx, c, h, w, 0.5f, 1234, 2, 1, 77, false, 2); break;
  default: cpu_pad_backward(k.r, gx, c, h, w, k.pads, mode, false, 2); break;
  }
  double e = check_tensor(k.x, k.n, gx, pw_loss, &k, 1e-2, 400);
  printf("    %-44s dx %.2e\n", name, e);
  CHECK(e < 2e-3, "%s: relative error %g", name, e);
  free(k.x);
  free(k.y);
  free(k.r);
  free(gx);
}

static void test_pointwise(void) {
  run_pw("ReLU", 0, 3, 5, 7, 0, 0, 0, 0, 0);
  run_pw("LeakyReLU 0.2", 1, 3, 5, 7, 0, 0, 0, 0, 0);
  run_pw("Tanh", 2, 3, 5, 7, 0, 0, 0, 0, 0);
  run_pw("Dropout 0.5 (image 1, step 77)", 3, 4, 6, 5, 0, 0, 0, 0, 0);
  run_pw("Pad reflect 3 (standalone)", 4, 2, 6, 5, PAD_REFLECT, 3, 3, 3, 3);
  run_pw("Pad reflect 1,2,0,4 (long side repeats)", 4, 2, 3, 4, PAD_REFLECT, 1, 2, 0, 4);
  run_pw("Pad zero 1", 4, 2, 4, 4, PAD_CONSTANT, 1, 1, 1, 1);
  run_pw("Pad edge 2", 4, 2, 4, 3, PAD_EDGE, 2, 2, 2, 2);
}

/* ---- losses ------------------------------------------------------------------------------------ */

typedef struct {
  int kind;
  size_t n;
  float *x, *t;
  float label, weight;
} loss_case;

static double lossc(void *p) {
  loss_case *k = p;
  return cpu_loss(k->kind, k->x, k->t, k->label, k->n, k->weight, NULL, false, 1);
}

static void test_losses(void) {
  static const char *names[3] = {"MSE (LSGAN), label 1", "BCE with logits, label 0", "L1 against a tensor, weight 10"};
  for (int kind = 0; kind < 3; kind++) {
    loss_case k = {kind, 50, malloc(50 * 4), kind == 2 ? malloc(50 * 4) : NULL, kind == 0 ? 1.0f : 0.0f,
                   kind == 2 ? 10.0f : 0.5f};
    float *g = malloc(50 * 4);
    fill(k.x, 50, -2, 2);
    if (k.t) {
      for (int i = 0; i < 50; i++) k.t[i] = k.x[i] + (float)((0.2 + urand()) * (urand() < 0.5 ? -1 : 1));
    }
    cpu_loss(kind, k.x, k.t, k.label, 50, k.weight, g, false, 1);
    double e = check_tensor(k.x, 50, g, lossc, &k, 1e-2, 50);
    printf("    %-44s dx %.2e\n", names[kind], e);
    CHECK(e < 2e-3, "%s: relative error %g", names[kind], e);
    free(k.x);
    free(k.t);
    free(g);
  }
  /* known values: BCE(0, label 1) = log 2, MSE(3, label 1) = 4, L1 */
  float z = 0, three = 3;
  CHECK(fabs(cpu_loss(LOSS_BCE, &z, NULL, 1.0f, 1, 1.0f, NULL, false, 1) - log(2.0)) < 1e-12, "BCE(0,1)");
  CHECK(fabs(cpu_loss(LOSS_MSE, &three, NULL, 1.0f, 1, 1.0f, NULL, false, 1) - 4.0) < 1e-12, "MSE(3,1)");
  float big = 200;
  CHECK(isfinite(cpu_loss(LOSS_BCE, &big, NULL, 0.0f, 1, 1.0f, NULL, false, 1)), "BCE of a large logit is finite");
}

/* Adam against a direct transcription of torch.optim.Adam's update in double. */
static void test_adam(void) {
  float p[8], g[8], m[8] = {0}, v[8] = {0};
  double pd[8], md[8] = {0}, vd[8] = {0};
  fill(p, 8, -1, 1);
  for (int i = 0; i < 8; i++) pd[i] = p[i];
  double maxd = 0;
  for (int t = 1; t <= 5; t++) {
    fill(g, 8, -1e-3, 1e-3);
    cpu_adam(p, g, m, v, 8, 2e-4f, 0.5f, 0.999f, 1e-8f, (uint64_t)t, 1);
    for (int i = 0; i < 8; i++) {
      md[i] = 0.5 * md[i] + 0.5 * g[i];
      vd[i] = 0.999 * vd[i] + 0.001 * (double)g[i] * g[i];
      double bc1 = 1 - pow(0.5, t), bc2 = 1 - pow(0.999, t);
      pd[i] -= 2e-4 / bc1 * md[i] / (sqrt(vd[i]) / sqrt(bc2) + 1e-8);
      maxd = fmax(maxd, fabs(pd[i] - p[i]));
    }
  }
  printf("    Adam, 5 steps: max |p - p_double| %.2e\n", maxd);
  CHECK(maxd < 1e-6, "Adam differs from the double reference by %g", maxd);
}

/* ---- whole graphs through the training plan ------------------------------------------------- */

typedef struct {
  i2i_ctx *ctx;
  i2i_model *m;
  i2i_tplan plan;
  i2i_tnet net;
  float *arena, *grads, *scratch, *r;
  size_t nout, nin;
} net_case;

static double net_loss(void *p) {
  net_case *k = p;
  i2i_cpu_train_backend.forward(NULL, k->ctx, &k->net, k->arena, k->scratch, 99, 5);
  return dotr(k->arena + k->net.plan.act_off[k->net.plan.output], k->r, k->nout);
}

static void add_init(i2i_builder *b, const char *name, int rank, const int64_t *dims, double lo, double hi) {
  size_t n = 1;
  for (int i = 0; i < rank; i++) n *= (size_t)dims[i];
  float *v = malloc(n * 4);
  fill(v, n, lo, hi);
  i2i_builder_add_initializer(b, name, 1, rank, dims, v);
  free(v);
}

static void conv_node(i2i_builder *b, const char *name, const char *x, const char *out, int cin, int cout, int k, int s,
                      int p, bool transpose, int op, bool bias) {
  char wn[64], bn[64];
  snprintf(wn, sizeof wn, "%s.weight", name);
  snprintf(bn, sizeof bn, "%s.bias", name);
  int64_t dw[4] = {transpose ? cin : cout, transpose ? cout : cin, k, k}, db[1] = {cout};
  add_init(b, wn, 4, dw, -0.3, 0.3);
  if (bias) add_init(b, bn, 1, db, -0.2, 0.2);
  int64_t ks[2] = {k, k}, st[2] = {s, s}, pd[4] = {p, p, p, p}, opd[2] = {op, op};
  i2i_attr a[4] = {{.name = "kernel_shape", .type = I2I_ATTR_INTS, .ints = ks, .n_ints = 2},
                   {.name = "strides", .type = I2I_ATTR_INTS, .ints = st, .n_ints = 2},
                   {.name = "pads", .type = I2I_ATTR_INTS, .ints = pd, .n_ints = 4},
                   {.name = "output_padding", .type = I2I_ATTR_INTS, .ints = opd, .n_ints = 2}};
  const char *in[3] = {x, wn, bn};
  const char *o[1] = {out};
  i2i_builder_add_node(b, transpose ? "ConvTranspose" : "Conv", name, bias ? 3 : 2, in, 1, o, transpose ? 4 : 3, a);
}

static void norm_node(i2i_builder *b, const char *name, const char *x, const char *out, int c, bool bn) {
  char s[64], bi[64], rm[64], rv[64];
  snprintf(s, sizeof s, "%s.weight", name);
  snprintf(bi, sizeof bi, "%s.bias", name);
  snprintf(rm, sizeof rm, "%s.running_mean", name);
  snprintf(rv, sizeof rv, "%s.running_var", name);
  int64_t d[1] = {c};
  add_init(b, s, 1, d, bn ? 0.8 : 1.0, bn ? 1.2 : 1.0);
  add_init(b, bi, 1, d, bn ? -0.2 : 0.0, bn ? 0.2 : 0.0);
  if (bn) {
    add_init(b, rm, 1, d, 0, 0);
    add_init(b, rv, 1, d, 1, 1);
  }
  i2i_attr e = {.name = "epsilon", .type = I2I_ATTR_FLOAT, .f = 1e-5f};
  const char *in[3] = {x, s, bi};
  const char *o[1] = {out};
  i2i_builder_add_node(b, "InstanceNormalization", name, 3, in, 1, o, 1, &e);
}

static void simple(i2i_builder *b, const char *op, const char *name, int nin, const char *const *in, const char *out) {
  const char *o[1] = {out};
  i2i_attr a = {.name = "alpha", .type = I2I_ATTR_FLOAT, .f = 0.2f};
  i2i_attr ax = {.name = "axis", .type = I2I_ATTR_INT, .i = 1};
  bool lr = !strcmp(op, "LeakyRelu"), cat = !strcmp(op, "Concat");
  i2i_builder_add_node(b, op, name, nin, in, 1, o, lr || cat ? 1 : 0, cat ? &ax : &a);
}

/* A graph with every op: reflect Pad -> Conv -> IN+ReLU; Conv s2 -> BN(batch)+LeakyReLU ->
 * Dropout -> ConvT; Concat with the skip; Add; Conv -> Tanh. */
static i2i_model *all_ops_model(i2i_ctx *ctx) {
  i2i_builder *b;
  i2i_builder_new(ctx, &b);
  i2i_builder_add_input(b, "input", 3);
  int64_t pads[8] = {0, 0, 1, 1, 0, 0, 1, 1};
  i2i_builder_add_initializer(b, "pads", 7, 1, (int64_t[]){8}, pads);
  i2i_attr pm = {.name = "mode", .type = I2I_ATTR_STRING, .s = "reflect"};
  const char *pin[2] = {"input", "pads"};
  const char *po[1] = {"pad0"};
  i2i_builder_add_node(b, "Pad", "pad0", 2, pin, 1, po, 1, &pm);
  conv_node(b, "c0", "pad0", "c0", 3, 4, 3, 1, 0, false, 0, true);
  norm_node(b, "in0", "c0", "in0", 4, false);
  simple(b, "Relu", "r0", 1, (const char *[]){"in0"}, "r0");
  conv_node(b, "c1", "r0", "c1", 4, 6, 4, 2, 1, false, 0, false);
  norm_node(b, "bn1", "c1", "bn1", 6, true);
  simple(b, "LeakyRelu", "l1", 1, (const char *[]){"bn1"}, "l1");
  float ratio = 0.5f;
  i2i_builder_add_initializer(b, "ratio", 1, 0, NULL, &ratio);
  const char *din[2] = {"l1", "ratio"};
  const char *dout[1] = {"d1"};
  i2i_builder_add_node(b, "Dropout", "d1", 2, din, 1, dout, 0, NULL);
  conv_node(b, "t1", "d1", "t1", 6, 4, 4, 2, 1, true, 0, false);
  simple(b, "Concat", "cat", 2, (const char *[]){"r0", "t1"}, "cat");
  conv_node(b, "c2", "cat", "c2", 8, 4, 3, 1, 1, false, 0, true);
  simple(b, "Add", "add", 2, (const char *[]){"c2", "r0"}, "add");
  conv_node(b, "c3", "add", "c3", 4, 3, 3, 1, 1, false, 0, true);
  simple(b, "Tanh", "tanh", 1, (const char *[]){"c3"}, "output");
  i2i_builder_add_output(b, "output", 3);
  i2i_builder_set_meta(b, "i2i.batchnorm", "bn1");
  i2i_model *m = NULL;
  i2i_status st = i2i_builder_finish(b, &m);
  if (st) printf("    building the all-ops graph: %s\n", i2i_ctx_errmsg(ctx));
  return m;
}

static void run_net_case(const char *name, i2i_ctx *ctx, i2i_model *m, int n, int h, int w) {
  net_case k;
  memset(&k, 0, sizeof k);
  k.ctx = ctx;
  k.m = m;
  i2i_status st = tplan_build(ctx, m, n, h, w, &k.net.plan);
  CHECK(!st, "%s: plan: %s", name, i2i_ctx_errmsg(ctx));
  if (st) return;
  k.net.m = m;
  k.net.param = m->weights;
  k.net.n_floats = m->n_weights;
  k.net.grad = calloc(m->n_weights, 4);
  k.arena = calloc(k.net.plan.act_floats + 16, 4);
  k.grads = calloc(k.net.plan.grad_floats + 16, 4);
  k.scratch = calloc(k.net.plan.scratch_floats + 16, 4);
  k.nout = shape_numel(k.net.plan.shape[k.net.plan.output]);
  k.nin = shape_numel(k.net.plan.shape[k.net.plan.input]);
  k.r = malloc(k.nout * 4);
  fill(k.r, k.nout, -1, 1);
  float *x = k.arena + k.net.plan.act_off[k.net.plan.input];
  fill(x, k.nin, -1, 1);
  float *x0 = malloc(k.nin * 4);
  memcpy(x0, x, k.nin * 4);
  net_loss(&k);
  memcpy(k.grads + k.net.plan.grad_off[k.net.plan.output], k.r, k.nout * 4);
  i2i_cpu_train_backend.backward(NULL, ctx, &k.net, k.arena, k.grads, k.scratch, true, true, 99, 5);
  float *gx = malloc(k.nin * 4);
  memcpy(gx, k.grads + k.net.plan.grad_off[k.net.plan.input], k.nin * 4);
  double gscale = 0;
  for (size_t i = 0; i < k.nin; i++) gscale = fmax(gscale, fabs(gx[i]));
  for (size_t i = 0; i < m->n_weights; i++) gscale = fmax(gscale, fabs(k.net.grad[i]));
  int skipped = 0;
  /* the input: the forward overwrites nothing of it, so perturb it in place */
  double ex = check_tensor_net(x, k.nin, gx, net_loss, &k, 2e-3, 60, gscale, &skipped);
  double worst = ex;
  printf("    %-44s input %.2e\n", name, ex);
  /* every trained tensor */
  for (int s = 0; s < k.net.plan.n_steps; s++) {
    const i2i_tstep *t = &k.net.plan.steps[s];
    const i2i_node *nd = &m->g.nodes[t->node];
    size_t offs[2] = {t->w_train ? t->w_off : SIZE_MAX, t->b_train ? t->b_off : SIZE_MAX};
    int vals[2] = {nd->n_in > 1 ? nd->in[1] : -1, nd->n_in > 2 ? nd->in[2] : -1};
    for (int j = 0; j < 2; j++) {
      if (offs[j] == SIZE_MAX) continue;
      size_t numel = m->g.values[vals[j]].c->numel;
      double e = check_tensor_net(m->weights + offs[j], numel, k.net.grad + offs[j], net_loss, &k, 2e-3, 40, gscale,
                                  &skipped);
      printf("      %-42s %.2e\n", m->g.values[vals[j]].name, e);
      worst = fmax(worst, e);
    }
  }
  printf("      (%d elements skipped: a ReLU kink between x - h and x + h)\n", skipped);
  CHECK(worst < 1e-2, "%s: worst relative error %g", name, worst);
  tplan_free(ctx, &k.net.plan);
  free(k.net.grad);
  free(k.arena);
  free(k.grads);
  free(k.scratch);
  free(k.r);
  free(x0);
  free(gx);
}

static void test_graphs(void) {
  i2i_ctx_params cp;
  i2i_ctx_default_params(&cp);
  cp.backend = I2I_BACKEND_CPU;
  cp.threads = 2;
  i2i_ctx *ctx;
  i2i_ctx_create(&cp, &ctx);
  i2i_model *m = all_ops_model(ctx);
  CHECK(m != NULL, "all-ops graph");
  if (m) {
    run_net_case("all-ops graph, batch 1, 8x8", ctx, m, 1, 8, 8);
    run_net_case("all-ops graph, batch 3, 8x12", ctx, m, 3, 8, 12);
  }
  i2i_model_free(m);
  i2i_ctx_free(ctx);
}

int main(void) {
  RUN(test_conv);
  RUN(test_winograd_dgrad);
  RUN(test_direct_grads);
  RUN(test_norm);
  RUN(test_running_stats);
  RUN(test_pointwise);
  RUN(test_losses);
  RUN(test_adam);
  RUN(test_graphs);
  return check_summary();
}
