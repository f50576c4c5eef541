/* golden.c: the library side of the golden tests, driven by run_golden.py.
 *
 *   golden run MODEL IN.npy REF.npy MODE SEED TOL   i2i_run on IN; every output finite and
 *                                                   max |out - REF| <= TOL (TOL may be inf)
 *   golden ops MODEL                                compute-op counts of the folded graph
 *   golden philox DUMP.bin N SEED                   Philox4x32-10 equals philox.py's dump
 *   golden mask DUMP.bin SEED ORDINAL N,C,H,W STEP RATIO
 *                                                   dropout_keep equals philox.py --mask-dump
 *   golden dropfrac MODEL SIZE SEED                 dropped fraction of each Dropout layer
 *   golden tiles MODEL IN.npy MODE                  budgets forcing 1, ~4 and many tiles agree
 * It links the engine statically and reaches rng.c's Philox and dropout_keep (engine internals)
 * for the comparisons with philox.py; everything else goes through the public API.
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "i2i.h"
#include "npy.h"

/* engine internals (engine/src/rng.c) */
void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);
bool dropout_keep(uint64_t seed, uint32_t x, uint32_t y, uint32_t channel, uint32_t batch_index, uint32_t ordinal,
                  uint64_t step, uint32_t threshold);

static i2i_ctx *ctx_cpu(void) {
  i2i_ctx_params p;
  i2i_ctx_default_params(&p);
  p.backend = I2I_BACKEND_CPU;
  i2i_ctx *c = NULL;
  i2i_ctx_create(&p, &c);
  return c;
}

static int cmd_run(int argc, char **argv) {
  if (argc != 8) return 2;
  i2i_ctx *ctx = ctx_cpu();
  i2i_model *m;
  if (i2i_model_load_file(ctx, argv[2], &m)) {
    printf("load: %s\n", i2i_ctx_errmsg(ctx));
    return 1;
  }
  char err[512];
  i2i_npy_image in, ref;
  if (!i2i_npy_load(argv[3], &in, err, sizeof err) || !i2i_npy_load(argv[4], &ref, err, sizeof err)) {
    printf("npy: %s\n", err);
    return 1;
  }
  size_t n = (size_t)in.width * (size_t)in.height;
  float *x = malloc(n * 3 * sizeof(float)), *y = malloc(n * 3 * sizeof(float));
  for (size_t i = 0; i < n; i++)
    for (int c = 0; c < 3; c++) x[i * 3 + (size_t)c] = in.rgba[i * 4 + (size_t)c];
  i2i_run_params rp;
  i2i_run_default_params(&rp);
  rp.layout = I2I_PIXELS_RGB_SIGNED;
  rp.pix2pix_mode = !strcmp(argv[5], "eval") ? I2I_PIX2PIX_EVAL
                    : !strcmp(argv[5], "faithful") ? I2I_PIX2PIX_FAITHFUL
                                                   : I2I_PIX2PIX_DETERMINISTIC;
  rp.seed = strtoull(argv[6], NULL, 10);
  const float *ins[1] = {x};
  float *outs[1] = {y};
  if (i2i_run(ctx, m, &rp, 1, in.width, in.height, ins, outs, NULL)) {
    printf("run: %s\n", i2i_ctx_errmsg(ctx));
    return 1;
  }
  double maxd = 0, tol = atof(argv[7]);
  if (ref.width != in.width || ref.height != in.height) {
    printf("reference is %dx%d, input %dx%d\n", ref.width, ref.height, in.width, in.height);
    return 1;
  }
  size_t nonfinite = 0; /* fmax ignores NaN: count them apart */
  for (size_t i = 0; i < n; i++)
    for (int c = 0; c < 3; c++) {
      float v = y[i * 3 + (size_t)c];
      nonfinite += !isfinite(v);
      maxd = fmax(maxd, fabs((double)v - ref.rgba[i * 4 + (size_t)c]));
    }
  printf("max_abs %.3g", maxd);
  if (nonfinite) printf(", %zu non-finite outputs", nonfinite);
  printf("\n");
  free(x);
  free(y);
  i2i_npy_free(&in);
  i2i_npy_free(&ref);
  i2i_model_free(m);
  i2i_ctx_free(ctx);
  return maxd <= tol && !nonfinite ? 0 : 1;
}

static int cmd_ops(int argc, char **argv) {
  if (argc != 3) return 2;
  i2i_ctx *ctx = ctx_cpu();
  i2i_model *m;
  if (i2i_model_load_file(ctx, argv[2], &m)) {
    printf("load: %s\n", i2i_ctx_errmsg(ctx));
    return 1;
  }
  const char *names[32];
  int counts[32], k = 0;
  for (int i = 0; i < i2i_model_node_count(m); i++) {
    i2i_node_desc d;
    i2i_model_node(m, i, &d);
    int j = 0;
    while (j < k && strcmp(names[j], d.op_type)) j++;
    if (j == k && k < 32) {
      names[k] = d.op_type;
      counts[k++] = 0;
    }
    if (j < 32) counts[j]++;
  }
  for (int j = 0; j < k; j++) printf("%s=%d\n", names[j], counts[j]);
  i2i_model_info in;
  i2i_model_get_info(m, &in);
  printf("folded=%d multiple=%d family=%d\n", in.n_folded, in.size_multiple, (int)in.family);
  i2i_model_free(m);
  i2i_ctx_free(ctx);
  return 0;
}

