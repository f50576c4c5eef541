/* test_manifest.c: the built-in published-model manifest (weights/manifest, compiled into libi2i)
 * against ../shared/spec/mmagic.md sections 5 and 8, and the loader's refusals of a broken
 * $I2I_MANIFEST, through the public API only (i2i_manifest_count / _get / _find).
 *
 * The expected table below is written from the spec, not from weights/manifest: the sixteen
 * directions with their task names, menu labels, checkpoint files, sha256 prefixes, configs,
 * domains (generators are keyed by the domain they produce, 5.1), Pix2Pix source halves, colour
 * order (every published file is BGR, 5.2), provisional flags (the facades CycleGAN domains,
 * 5.1) and mmagic's FID / IS (8; none for the facades CycleGAN's mask output).
 * Usage: test_manifest WORK_DIR. Ends with "N passed, N failed".
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/check.h"
#include "i2i.h"

static const char *work_dir;

#define BASE_URL "https://download.openmmlab.com/mmediting/"

typedef struct {
  const char *task, *label;
  const char *dir;  /* "cyclegan" or "pix2pix": the URL's folder and the config's */
  const char *file; /* published file name (mmagic.md 8) */
  const char *sha;  /* its 8-hex-digit sha256 prefix */
  const char *config;
  const char *source, *target, *side;
  double fid, is; /* -1: none reported */
  bool provisional;
} want_dir;

#define CG_FAC "cyclegan_lsgan_resnet_in_1x1_80k_facades_20210902_165905-5e2c0876.pth"
#define CG_FAC0 "cyclegan_lsgan_id0_resnet_in_1x1_80k_facades_convert-bgr_20210902_164411-d8e72b45.pth"
#define CG_S2W "cyclegan_lsgan_resnet_in_1x1_246200_summer2winter_convert-bgr_20210902_165932-fcf08dc1.pth"
#define CG_S2W0 "cyclegan_lsgan_id0_resnet_in_1x1_246200_summer2winter_convert-bgr_20210902_165640-8b825581.pth"
#define CG_H2Z "cyclegan_lsgan_resnet_in_1x1_266800_horse2zebra_convert-bgr_20210902_170004-a32c733a.pth"
#define CG_H2Z0 "cyclegan_lsgan_id0_resnet_in_1x1_266800_horse2zebra_convert-bgr_20210902_165724-77c9c806.pth"
#define PP_FAC "pix2pix_vanilla_unet_bn_1x1_80k_facades_20210902_170442-c0958d50.pth"
#define PP_A2M "pix2pix_vanilla_unet_bn_a2b_1x1_219200_maps_convert-bgr_20210902_170729-59a31517.pth"
#define PP_M2A "pix2pix_vanilla_unet_bn_b2a_1x1_219200_maps_convert-bgr_20210902_170814-6d2eac4a.pth"
#define PP_E2S "pix2pix_vanilla_unet_bn_wo_jitter_flip_1x4_186840_edges2shoes_convert-bgr_20210902_170902-0c828552.pth"

#define CFG_FAC "configs/cyclegan/cyclegan_lsgan-resnet-in_1xb1-80kiters_facades.py"
#define CFG_FAC0 "configs/cyclegan/cyclegan_lsgan-id0-resnet-in_1xb1-80kiters_facades.py"
#define CFG_S2W "configs/cyclegan/cyclegan_lsgan-resnet-in_1xb1-250kiters_summer2winter.py"
#define CFG_S2W0 "configs/cyclegan/cyclegan_lsgan-id0-resnet-in_1xb1-250kiters_summer2winter.py"
#define CFG_H2Z "configs/cyclegan/cyclegan_lsgan-resnet-in_1xb1-270kiters_horse2zebra.py"
#define CFG_H2Z0 "configs/cyclegan/cyclegan_lsgan-id0-resnet-in_1xb1-270kiters_horse2zebra.py"

static const want_dir WANT[] = {
  {"winter2summer", "Winter to Summer", "cyclegan", CG_S2W, "fcf08dc1", CFG_S2W, "winter", "summer", "", 72.8025, 3.129, false},
  {"winter2summer-id0", "Winter to Summer (id0)", "cyclegan", CG_S2W0, "8b825581", CFG_S2W0, "winter", "summer", "", 73.5001, 3.107, false},
  {"summer2winter", "Summer to Winter", "cyclegan", CG_S2W, "fcf08dc1", CFG_S2W, "summer", "winter", "", 83.7177, 2.771, false},
  {"summer2winter-id0", "Summer to Winter (id0)", "cyclegan", CG_S2W0, "8b825581", CFG_S2W0, "summer", "winter", "", 83.1418, 2.720, false},
  {"horse2zebra", "Horse to Zebra", "cyclegan", CG_H2Z, "a32c733a", CFG_H2Z, "horse", "zebra", "", 64.5225, 1.418, false},
  {"horse2zebra-id0", "Horse to Zebra (id0)", "cyclegan", CG_H2Z0, "77c9c806", CFG_H2Z0, "horse", "zebra", "", 74.7770, 1.542, false},
  {"zebra2horse", "Zebra to Horse", "cyclegan", CG_H2Z, "a32c733a", CFG_H2Z, "zebra", "horse", "", 141.1517, 3.154, false},
  {"zebra2horse-id0", "Zebra to Horse (id0)", "cyclegan", CG_H2Z0, "77c9c806", CFG_H2Z0, "zebra", "horse", "", 134.3728, 3.091, false},
  /* facades CycleGAN: one score per model, for the default (photo) output; domains provisional */
  {"labels2facade-cyclegan", "Labels to Facade (CycleGAN)", "cyclegan", CG_FAC, "5e2c0876", CFG_FAC, "mask", "photo", "", 124.8033, 1.792, true},
  {"labels2facade-cyclegan-id0", "Labels to Facade (CycleGAN, id0)", "cyclegan", CG_FAC0, "d8e72b45", CFG_FAC0, "mask", "photo", "", 125.1694, 1.905, true},
  {"facade2labels-cyclegan", "Facade to Labels (CycleGAN)", "cyclegan", CG_FAC, "5e2c0876", CFG_FAC, "photo", "mask", "", -1, -1, true},
  {"facade2labels-cyclegan-id0", "Facade to Labels (CycleGAN, id0)", "cyclegan", CG_FAC0, "d8e72b45", CFG_FAC0, "photo", "mask", "", -1, -1, true},
  /* Pix2Pix: domain A is the left half of a paired image, B the right (5.1) */
  {"labels2facade", "Labels to Facade", "pix2pix", PP_FAC, "c0958d50", "configs/pix2pix/pix2pix_vanilla-unet-bn_1xb1-80kiters_facades.py",
   "mask", "photo", "right", 124.9773, 1.620, false},
  {"aerial2map", "Aerial to Map", "pix2pix", PP_A2M, "59a31517", "configs/pix2pix/pix2pix_vanilla-unet-bn_1xb1-220kiters_aerial2maps.py",
   "aerial", "map", "left", 122.5856, 3.137, false},
  {"map2aerial", "Map to Aerial", "pix2pix", PP_M2A, "6d2eac4a", "configs/pix2pix/pix2pix_vanilla-unet-bn_1xb1-220kiters_maps2aerial.py",
   "map", "aerial", "right", 88.4635, 3.310, false},
  {"edges2shoes", "Edges to Shoes", "pix2pix", PP_E2S, "0c828552",
   "configs/pix2pix/pix2pix_vanilla-unet-bn_wo-jitter-flip-1xb4-190kiters_edges2shoes.py", "edges", "photo", "left", 84.3750, 2.815, false},
};
#define N_WANT (sizeof WANT / sizeof WANT[0])

static i2i_ctx *new_ctx(void) {
  i2i_ctx_params p;
  i2i_ctx_default_params(&p);
  p.backend = I2I_BACKEND_CPU;
  i2i_ctx *ctx = NULL;
  if (i2i_ctx_create(&p, &ctx) != I2I_OK) return NULL;
  return ctx;
}

static bool same_score(double got, double want) {
  return want < 0 ? got < 0 : fabs(got - want) < 1e-9;
}

static bool is_hex8(const char *s) {
  if (strlen(s) != 8) return false;
  for (int i = 0; i < 8; i++)
    if (!strchr("0123456789abcdef", s[i])) return false;
  return true;
}

/* ---- the built-in manifest against the spec ----------------------------------------------- */