static int cmd_philox(int argc, char **argv) {
  if (argc != 5) return 2;
  FILE *f = fopen(argv[2], "rb");
  if (!f) return 1;
  unsigned long n = strtoul(argv[3], NULL, 10);
  uint64_t seed = strtoull(argv[4], NULL, 0);
  uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  unsigned long bad = 0;
  for (unsigned long i = 0; i < n; i++) {
    uint32_t want[4], got[4];
    if (fread(want, 4, 4, f) != 4) {
      fclose(f);
      printf("dump too short at %lu\n", i);
      return 1;
    }
    uint32_t c[4] = {(uint32_t)i, (uint32_t)(i * 7 + 1), (uint32_t)(i * 13 + 2), (uint32_t)(i * 31 + 3)};
    philox4x32_10(c, key, got);
    bad += memcmp(want, got, 16) != 0;
  }
  fclose(f);
  printf("philox: %lu of %lu counters differ\n", bad, n);
  return bad ? 1 : 0;
}

/* Parses "N,C,H,W" into four positive ints. */
static bool parse_shape(const char *s, int d[4]) {
  char *end;
  for (int i = 0; i < 4; i++) {
    long v = strtol(s, &end, 10);
    if (end == s || v < 1 || v > (1L << 20) || (i < 3 ? *end != ',' : *end != 0)) return false;
    d[i] = (int)v;
    s = end + 1;
  }
  return (double)d[0] * d[1] * d[2] * d[3] <= (double)(1L << 26);
}

static int cmd_mask(int argc, char **argv) {
  if (argc != 8) return 2;
  uint64_t seed = strtoull(argv[3], NULL, 0);
  uint32_t ordinal = (uint32_t)strtoul(argv[4], NULL, 0);
  int d[4];
  if (!parse_shape(argv[5], d)) {
    printf("bad shape '%s'\n", argv[5]);
    return 2;
  }
  uint64_t step = strtoull(argv[6], NULL, 0);
  /* the engine holds the ratio as float32 (engine/src/internal.h dropout_consts) */
  float ratio = strtof(argv[7], NULL);
  double th = floor((double)ratio * 4294967296.0);
  uint32_t threshold = th >= 4294967295.0 ? 0xffffffffu : (uint32_t)th;
  float scale = 1.0f / (1.0f - ratio);
  FILE *f = fopen(argv[2], "rb");
  if (!f) {
    printf("cannot open %s\n", argv[2]);
    return 1;
  }
  unsigned long bad = 0, kept = 0, total = 0, badval = 0;
  for (int n = 0; n < d[0]; n++)
    for (int c = 0; c < d[1]; c++)
      for (int y = 0; y < d[2]; y++)
        for (int x = 0; x < d[3]; x++, total++) {
          float want;
          if (fread(&want, sizeof want, 1, f) != 1) {
            fclose(f);
            printf("dump too short at element %lu\n", total);
            return 1;
          }
          badval += want != 0.0f && want != scale;
          bool keep = dropout_keep(seed, (uint32_t)x, (uint32_t)y, (uint32_t)c, (uint32_t)n, ordinal, step, threshold);
          kept += keep;
          bad += keep != (want != 0.0f);
        }
  bool extra = fgetc(f) != EOF;
  fclose(f);
  printf("mask: %lu of %lu differ, kept %.4f%s%s\n", bad, total, (double)kept / (double)total,
         badval ? ", python values other than 0 and the scale" : "", extra ? ", dump too long" : "");
  return bad || badval || extra ? 1 : 0;
}

static int cmd_dropfrac(int argc, char **argv) {
  if (argc != 5) return 2;
  i2i_ctx *ctx = ctx_cpu();
  i2i_model *m;
  if (i2i_model_load_file(ctx, argv[2], &m)) {
    printf("load: %s\n", i2i_ctx_errmsg(ctx));
    return 1;
  }
  int size = atoi(argv[3]);
  uint64_t seed = strtoull(argv[4], NULL, 10);
  int nn = i2i_model_node_count(m);
  int64_t(*shapes)[4] = calloc((size_t)nn, sizeof *shapes);
  if (i2i_model_shapes(ctx, m, 1, size, size, shapes)) {
    printf("shapes: %s\n", i2i_ctx_errmsg(ctx));
    return 1;
  }
  int ordinal = 0, rc = 0;
  for (int i = 0; i < nn; i++) {
    i2i_node_desc d;
    i2i_model_node(m, i, &d);
    if (strcmp(d.op_type, "Dropout")) continue;
    /* the Dropout's input has the shape of the node before it */
    int64_t c = shapes[i][1], h = shapes[i][2], w = shapes[i][3];
    unsigned long dropped = 0, total = 0;
    for (int64_t ch = 0; ch < c; ch++)
      for (int64_t y = 0; y < h; y++)
        for (int64_t x = 0; x < w; x++, total++)
          dropped += !dropout_keep(seed, (uint32_t)x, (uint32_t)y, (uint32_t)ch, 0, (uint32_t)ordinal, 0, 0x80000000u);
    double f = (double)dropped / (double)total;
    printf("dropout %d (%lldx%lldx%lld): dropped %.4f\n", ordinal, (long long)c, (long long)h, (long long)w, f);
    if (fabs(f - 0.5) > 0.02) rc = 1;
    ordinal++;
  }
  free(shapes);
  i2i_model_free(m);
  i2i_ctx_free(ctx);
  return ordinal ? rc : 1;
}