static void test_builtin_matches_spec(void) {
  unsetenv("I2I_MANIFEST");
  i2i_ctx *ctx = new_ctx();
  CHECK(ctx, "context");
  if (!ctx) return;
  size_t n = i2i_manifest_count(ctx);
  CHECK(n == N_WANT, "%zu directions, want %zu (%s)", n, N_WANT, i2i_ctx_errmsg(ctx));
  /* each direction of the manifest is one of the spec's, met once */
  int seen[N_WANT] = {0};
  for (size_t i = 0; i < n; i++) {
    const i2i_manifest_entry *e = i2i_manifest_get(ctx, i);
    CHECK(e, "entry %zu", i);
    if (!e) continue;
    size_t k = 0;
    while (k < N_WANT && strcmp(WANT[k].task, e->task)) k++;
    CHECK(k < N_WANT, "unexpected direction '%s'", e->task);
    if (k < N_WANT) seen[k]++;
    /* unique task names and labels */
    for (size_t j = 0; j < i; j++) {
      const i2i_manifest_entry *o = i2i_manifest_get(ctx, j);
      CHECK(strcmp(o->task, e->task), "task '%s' twice", e->task);
      CHECK(strcmp(o->label, e->label), "label '%s' twice ('%s', '%s')", e->label, o->task, e->task);
    }
  }
  CHECK(i2i_manifest_get(ctx, n) == NULL, "get past the end");
  for (size_t k = 0; k < N_WANT; k++) {
    const want_dir *w = &WANT[k];
    CHECK(seen[k] == 1, "'%s' listed %d times", w->task, seen[k]);
    const i2i_manifest_entry *e = i2i_manifest_find(ctx, w->task);
    CHECK(e, "find '%s'", w->task);
    if (!e) continue;
    CHECK(!strcmp(e->label, w->label), "%s: label '%s', want '%s'", w->task, e->label, w->label);
    CHECK(!strcmp(e->checkpoint, w->file), "%s: checkpoint '%s', want '%s'", w->task, e->checkpoint, w->file);
    char url[512];
    snprintf(url, sizeof url, BASE_URL "%s/refactor/%s", w->dir, w->file);
    CHECK(!strcmp(e->url, url), "%s: url '%s', want '%s'", w->task, e->url, url);
    CHECK(!strcmp(e->sha256_prefix, w->sha), "%s: sha256 '%s', want '%s'", w->task, e->sha256_prefix, w->sha);
    CHECK(is_hex8(e->sha256_prefix), "%s: sha256 '%s' is not 8 lower-case hex digits", w->task, e->sha256_prefix);
    /* the prefix is the one in the file name: ...-<sha>.pth */
    size_t fl = strlen(e->checkpoint);
    CHECK(fl > 13 && !strncmp(e->checkpoint + fl - 13, "-", 1) && !strncmp(e->checkpoint + fl - 12, e->sha256_prefix, 8) &&
            !strcmp(e->checkpoint + fl - 4, ".pth"),
          "%s: sha256 '%s' is not the file name's ('%s')", w->task, e->sha256_prefix, e->checkpoint);
    CHECK(!strcmp(e->config, w->config), "%s: config '%s', want '%s'", w->task, e->config, w->config);
    const char *family = !strcmp(w->dir, "cyclegan") ? "resnet" : "unet";
    CHECK(!strcmp(e->family, family), "%s: family '%s', want '%s'", w->task, e->family, family);
    CHECK(!strcmp(e->channel_order, "bgr"), "%s: colour order '%s', want bgr (mmagic.md 5.2)", w->task, e->channel_order);
    CHECK(!strcmp(e->source_domain, w->source) && !strcmp(e->target_domain, w->target), "%s: domains %s -> %s, want %s -> %s",
          w->task, e->source_domain, e->target_domain, w->source, w->target);
    char key[128];
    snprintf(key, sizeof key, "generators.%s", w->target);
    CHECK(!strcmp(e->generator_key, key), "%s: generator key '%s', want '%s'", w->task, e->generator_key, key);
    snprintf(key, sizeof key, "discriminators.%s", w->target);
    CHECK(!strcmp(e->discriminator_key, key), "%s: discriminator key '%s', want '%s'", w->task, e->discriminator_key, key);
    CHECK(!strcmp(e->source_side, w->side), "%s: source side '%s', want '%s'", w->task, e->source_side, w->side);
    CHECK(same_score(e->fid, w->fid), "%s: fid %.4f, want %.4f", w->task, e->fid, w->fid);
    CHECK(same_score(e->is, w->is), "%s: is %.4f, want %.4f", w->task, e->is, w->is);
    CHECK(!!e->provisional == w->provisional, "%s: provisional %d, want %d", w->task, e->provisional, w->provisional);
    size_t tl = strlen(w->task);
    bool id0 = tl > 4 && !strcmp(w->task + tl - 4, "-id0");
    CHECK(e->variant == (id0 ? 1 : 0), "%s: variant %d", w->task, e->variant);
    CHECK(!strncmp(e->base_task, w->task, id0 ? tl - 4 : tl) && strlen(e->base_task) == (id0 ? tl - 4 : tl),
          "%s: base task '%s'", w->task, e->base_task);
  }
  /* ten published files, six CycleGAN and four Pix2Pix (mmagic.md 8) */
  const char *files[N_WANT];
  size_t nf = 0, ncg = 0;
  for (size_t i = 0; i < n; i++) {
    const i2i_manifest_entry *e = i2i_manifest_get(ctx, i);
    size_t j = 0;
    while (j < nf && strcmp(files[j], e->checkpoint)) j++;
    if (j == nf) {
      files[nf++] = e->checkpoint;
      ncg += !strcmp(e->family, "resnet");
    }
  }
  CHECK(nf == 10 && ncg == 6, "%zu checkpoints (%zu CycleGAN), want 10 (6)", nf, ncg);
  CHECK(i2i_manifest_find(ctx, "winter2summer.onnx") == NULL && i2i_manifest_find(ctx, "") == NULL, "find of a non-task");
  i2i_ctx_free(ctx);
}

/* ---- $I2I_MANIFEST: a replacement, and broken ones refused with a message ------------------ */

static const char *GOOD =
  "[checkpoint ck]\n"
  "file=x_20210902_165932-fcf08dc1.pth\n"
  "url=https://example.invalid/x_20210902_165932-fcf08dc1.pth\n"
  "sha256=@SHA@\n"
  "family=resnet\n"
  "channel_order=bgr\n"
  "\n"
  "[direction a2b]\n"
  "checkpoint=ck\n"
  "label=A to B\n"
  "source=a\n"
  "target=b\n"
  "fid=@FID@\n"
  "is=1.5\n"
  "\n"
  "[direction b2a]\n"
  "checkpoint=ck\n"
  "label=@LABEL@\n"
  "source=b\n"
  "target=a\n";

/* Writes GOOD with @SHA@, @FID@ and @LABEL@ replaced to WORK_DIR/name; returns the path. */
static const char *write_manifest(const char *name, const char *sha, const char *fid, const char *label) {
  static char path[1024];
  snprintf(path, sizeof path, "%s/%s", work_dir, name);
  FILE *fp = fopen(path, "w");
  if (!fp) return NULL;
  for (const char *p = GOOD; *p;) {
    if (!strncmp(p, "@SHA@", 5)) fputs(sha, fp), p += 5;
    else if (!strncmp(p, "@FID@", 5)) fputs(fid, fp), p += 5;
    else if (!strncmp(p, "@LABEL@", 7)) fputs(label, fp), p += 7;
    else fputc(*p++, fp);
  }
  fclose(fp);
  return path;
}

/* Loads the manifest at `path` through $I2I_MANIFEST in a fresh context; returns the count and
 * copies the context's message into msg. */
static size_t load_env(const char *path, char *msg, size_t len) {
  setenv("I2I_MANIFEST", path, 1);
  i2i_ctx *ctx = new_ctx();
  size_t n = ctx ? i2i_manifest_count(ctx) : 0;
  snprintf(msg, len, "%s", ctx ? i2i_ctx_errmsg(ctx) : "(no context)");
  if (ctx && !n) {
    CHECK(i2i_manifest_get(ctx, 0) == NULL && i2i_manifest_find(ctx, "a2b") == NULL, "%s: entries after a failure", path);
  }
  i2i_ctx_free(ctx);
  unsetenv("I2I_MANIFEST");
  return n;
}