/* Runs IN with the memory budget `budget` (0: automatic); returns the output and the tiles. */
static float *run_budget(i2i_ctx *ctx, i2i_model *m, const i2i_npy_image *in, i2i_pix2pix_mode mode, uint64_t budget,
                         i2i_run_report *rep) {
  size_t n = (size_t)in->width * (size_t)in->height;
  float *x = malloc(n * 3 * sizeof(float)), *y = malloc(n * 3 * sizeof(float));
  for (size_t i = 0; i < n; i++)
    for (int c = 0; c < 3; c++) x[i * 3 + (size_t)c] = in->rgba[i * 4 + (size_t)c];
  i2i_run_params rp;
  i2i_run_default_params(&rp);
  rp.layout = I2I_PIXELS_RGB_SIGNED;
  rp.pix2pix_mode = mode;
  rp.seed = 5;
  i2i_ctx_set_memory_budget(ctx, budget);
  const float *ins[1] = {x};
  float *outs[1] = {y};
  i2i_status st = i2i_run(ctx, m, &rp, 1, in->width, in->height, ins, outs, rep);
  free(x);
  if (st) {
    printf("run: %s\n", i2i_ctx_errmsg(ctx));
    free(y);
    return NULL;
  }
  return y;
}

static int cmd_tiles(int argc, char **argv) {
  if (argc != 5) return 2;
  i2i_ctx *ctx = ctx_cpu();
  i2i_model *m;
  char err[512];
  i2i_npy_image in;
  if (i2i_model_load_file(ctx, argv[2], &m) || !i2i_npy_load(argv[3], &in, err, sizeof err)) {
    printf("load failed\n");
    return 1;
  }
  i2i_pix2pix_mode mode = !strcmp(argv[4], "faithful") ? I2I_PIX2PIX_FAITHFUL : I2I_PIX2PIX_DETERMINISTIC;
  i2i_run_report r1, r4, rn;
  float *whole = run_budget(ctx, m, &in, mode, (uint64_t)1 << 34, &r1);
  if (!whole) return 1;
  float *four = run_budget(ctx, m, &in, mode, r1.workspace_bytes / 4 + 64, &r4);
  float *many = run_budget(ctx, m, &in, mode, 1, &rn);
  if (!four || !many) return 1;
  size_t n = (size_t)in.width * (size_t)in.height * 3;
  double d4 = 0, dn = 0;
  for (size_t i = 0; i < n; i++) {
    double e4 = fabs((double)four[i] - whole[i]), en = fabs((double)many[i] - whole[i]);
    d4 = isnan(e4) || !isfinite(whole[i]) ? INFINITY : fmax(d4, e4); /* fmax ignores NaN */
    dn = isnan(en) || !isfinite(whole[i]) ? INFINITY : fmax(dn, en);
  }
  printf("tiles %d / %d / %d: max_abs %.3g / %.3g (workspace %.1f / %.1f / %.1f MiB, %d whole-image intermediates)\n",
         r1.tiles, r4.tiles, rn.tiles, d4, dn, r1.workspace_bytes / 1048576.0, r4.workspace_bytes / 1048576.0,
         rn.workspace_bytes / 1048576.0, r1.whole_intermediates);
  int ok = r1.tiles == 1 && r4.tiles >= 4 && r4.tiles <= 6 && rn.tiles > r4.tiles && d4 <= 1e-4 && dn <= 1e-4;
  free(whole);
  free(four);
  free(many);
  i2i_npy_free(&in);
  i2i_model_free(m);
  i2i_ctx_free(ctx);
  return ok ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc >= 2 && !strcmp(argv[1], "tiles")) return cmd_tiles(argc, argv);
  if (argc >= 2 && !strcmp(argv[1], "run")) return cmd_run(argc, argv);
  if (argc >= 2 && !strcmp(argv[1], "ops")) return cmd_ops(argc, argv);
  if (argc >= 2 && !strcmp(argv[1], "philox")) return cmd_philox(argc, argv);
  if (argc >= 2 && !strcmp(argv[1], "dropfrac")) return cmd_dropfrac(argc, argv);
  if (argc >= 2 && !strcmp(argv[1], "mask")) return cmd_mask(argc, argv);
  fprintf(stderr, "usage: golden run|ops|philox|dropfrac|tiles|mask ...\n");
  return 2;
}