static void test_override_replaces(void) {
  const char *p = write_manifest("good.manifest", "fcf08dc1", "12.5", "B to A");
  CHECK(p, "write");
  if (!p) return;
  setenv("I2I_MANIFEST", p, 1);
  i2i_ctx *ctx = new_ctx();
  CHECK(ctx && i2i_manifest_count(ctx) == 2, "count %zu (%s)", ctx ? i2i_manifest_count(ctx) : 0,
        ctx ? i2i_ctx_errmsg(ctx) : "");
  const i2i_manifest_entry *e = ctx ? i2i_manifest_find(ctx, "a2b") : NULL;
  CHECK(e && !strcmp(e->sha256_prefix, "fcf08dc1") && same_score(e->fid, 12.5) && same_score(e->is, 1.5) &&
          !strcmp(e->generator_key, "generators.b") && !e->provisional && !strcmp(e->source_side, ""),
        "a2b fields");
  e = ctx ? i2i_manifest_find(ctx, "b2a") : NULL;
  CHECK(e && e->fid < 0 && e->is < 0, "b2a: no scores");
  CHECK(ctx && !i2i_manifest_find(ctx, "winter2summer"), "the built-in manifest is replaced, not merged");
  i2i_ctx_free(ctx);
  unsetenv("I2I_MANIFEST");
  char msg[1024];
  /* upper-case hex is still hex: fetch compares case-insensitively */
  p = write_manifest("upper.manifest", "FCF08DC1", "1", "B to A");
  CHECK(load_env(p, msg, sizeof msg) == 2, "upper-case sha256 prefix accepted: %s", msg);
}

static void test_bad_sha256(void) {
  static const char *bad[] = {"fcf08dc", "fcf08dc1a", "fcf08dcg", "", "fcf0 8dc", "-cf08dc1", "fcf08dc1fcf08dc1"};
  char msg[1024];
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    const char *p = write_manifest("badsha.manifest", bad[i], "1", "B to A");
    size_t n = load_env(p, msg, sizeof msg);
    CHECK(n == 0, "sha256 '%s' accepted (%zu directions)", bad[i], n);
    CHECK(strstr(msg, "sha256") && strstr(msg, "8 hex digits") && strstr(msg, "[checkpoint ck]") && strstr(msg, p) &&
            strstr(msg, "I2I_MANIFEST"),
          "sha256 '%s': message '%s' names neither the file, the checkpoint nor the problem", bad[i], msg);
  }
}

static void test_other_breakage(void) {
  char msg[1024];
  const char *p = write_manifest("badfid.manifest", "fcf08dc1", "7O.1", "B to A");
  CHECK(load_env(p, msg, sizeof msg) == 0 && strstr(msg, "'a2b'") && strstr(msg, "fid"), "fid=7O.1: '%s'", msg);
  p = write_manifest("negfid.manifest", "fcf08dc1", "-3", "B to A");
  CHECK(load_env(p, msg, sizeof msg) == 0 && strstr(msg, "fid"), "fid=-3: '%s'", msg);
  p = write_manifest("duplabel.manifest", "fcf08dc1", "1", "A to B");
  CHECK(load_env(p, msg, sizeof msg) == 0 && strstr(msg, "label"), "a repeated label: '%s'", msg);
  char path[1024];
  snprintf(path, sizeof path, "%s/missing.manifest", work_dir);
  remove(path);
  CHECK(load_env(path, msg, sizeof msg) == 0 && strstr(msg, path) && strstr(msg, "I2I_MANIFEST"), "missing file: '%s'", msg);
  snprintf(path, sizeof path, "%s/nodir.manifest", work_dir);
  FILE *fp = fopen(path, "w");
  if (fp) {
    fputs("# only a comment\n[checkpoint ck]\nfile=x.pth\n", fp);
    fclose(fp);
  }
  CHECK(load_env(path, msg, sizeof msg) == 0 && strstr(msg, "no [direction"), "no directions: '%s'", msg);
  snprintf(path, sizeof path, "%s/garbage.manifest", work_dir);
  fp = fopen(path, "w");
  if (fp) {
    fputs("this is not a key file\n\x01\x02\n", fp);
    fclose(fp);
  }
  CHECK(load_env(path, msg, sizeof msg) == 0 && strstr(msg, path), "not a key file: '%s'", msg);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: test_manifest WORK_DIR\n");
    return 2;
  }
  work_dir = argv[1];
  mkdir(work_dir, 0777);
  RUN(test_builtin_matches_spec);
  RUN(test_override_replaces);
  RUN(test_bad_sha256);
  RUN(test_other_breakage);
  return check_summary();
}
