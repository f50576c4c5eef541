/* cmd_finetune.c: `i2i finetune`: continue training a model on the user's own pictures.
 *
 * Loads the networks (a published .pth converted on the fly, or our ONNX files with their
 * <task>.D.onnx), the data (CycleGAN: two folders of unpaired images; Pix2Pix: a folder of
 * side-by-side pairs or two folders of matching names), reporting and skipping bad images, then
 * runs the engine's trainer with progress, sample images, an atomic state file and resume, and
 * writes the fine-tuned generators as ONNX into the model folder. The training itself (steps,
 * augmentation, state format) is the engine's; this file is data handling and the command line.
 */
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "convert.h"
#include "imageio.h"

#define MIN_SIDE 32

typedef struct {
  char *path;
  uint8_t *rgb;   /* load x load x 3 */
} image;

typedef struct {
  GArray *a, *b;  /* image; paired data: a[i] and b[i] belong together */
  int load;
  bool paired;
} dataset;

/* The supported images of a folder, sorted by name; NULL when it cannot be read. Other files
 * (a .gif, a sidecar), subfolders and broken links are counted into *skipped and named in
 * one line, so a picture in a format i2i does not read is not dropped unseen. */
static GPtrArray *list_images(const char *dir, int *skipped) {
  return cli_list_folder("finetune", dir, i2i_img_path_is_supported, "PNG, JPEG, TIFF and WebP pictures", skipped);
}

/* Box-averages src (w x h RGBA) by integer factors so each side stays >= target, then resizes
 * bicubically to load x load and stores 8-bit RGB (mmagic resizes 8-bit images). */
static uint8_t *to_load_size(i2i_ctx *ctx, const float *src, int w, int h, int load, char *err, size_t errlen) {
  int fx = w / load > 1 ? w / load : 1, fy = h / load > 1 ? h / load : 1;
  int sw = w / fx, sh = h / fy;
  float *small = g_try_malloc(sizeof(float) * 4 * (size_t)sw * (size_t)sh);
  float *big = g_try_malloc(sizeof(float) * 4 * (size_t)load * (size_t)load);
  uint8_t *out = g_try_malloc((size_t)load * (size_t)load * 3);
  if (!small || !big || !out) {
    g_free(small);
    g_free(big);
    g_free(out);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  for (int y = 0; y < sh; y++)
    for (int x = 0; x < sw; x++)
      for (int c = 0; c < 4; c++) {
        double s = 0;
        for (int j = 0; j < fy; j++)
          for (int i = 0; i < fx; i++) s += src[(((size_t)y * fy + (size_t)j) * (size_t)w + (size_t)x * fx + (size_t)i) * 4 + (size_t)c];
        small[((size_t)y * (size_t)sw + (size_t)x) * 4 + (size_t)c] = (float)(s / (fx * fy));
      }
  (void)ctx;
  i2i_train_resize(small, sw, sh, 4, big, load, load);
  for (size_t i = 0; i < (size_t)load * (size_t)load; i++)
    for (int c = 0; c < 3; c++) {
      float v = big[i * 4 + (size_t)c] * 255.0f + 0.5f;
      out[i * 3 + (size_t)c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
  g_free(small);
  g_free(big);
  return out;
}

/* Loads one image, or a half of it (side: 0 whole, 1 left, 2 right). Reports why it is unusable. */
static uint8_t *load_one(i2i_ctx *ctx, const char *path, int side, int load, char *err, size_t errlen) {
  i2i_img img;
  if (!i2i_img_load(path, &img, err, errlen)) return NULL;
  int w = img.info.width, h = img.info.height, x0 = 0;
  uint8_t *out = NULL;
  if (img.info.is_gray) {
    snprintf(err, errlen, "a grayscale image (the models work on colour pictures)");
  } else if (side && w < h * 3 / 2) {
    snprintf(err, errlen, "%dx%d is not a side-by-side pair (twice as wide as high)", w, h);
  } else {
    if (side) {
      w /= 2;
      x0 = side == 2 ? img.info.width - w : 0;
    }
    if (w < MIN_SIDE || h < MIN_SIDE) {
      snprintf(err, errlen, "too small (%dx%d%s; at least %dx%d)", w, h, side ? " per half" : "", MIN_SIDE, MIN_SIDE);
    } else {
      float *crop = img.pixels;
      if (side) {
        crop = g_try_malloc(sizeof(float) * 4 * (size_t)w * (size_t)h);
        if (crop)
          for (int y = 0; y < h; y++)
            memcpy(crop + (size_t)y * (size_t)w * 4, img.pixels + ((size_t)y * (size_t)img.info.width + (size_t)x0) * 4,
                   sizeof(float) * 4 * (size_t)w);
      }
      if (!crop) snprintf(err, errlen, "out of memory");
      else out = to_load_size(ctx, crop, w, h, load, err, errlen);
      if (crop != img.pixels) g_free(crop);
    }
  }
  i2i_img_free(&img);
  return out;
}

static void add_image(GArray *arr, const char *path, uint8_t *rgb) {
  image im = {g_strdup(path), rgb};
  g_array_append_val(arr, im);
}

static void free_images(GArray *arr) {
  if (!arr) return;
  for (guint i = 0; i < arr->len; i++) {
    g_free(g_array_index(arr, image, i).path);
    g_free(g_array_index(arr, image, i).rgb);
  }
  g_array_free(arr, TRUE);
}

/* Loads a folder of single images; returns how many were skipped. */
static int load_folder(i2i_ctx *ctx, const char *dir, int load, GArray *out, const char *what) {
  int skipped = 0;
  GPtrArray *files = list_images(dir, &skipped);
  if (!files) {
    cli_error("finetune", "cannot read the folder '%s'", dir);
    return -1;
  }
  for (guint i = 0; i < files->len; i++) {
    char err[512] = "";
    uint8_t *rgb = load_one(ctx, files->pdata[i], 0, load, err, sizeof err);
    if (!rgb) {
      cli_error("finetune", "skipping %s (%s image): %s", (char *)files->pdata[i], what, err);
      skipped++;
      continue;
    }
    add_image(out, files->pdata[i], rgb);
  }
  g_ptr_array_free(files, TRUE);
  return skipped;
}

static char *stem_of(const char *path) {
  gchar *b = g_path_get_basename(path);
  char *dot = strrchr(b, '.');
  if (dot && dot != b) *dot = 0;
  return b;
}

/* Two folders of matching file names (any extension): pairs by name. */
static int load_pair_folders(i2i_ctx *ctx, const char *src, const char *dst, int load, dataset *ds) {
  int skipped = 0;
  GPtrArray *fa = list_images(src, &skipped), *fb = fa ? list_images(dst, &skipped) : NULL;
  if (!fa || !fb) {
    cli_error("finetune", "cannot read the folder '%s'", !fa ? src : dst);
    if (fa) g_ptr_array_free(fa, TRUE);
    return -1;
  }
  for (guint i = 0; i < fa->len; i++) {
    char *sa = stem_of(fa->pdata[i]);
    const char *match = NULL;
    for (guint j = 0; j < fb->len && !match; j++) {
      char *sb = stem_of(fb->pdata[j]);
      if (!strcmp(sa, sb)) match = fb->pdata[j];
      g_free(sb);
    }
    g_free(sa);
    if (!match) {
      cli_error("finetune", "skipping %s: no image of the same name in %s", (char *)fa->pdata[i], dst);
      skipped++;
      continue;
    }
    char err[512] = "";
    uint8_t *a = load_one(ctx, fa->pdata[i], 0, load, err, sizeof err);
    uint8_t *b = a ? load_one(ctx, match, 0, load, err, sizeof err) : NULL;
    if (!a || !b) {
      cli_error("finetune", "skipping the pair %s / %s: %s", (char *)fa->pdata[i], match, err);
      g_free(a);
      skipped++;
      continue;
    }
    add_image(ds->a, fa->pdata[i], a);
    add_image(ds->b, match, b);
  }
  for (guint j = 0; j < fb->len; j++) {
    char *sb = stem_of(fb->pdata[j]);
    bool found = false;
    for (guint i = 0; i < fa->len && !found; i++) {
      char *sa = stem_of(fa->pdata[i]);
      found = !strcmp(sa, sb);
      g_free(sa);
    }
    if (!found) {
      cli_error("finetune", "skipping %s: no image of the same name in %s", (char *)fb->pdata[j], src);
      skipped++;
    }
    g_free(sb);
  }
  g_ptr_array_free(fa, TRUE);
  g_ptr_array_free(fb, TRUE);
  return skipped;
}

/* A folder of side-by-side pairs; `src_right`: the source is the right half. */
static int load_side_by_side(i2i_ctx *ctx, const char *dir, bool src_right, int load, dataset *ds) {
  int skipped = 0;
  GPtrArray *files = list_images(dir, &skipped);
  if (!files) {
    cli_error("finetune", "cannot read the folder '%s'", dir);
    return -1;
  }
  for (guint i = 0; i < files->len; i++) {
    char err[512] = "";
    uint8_t *s = load_one(ctx, files->pdata[i], src_right ? 2 : 1, load, err, sizeof err);
    uint8_t *t = s ? load_one(ctx, files->pdata[i], src_right ? 1 : 2, load, err, sizeof err) : NULL;
    if (!s || !t) {
      cli_error("finetune", "skipping %s: %s", (char *)files->pdata[i], err);
      g_free(s);
      skipped++;
      continue;
    }
    add_image(ds->a, files->pdata[i], s);
    add_image(ds->b, files->pdata[i], t);
  }
  g_ptr_array_free(files, TRUE);
  return skipped;
}

/* ---- sampling ------------------------------------------------------------------------------ */

static uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* The epoch's order of n items: a Fisher-Yates shuffle drawn from (seed, epoch). */
static void epoch_order(guint *perm, guint n, uint64_t seed, uint64_t epoch) {
  for (guint i = 0; i < n; i++) perm[i] = i;
  uint64_t s = mix64(seed ^ mix64(epoch + 0x5151));
  for (guint i = n; i > 1; i--) {
    s = mix64(s);
    guint j = (guint)((s >> 11) % i);
    guint t = perm[i - 1];
    perm[i - 1] = perm[j];
    perm[j] = t;
  }
}

static void expand(const uint8_t *rgb, float *rgba, size_t n) {
  for (size_t i = 0; i < n; i++) {
    for (int c = 0; c < 3; c++) rgba[i * 4 + (size_t)c] = rgb[i * 3 + (size_t)c] / 255.0f;
    rgba[i * 4 + 3] = 1.0f;
  }
}

/* ---- models ---------------------------------------------------------------------------------- */

static bool ends_with(const char *s, const char *t) {
  size_t a = strlen(s), b = strlen(t);
  return a >= b && !strcmp(s + a - b, t);
}

/* The manifest direction opposite to `task` (same checkpoint, swapped domains), or NULL. */
static const char *manifest_reverse(i2i_ctx *ctx, const char *task) {
  const i2i_manifest_entry *e = task ? i2i_manifest_find(ctx, task) : NULL;
  if (!e) return NULL;
  for (size_t i = 0; i < i2i_manifest_count(ctx); i++) {
    const i2i_manifest_entry *r = i2i_manifest_get(ctx, i);
    if (!strcmp(r->checkpoint, e->checkpoint) && !strcmp(r->source_domain, e->target_domain) &&
        !strcmp(r->target_domain, e->source_domain))
      return r->task;
  }
  return NULL;
}

static i2i_model *load_model(i2i_ctx *ctx, const char *name, char **path_out) {
  char *path = NULL;
  i2i_model *m = NULL;
  if (i2i_model_find(ctx, name, &path) || i2i_model_load_file(ctx, path, &m)) {
    cli_error("finetune", "%s", i2i_ctx_errmsg(ctx));
    i2i_free(ctx, path);
    return NULL;
  }
  if (path_out) *path_out = g_strdup(path);
  i2i_free(ctx, path);
  return m;
}

/* <dir of path>/<task>.D.onnx when it exists. */
static i2i_model *load_disc_beside(i2i_ctx *ctx, const char *gpath, const char *task) {
  if (!gpath || !task) return NULL;
  gchar *dir = g_path_get_dirname(gpath);
  gchar *file = g_strdup_printf("%s.D.onnx", task);
  gchar *p = g_build_filename(dir, file, NULL);
  i2i_model *m = NULL;
  if (g_file_test(p, G_FILE_TEST_IS_REGULAR)) {
    if (i2i_model_load_file(ctx, p, &m)) {
      fprintf(stderr, "i2i finetune: ignoring the discriminator %s: %s\n", p, i2i_ctx_errmsg(ctx));
      m = NULL;
    } else {
      fprintf(stderr, "i2i finetune: discriminator %s\n", p);
    }
  }
  g_free(dir);
  g_free(file);
  g_free(p);
  return m;
}

static bool file_safe(const char *s) {
  if (!s || !*s || s[0] == '.' || strlen(s) > 200) return false;
  for (const char *p = s; *p; p++)
    if (!g_ascii_isalnum(*p) && *p != '-' && *p != '_' && *p != '.') return false;
  return !ends_with(s, ".D") && !ends_with(s, ".onnx");
}

/* True when folder `dir` can be written, or made where its nearest existing parent can be; else
 * false with the reason in why. Checked before training, so a run does not end in a folder it
 * cannot write. */
static bool dir_writable(const char *dir, char *why, size_t whylen) {
  gchar *p = g_strdup(dir);
  while (!g_file_test(p, G_FILE_TEST_EXISTS)) {
    gchar *up = g_path_get_dirname(p);
    bool top = !strcmp(up, p);
    g_free(p);
    p = up;
    if (top) break;
  }
  bool ok = true;
  if (!g_file_test(p, G_FILE_TEST_IS_DIR)) {
    snprintf(why, whylen, "'%s' is not a folder", p);
    ok = false;
  } else if (access(p, W_OK | X_OK)) {
    snprintf(why, whylen, "'%s': %s", p, g_strerror(errno));
    ok = false;
  }
  g_free(p);
  return ok;
}

/* ---- the command ----------------------------------------------------------------------------- */

typedef struct {
  gchar *reverse, *direction, *source_side, *backend, *resume, *out_name, *out_dir, *work_dir, *log, *channel_order;
  int iters, batch, size, threads, sample_every, save_every, stop_at;
  double lr, identity;
  gint64 seed;
  gboolean no_flip, overwrite;
} opts;

static const char *meta_or(const i2i_model *m, const char *key, const char *def) {
  const char *v = m ? i2i_model_meta(m, key) : NULL;
  return v && *v ? v : def;
}

static void print_report(const i2i_train_report *r, bool cyc, int64_t iters, double rate, double left) {
  char tl[64];
  if (left >= 3600) snprintf(tl, sizeof tl, "%dh%02dm", (int)(left / 3600), (int)fmod(left / 60, 60));
  else snprintf(tl, sizeof tl, "%dm%02ds", (int)(left / 60), (int)fmod(left, 60));
  if (cyc)
    fprintf(stderr,
            "iter %lld/%lld  lr %.2e  D %.4f  G %.4f (gan %.3f/%.3f cycle %.3f/%.3f id %.3f/%.3f)  %.3f it/s  %s left\n",
            (long long)r->iteration + 1, (long long)iters, r->lr, r->loss_d, r->loss_g, r->loss_gan_a, r->loss_gan_b,
            r->loss_cycle_a, r->loss_cycle_b, r->loss_id_a, r->loss_id_b, rate, tl);
  else
    fprintf(stderr, "iter %lld/%lld  lr %.2e  D %.4f (fake %.3f real %.3f)  G %.4f (gan %.3f L1 %.4f)  %.3f it/s  %s left\n",
            (long long)r->iteration + 1, (long long)iters, r->lr, r->loss_d, r->loss_d_fake, r->loss_d_real, r->loss_g,
            r->loss_gan, r->loss_l1, rate, tl);
}

/* A sample: [input | output] of the generator on the first source image, at the training size. */
static void write_sample(i2i_ctx *ctx, i2i_trainer *tr, const dataset *ds, int size, const char *dir, int64_t it) {
  const i2i_model *g = i2i_trainer_model(tr, I2I_NET_G);
  image *im = &g_array_index(ds->a, image, 0);
  size_t n = (size_t)size * (size_t)size, L = (size_t)ds->load;
  float *full = g_try_malloc(sizeof(float) * 4 * L * L), *in = g_try_malloc(sizeof(float) * 4 * n);
  float *out = g_try_malloc(sizeof(float) * 4 * n), *both = g_try_malloc(sizeof(float) * 8 * n);
  if (!full || !in || !out || !both || !g) goto done;
  expand(im->rgb, full, L * L);
  i2i_train_resize(full, (int)L, (int)L, 4, in, size, size);
  i2i_run_params rp;
  i2i_run_default_params(&rp);
  rp.pix2pix_mode = I2I_PIX2PIX_DETERMINISTIC;
  const float *ins[1] = {in};
  float *outs[1] = {out};
  if (i2i_run(ctx, g, &rp, 1, size, size, ins, outs, NULL)) {
    fprintf(stderr, "i2i finetune: no sample at iteration %lld: %s\n", (long long)it, i2i_ctx_errmsg(ctx));
    goto done;
  }
  for (int y = 0; y < size; y++) {
    memcpy(both + (size_t)y * 2 * (size_t)size * 4, in + (size_t)y * (size_t)size * 4, sizeof(float) * 4 * (size_t)size);
    memcpy(both + ((size_t)y * 2 + 1) * (size_t)size * 4, out + (size_t)y * (size_t)size * 4, sizeof(float) * 4 * (size_t)size);
  }
  for (size_t i = 0; i < 2 * n; i++) both[i * 4 + 3] = 1.0f;
  gchar *name = g_strdup_printf("iter_%07lld.png", (long long)it);
  gchar *p = g_build_filename(dir, name, NULL);
  char err[512];
  if (!i2i_img_save(p, both, 2 * size, size, NULL, err, sizeof err)) fprintf(stderr, "i2i finetune: %s\n", err);
  g_free(name);
  g_free(p);
done:
  g_free(full);
  g_free(in);
  g_free(out);
  g_free(both);
}

/* Ctrl-C (SIGINT) or SIGTERM during training. The first: the step in progress finishes, the state is
 * written and the run stops with a resume hint (said at once, as a step can take seconds). The
 * second: a reminder. The third quits at once, losing the iterations since the last saved state;
 * while a file is being written (state, sample, result) it waits for the write to complete, so no
 * temporary or half-written file is ever left. */
static volatile sig_atomic_t interrupted, n_signals, writing;
static char quit_msg[4200];

static void say(const char *m) { (void)!write(STDERR_FILENO, m, strlen(m)); }

static void on_interrupt(int sig) {
  int n = ++n_signals;
  if (n == 1) {
    interrupted = sig;
    say("\ni2i finetune: stopping after the step in progress; the state will be saved "
        "(press Ctrl-C twice more to quit at once without saving)\n");
  } else if (n == 2) {
    say("i2i finetune: still finishing the step; Ctrl-C once more quits at once, losing the iterations "
        "since the last saved state\n");
  } else if (writing) {
    say("i2i finetune: a file is being written; stopping as soon as it is complete\n");
  } else {
    say(quit_msg);
    _exit(128 + interrupted);
  }
}

/* What the third Ctrl-C says: where the last saved state is, or that there is none. */
static void set_quit_msg(const char *state_path, bool saved) {
  if (saved)
    snprintf(quit_msg, sizeof quit_msg, "i2i finetune: quit without saving; continue from the last saved state "
             "with: i2i finetune --resume %s\n", state_path);
  else
    snprintf(quit_msg, sizeof quit_msg, "i2i finetune: quit without saving; no state had been saved yet\n");
}

/* A numeric option the user did not give keeps this value (it cannot be typed as a real one). */
#define UNSET_INT INT_MIN
#define UNSET_DBL (-DBL_MAX)

/* Refuses a given numeric option below its least value, naming it; true when acceptable. */
static bool at_least(const char *name, double v, bool given, double least) {
  if (!given || (v >= least && isfinite(v))) return true;
  cli_error("finetune", "--%s must be at least %g", name, least);
  return false;
}

int cmd_finetune(int argc, char **argv) {
  opts o = {0};
  o.iters = o.batch = o.size = o.sample_every = o.save_every = o.stop_at = UNSET_INT;
  o.lr = o.identity = UNSET_DBL;
  o.seed = G_MININT64;
  GOptionEntry entries[] = {
    {"iters", 'n', 0, G_OPTION_ARG_INT, &o.iters, "Total iterations (default 1000; the learning-rate schedule follows)", "N"},
    {"lr", 0, 0, G_OPTION_ARG_DOUBLE, &o.lr, "Adam learning rate (default 0.0002)", "LR"},
    {"batch", 0, 0, G_OPTION_ARG_INT, &o.batch, "Images per iteration (default 1)", "N"},
    {"size", 0, 0, G_OPTION_ARG_INT, &o.size, "Training crop in pixels (default 256; images are resized to size*286/256 first)", "PX"},
    {"identity", 0, 0, G_OPTION_ARG_DOUBLE, &o.identity, "CycleGAN identity loss weight (default 0.5, or 0 for an id0 model)", "W"},
    {"reverse", 0, 0, G_OPTION_ARG_STRING, &o.reverse, "CycleGAN: the B -> A generator (default: from the manifest or the model's metadata)", "MODEL"},
    {"direction", 0, 0, G_OPTION_ARG_STRING, &o.direction, "A .pth with two directions: the task to fine-tune (A -> B)", "TASK"},
    {"channel-order", 0, 0, G_OPTION_ARG_STRING, &o.channel_order, "A .pth whose colour order is unknown: rgb or bgr", "ORDER"},
    {"source-side", 0, 0, G_OPTION_ARG_STRING, &o.source_side, "Pix2Pix side-by-side pairs: the source is the left or right half (default: the model's)", "SIDE"},
    {"backend", 'b', 0, G_OPTION_ARG_STRING, &o.backend, "auto (default), cpu or cuda", "NAME"},
    {"device", 0, 0, G_OPTION_ARG_STRING, &o.backend, "Same as --backend", "NAME"},
    {"threads", 't', 0, G_OPTION_ARG_INT, &o.threads, "CPU threads (default 0: all cores; a resumed run repeats exactly with the same count)", "N"},
    {"seed", 0, 0, G_OPTION_ARG_INT64, &o.seed, "Random seed of data order, augmentation, dropout, pool and new discriminators (default 0)", "N"},
    {"resume", 0, 0, G_OPTION_ARG_FILENAME, &o.resume, "Continue from a training-state file", "STATE"},
    {"sample-every", 0, 0, G_OPTION_ARG_INT, &o.sample_every, "Write a sample image every N iterations (default 100; 0: never)", "N"},
    {"save-every", 0, 0, G_OPTION_ARG_INT, &o.save_every, "Write the training state every N iterations (default 500; 0: only at the end or a stop)", "N"},
    {"stop-at", 0, 0, G_OPTION_ARG_INT, &o.stop_at, "Stop after iteration N, writing the state (resume later)", "N"},
    {"output", 'o', 0, G_OPTION_ARG_STRING, &o.out_name, "Task name of the result (default <task>-finetuned-YYYYMMDD-HHMMSS)", "NAME"},
    {"output-dir", 0, 0, G_OPTION_ARG_FILENAME, &o.out_dir, "Where the result goes (default: the user model folder)", "DIR"},
    {"work-dir", 0, 0, G_OPTION_ARG_FILENAME, &o.work_dir, "State, samples and the loss log (default ~/.local/share/i2i/finetune/NAME)", "DIR"},
    {"log", 0, 0, G_OPTION_ARG_FILENAME, &o.log, "Loss log, CSV (default WORK_DIR/losses.csv)", "FILE"},
    {"no-flip", 0, 0, G_OPTION_ARG_NONE, &o.no_flip, "No random horizontal flips", NULL},
    {"overwrite", 0, 0, G_OPTION_ARG_NONE, &o.overwrite, "Start afresh over an earlier run of the same name: its state and models are replaced", NULL},
    {NULL, 0, 0, 0, NULL, NULL, NULL}};
  GOptionContext *oc = g_option_context_new("MODEL DATA... - continue training a model on your own pictures");
  g_option_context_add_main_entries(oc, entries, NULL);
  g_option_context_set_description(oc,
    "MODEL: a task name or .onnx generator (its <task>.D.onnx is used when present), or a published\n"
    ".pth checkpoint (converted on the fly; missing discriminators start from N(0, 0.02)).\n"
    "CycleGAN: DATA is two folders of unpaired images, A (the model's source domain) then B.\n"
    "Pix2Pix: DATA is a folder of side-by-side pairs, or two folders of matching names (source, target).\n"
    "`i2i finetune --resume STATE` continues a run; the models and folders come from the state.\n"
    "Training follows mmagic (LSGAN, cycle 10, identity, pool of 50, Adam 2e-4; Pix2Pix GAN + 100 L1).\n"
    "The result is written as NAME.onnx (and, for CycleGAN, NAME's reverse) into the model folder.");
  GError *gerr = NULL;
  int rc = 2;
  i2i_ctx *ctx = NULL;
  i2i_trainer *tr = NULL;
  i2i_model *models[4] = {NULL, NULL, NULL, NULL};
  bool owned[4] = {false, false, false, false};   /* loaded here, not part of the converted set */
  convert_set cset;
  bool have_set = false;
  dataset ds = {g_array_new(FALSE, TRUE, sizeof(image)), g_array_new(FALSE, TRUE, sizeof(image)), 0, false};
  gchar *gpath = NULL, *rpath = NULL, *state_path = NULL, *work = NULL, *out_dir = NULL, *log_path = NULL, *samples = NULL;
  gchar *name = NULL, *rev_name = NULL, *label = NULL, *rev_label = NULL, *task = NULL, *rev_task = NULL;
  gchar **data = NULL;
  guint *perm = NULL;
  float *bufa = NULL, *bufb = NULL;
  FILE *logf = NULL;
  bool handlers = false;
  if (!g_option_context_parse(oc, &argc, &argv, &gerr)) {
    cli_error("finetune", "%s", gerr->message);
    g_error_free(gerr);
    goto out;
  }
  i2i_backend backend = I2I_BACKEND_AUTO;
  if (o.backend && !cli_parse_backend(o.backend, &backend)) {
    cli_error("finetune", "unknown backend '%s' (auto, cpu or cuda)", o.backend);
    goto out;
  }
  if (!at_least("iters", o.iters, o.iters != UNSET_INT, 1) || !at_least("batch", o.batch, o.batch != UNSET_INT, 1) ||
      !at_least("size", o.size, o.size != UNSET_INT, 1) || !at_least("threads", o.threads, true, 0) ||
      !at_least("stop-at", o.stop_at, o.stop_at != UNSET_INT, 1) ||
      !at_least("sample-every", o.sample_every, o.sample_every != UNSET_INT, 0) ||
      !at_least("save-every", o.save_every, o.save_every != UNSET_INT, 0) ||
      !at_least("seed", (double)o.seed, o.seed != G_MININT64, 0) ||
      !at_least("identity", o.identity, o.identity != UNSET_DBL, 0))
    goto out;
  if (o.lr != UNSET_DBL && !(o.lr > 0 && isfinite(o.lr))) {
    cli_error("finetune", "--lr must be a positive number");
    goto out;
  }
  if (o.source_side && strcmp(o.source_side, "left") && strcmp(o.source_side, "right")) {
    cli_error("finetune", "--source-side must be left or right");
    goto out;
  }
  if (o.out_name && !file_safe(o.out_name)) {
    cli_error("finetune", "-o '%s': use letters, digits, '-', '_' and '.' (no folder, no .onnx)", o.out_name);
    goto out;
  }
  if (!o.resume && argc < 3) {
    cli_error("finetune", "expects MODEL and the data folders (see --help)");
    goto out;
  }
  ctx = cli_ctx(backend, o.threads, 0);
  if (!ctx) {
    rc = 1;
    goto out;
  }
  rc = 1;
  i2i_train_kind kind;
  const char *src_side = NULL;
  /* ---- networks ---- */
  if (o.resume) {
    if (i2i_trainer_load_state(ctx, o.resume, &tr)) {
      cli_error("finetune", "%s", i2i_ctx_errmsg(ctx));
      goto out;
    }
    i2i_train_params tp;
    i2i_trainer_params(tr, &tp);
    kind = tp.kind;
    state_path = g_strdup(o.resume);
    fprintf(stderr, "i2i finetune: resuming %s at iteration %lld\n", o.resume, (long long)i2i_trainer_iteration(tr));
    if (o.iters != UNSET_INT && i2i_trainer_set_iters(tr, o.iters)) {
      cli_error("finetune", "%s", i2i_ctx_errmsg(ctx));
      goto out;
    }
    if (o.batch != UNSET_INT || o.size != UNSET_INT || o.lr != UNSET_DBL || o.identity != UNSET_DBL ||
        o.seed != G_MININT64 || o.reverse || o.direction)
      fprintf(stderr, "i2i finetune: --batch, --size, --lr, --identity, --seed and the models come from the state; ignored\n");
  } else {
    const char *mname = argv[1];
    if (convert_is_checkpoint(mname) || cli_has_ext(mname, ".pth")) {
      char err[1024];
      convert_opts co = {.channel_order = o.channel_order};
      if (convert_load(ctx, mname, &co, &cset, err, sizeof err)) {
        cli_error("finetune", "%s", err);
        goto out;
      }
      have_set = true;
      const convert_net *g = NULL, *gr = NULL;
      for (size_t i = 0; i < cset.n; i++) {
        const convert_net *n = &cset.nets[i];
        if (n->discriminator) continue;
        if (o.direction ? !strcmp(n->task, o.direction) : !g) g = n;
      }
      if (!g) {
        cli_error("finetune", "%s has no generator%s%s", mname, o.direction ? " for " : "", o.direction ? o.direction : "");
        goto out;
      }
      for (size_t i = 0; i < cset.n; i++)
        if (!cset.nets[i].discriminator && &cset.nets[i] != g) gr = &cset.nets[i];
      task = g_strdup(g->task);
      models[0] = g->model;
      models[1] = gr ? gr->model : NULL;
      for (size_t i = 0; i < cset.n; i++) {
        const convert_net *n = &cset.nets[i];
        if (!n->discriminator) continue;
        if (!strcmp(n->task, g->task)) models[2] = n->model;
        else if (gr && !strcmp(n->task, gr->task)) models[3] = n->model;
      }
      fprintf(stderr, "i2i finetune: %s: %s (%s)%s%s%s\n", mname, g->task, g->architecture, gr ? ", reverse " : "",
              gr ? gr->task : "", cset.has_discriminators ? ", with discriminators" : ", no discriminators (new ones start from N(0, 0.02))");
    } else {
      models[0] = load_model(ctx, mname, &gpath);
      if (!models[0]) goto out;
      owned[0] = true;
      task = g_strdup(meta_or(models[0], "i2i.task", ""));
      if (!*task) {
        g_free(task);
        task = stem_of(gpath);
      }
      models[2] = load_disc_beside(ctx, gpath, task);
      owned[2] = models[2] != NULL;
    }
    i2i_model_info gi;
    i2i_model_get_info(models[0], &gi);
    if (gi.family == I2I_FAMILY_UNET) kind = I2I_TRAIN_PIX2PIX;
    else if (gi.family == I2I_FAMILY_RESNET) kind = I2I_TRAIN_CYCLEGAN;
    else {
      cli_error("finetune", "%s is not a CycleGAN or Pix2Pix generator", mname);
      goto out;
    }
    if (kind == I2I_TRAIN_CYCLEGAN && (o.reverse || !models[1])) {
      const char *rn = o.reverse;
      if (!rn) rn = i2i_model_meta(models[0], "i2i.reverse_task");
      if (!rn) rn = manifest_reverse(ctx, task);
      if (!rn) {
        cli_error("finetune", "CycleGAN training needs the reverse (B -> A) generator too: pass --reverse MODEL");
        goto out;
      }
      i2i_model *r = load_model(ctx, rn, &rpath);
      if (!r) goto out;
      models[1] = r;
      owned[1] = true;
      const char *rt = meta_or(r, "i2i.task", NULL);
      rev_task = rt ? g_strdup(rt) : stem_of(rpath);
      models[3] = load_disc_beside(ctx, rpath, rev_task);
      owned[3] = models[3] != NULL;
      fprintf(stderr, "i2i finetune: reverse generator %s\n", rpath);
    } else if (kind == I2I_TRAIN_CYCLEGAN && have_set) {
      for (size_t i = 0; i < cset.n; i++)
        if (cset.nets[i].model == models[1]) rev_task = g_strdup(cset.nets[i].task);
    }
    i2i_train_params tp;
    i2i_train_default_params(&tp, kind);
    if (o.iters != UNSET_INT) tp.iters = o.iters;
    if (o.batch != UNSET_INT) tp.batch = o.batch;
    if (o.size != UNSET_INT) tp.size = o.size;
    if (o.lr != UNSET_DBL) tp.lr = (float)o.lr;
    if (o.seed != G_MININT64) tp.seed = (uint64_t)o.seed;
    if (o.no_flip) tp.flip = 0;
    const char *variant = meta_or(models[0], "i2i.variant", "");
    tp.lambda_identity = o.identity != UNSET_DBL ? (float)o.identity : !strcmp(variant, "id0") ? 0.0f : 0.5f;
    const i2i_manifest_entry *me = i2i_manifest_find(ctx, task);
    if (me && strstr(me->config, "wo-jitter-flip")) {
      tp.load_size = tp.size;
      tp.flip = 0;
    }
    i2i_train_models tm = {models[0], models[1], models[2], models[3]};
    if (i2i_trainer_create(ctx, &tp, &tm, &tr)) {
      cli_error("finetune", "%s", i2i_ctx_errmsg(ctx));
      goto out;
    }
    /* names of the result, kept in the state so a resumed run writes the same files */
    char stamp[32];
    time_t now = time(NULL);
    strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", localtime(&now));
    name = o.out_name ? g_strdup(o.out_name) : g_strdup_printf("%s-finetuned-%s", task, stamp);
    label = g_strdup_printf("%s (fine-tuned)", meta_or(models[0], "i2i.menu_label", task));
    i2i_trainer_set_meta(tr, "name", name);
    i2i_trainer_set_meta(tr, "label", label);
    i2i_trainer_set_meta(tr, "task", task);
    if (kind == I2I_TRAIN_CYCLEGAN) {
      rev_name = o.out_name ? g_strdup_printf("%s-reverse", o.out_name)
                            : g_strdup_printf("%s-finetuned-%s", rev_task ? rev_task : "reverse", stamp);
      rev_label = g_strdup_printf("%s (fine-tuned)", meta_or(models[1], "i2i.menu_label", rev_task ? rev_task : rev_name));
      i2i_trainer_set_meta(tr, "reverse_name", rev_name);
      i2i_trainer_set_meta(tr, "reverse_label", rev_label);
    }
    if (o.out_dir) {
      gchar *abs = g_canonicalize_filename(o.out_dir, NULL);
      i2i_trainer_set_meta(tr, "output_dir", abs);
      g_free(abs);
    }
    src_side = o.source_side ? o.source_side : meta_or(models[0], "i2i.source_side", "left");
    i2i_trainer_set_meta(tr, "source_side", src_side);
    for (int i = 2; i < argc; i++) {
      char key[32];
      snprintf(key, sizeof key, "data%d", i - 2);
      gchar *abs = g_canonicalize_filename(argv[i], NULL);
      i2i_trainer_set_meta(tr, key, abs);
      g_free(abs);
    }
  }
  /* state from here on: the trainer's metadata says what to load and write */
  g_free(name);
  g_free(label);
  g_free(rev_name);
  g_free(rev_label);
  name = g_strdup(i2i_trainer_get_meta(tr, "name") ? i2i_trainer_get_meta(tr, "name") : "finetuned");
  label = g_strdup(i2i_trainer_get_meta(tr, "label") ? i2i_trainer_get_meta(tr, "label") : name);
  rev_name = g_strdup(i2i_trainer_get_meta(tr, "reverse_name") ? i2i_trainer_get_meta(tr, "reverse_name") : "");
  rev_label = g_strdup(i2i_trainer_get_meta(tr, "reverse_label") ? i2i_trainer_get_meta(tr, "reverse_label") : "");
  src_side = i2i_trainer_get_meta(tr, "source_side");
  /* ---- checks before any work: names, folders, an earlier run of the same name ---- */
  const char *state_dir = i2i_trainer_get_meta(tr, "output_dir");
  if (!file_safe(name) || (*rev_name && !file_safe(rev_name)) ||
      (src_side && strcmp(src_side, "left") && strcmp(src_side, "right")) ||
      (state_dir && !g_path_is_absolute(state_dir))) {
    if (o.resume)
      cli_error("finetune", "the training state '%s' names an output ('%s', '%s' in '%s', source side '%s') that i2i "
                "would not write; refused", o.resume, name, rev_name, state_dir ? state_dir : "", src_side ? src_side : "");
    else
      cli_error("finetune", "the model's task name gives the output name '%s', which cannot name a file: pass -o NAME", name);
    goto out;
  }
  if (o.work_dir) work = g_strdup(o.work_dir);
  else if (state_path) work = g_path_get_dirname(state_path);
  else work = g_build_filename(g_get_user_data_dir(), "i2i", "finetune", name, NULL);
  if (!state_path) state_path = g_build_filename(work, "state.i2istate", NULL);
  if (o.out_dir) out_dir = g_strdup(o.out_dir);
  else if (state_dir) out_dir = g_strdup(state_dir);
  else {
    char *udir = NULL;
    if (i2i_model_user_dir(ctx, &udir)) {
      cli_error("finetune", "%s", i2i_ctx_errmsg(ctx));
      goto out;
    }
    out_dir = g_strdup(udir);
    i2i_free(ctx, udir);
  }
  {
    char why[1200];
    if (!dir_writable(work, why, sizeof why)) {
      cli_error("finetune", "cannot write the work folder %s; choose another with --work-dir", why);
      goto out;
    }
    if (!dir_writable(out_dir, why, sizeof why)) {
      cli_error("finetune", "cannot write the result into %s; choose another folder with --output-dir", why);
      goto out;
    }
  }
  if (!o.resume && !o.overwrite) {
    const char *outs[4] = {name, name, *rev_name ? rev_name : NULL, *rev_name ? rev_name : NULL};
    bool clash = false;
    if (g_file_test(state_path, G_FILE_TEST_EXISTS)) {
      cli_error("finetune", "'%s' holds the state of an earlier run: continue it with `i2i finetune --resume %s`, "
                "or start afresh over it with --overwrite (or choose another -o NAME)", state_path, state_path);
      clash = true;
    }
    for (int i = 0; i < 4 && !clash; i++) {
      if (!outs[i]) continue;
      gchar *file = g_strdup_printf("%s%s.onnx", outs[i], i % 2 ? ".D" : "");
      gchar *p = g_build_filename(out_dir, file, NULL);
      if (g_file_test(p, G_FILE_TEST_EXISTS)) {
        cli_error("finetune", "'%s' exists (a model named '%s'): choose another -o NAME, or replace it with --overwrite",
                  p, outs[i]);
        clash = true;
      }
      g_free(file);
      g_free(p);
    }
    if (clash) goto out;
  }
  {
    int nd = 0;
    while (nd < 8) {
      char key[32];
      snprintf(key, sizeof key, "data%d", nd);
      if (!i2i_trainer_get_meta(tr, key)) break;
      nd++;
    }
    if (o.resume && argc >= 2) {
      nd = argc - 1;
      data = g_new0(gchar *, (gsize)nd + 1);
      for (int i = 0; i < nd; i++) data[i] = g_strdup(argv[1 + i]);
    } else {
      data = g_new0(gchar *, (gsize)nd + 1);
      for (int i = 0; i < nd; i++) {
        char key[32];
        snprintf(key, sizeof key, "data%d", i);
        data[i] = g_strdup(i2i_trainer_get_meta(tr, key));
      }
    }
  }
  i2i_train_params tp;
  i2i_trainer_params(tr, &tp);
  kind = tp.kind;
  bool cyc = kind == I2I_TRAIN_CYCLEGAN;
  int nd = (int)g_strv_length(data);
  /* ---- data ---- */
  ds.load = tp.load_size;
  int skipped = 0;
  if (cyc) {
    if (nd != 2) {
      cli_error("finetune", "CycleGAN fine-tuning takes two folders: A (source domain) and B (target domain)");
      goto out;
    }
    int s1 = load_folder(ctx, data[0], ds.load, ds.a, "A"), s2 = s1 < 0 ? -1 : load_folder(ctx, data[1], ds.load, ds.b, "B");
    if (s1 < 0 || s2 < 0) goto out;
    skipped = s1 + s2;
  } else {
    ds.paired = true;
    if (nd == 1) skipped = load_side_by_side(ctx, data[0], src_side && !strcmp(src_side, "right"), ds.load, &ds);
    else if (nd == 2) skipped = load_pair_folders(ctx, data[0], data[1], ds.load, &ds);
    else {
      cli_error("finetune", "Pix2Pix fine-tuning takes a folder of side-by-side pairs, or two folders (source, target)");
      goto out;
    }
    if (skipped < 0) goto out;
  }
  if (!ds.a->len || !ds.b->len) {
    cli_error("finetune", "no usable %s in %s%s%s", cyc ? "images" : "pairs", data[0], nd > 1 ? " / " : "", nd > 1 ? data[1] : "");
    goto out;
  }
  if (cyc) fprintf(stderr, "i2i finetune: %u images of A, %u of B", ds.a->len, ds.b->len);
  else fprintf(stderr, "i2i finetune: %u pairs (source: %s)", ds.a->len, nd == 1 ? (src_side ? src_side : "left") : data[0]);
  fprintf(stderr, ", %d skipped\n", skipped);
  /* ---- work folder, state, log ---- */
  if (g_mkdir_with_parents(work, 0777)) {
    cli_error("finetune", "cannot create the work folder '%s': %s", work, g_strerror(errno));
    goto out;
  }
  samples = g_build_filename(work, "samples", NULL);
  log_path = o.log ? g_strdup(o.log) : g_build_filename(work, "losses.csv", NULL);
  bool new_log = !g_file_test(log_path, G_FILE_TEST_EXISTS) || !o.resume;
  logf = fopen(log_path, new_log ? "w" : "a");
  if (!logf) {
    cli_error("finetune", "cannot write the loss log '%s': %s", log_path, g_strerror(errno));
    goto out;
  }
  if (new_log)
    fprintf(logf, cyc ? "iteration,lr,loss_d,loss_g,loss_d_a,loss_d_b,loss_gan_a,loss_gan_b,loss_cycle_a,loss_cycle_b,loss_id_a,loss_id_b,seconds\n"
                      : "iteration,lr,loss_d,loss_g,loss_d_fake,loss_d_real,loss_gan,loss_l1,seconds\n");
  int sample_every = o.sample_every != UNSET_INT ? o.sample_every : 100;
  int save_every = o.save_every != UNSET_INT ? o.save_every : 500;
  if (sample_every && g_mkdir_with_parents(samples, 0777)) sample_every = 0;
  char where[64];
  if (i2i_trainer_backend(tr) == I2I_BACKEND_CUDA)
    snprintf(where, sizeof where, "the GPU (CUDA, %s convolutions)", i2i_trainer_math(tr));
  else snprintf(where, sizeof where, "the CPU (%d threads)", o.threads ? o.threads : (int)g_get_num_processors());
  fprintf(stderr, "i2i finetune: %s on %s, %dx%d crops of %dx%d, batch %d, %lld iterations; work folder %s\n",
          cyc ? "CycleGAN" : "Pix2Pix", where, tp.size, tp.size, tp.load_size, tp.load_size, tp.batch, (long long)tp.iters,
          work);
  /* ---- the loop ---- */
  size_t L = (size_t)ds.load;
  bufa = g_try_malloc(sizeof(float) * 4 * L * L);
  bufb = g_try_malloc(sizeof(float) * 4 * L * L);
  perm = g_new(guint, ds.a->len);
  if (!bufa || !bufb) {
    cli_error("finetune", "out of memory");
    goto out;
  }
  int64_t perm_epoch = -1;
  double t0 = cli_now(), last_print = 0;
  int64_t it0 = i2i_trainer_iteration(tr), stop = o.stop_at != UNSET_INT ? o.stop_at : tp.iters;
  i2i_trainer_params(tr, &tp);
  if (stop > tp.iters) stop = tp.iters;
  bool failed = false;
  interrupted = n_signals = writing = 0;
  set_quit_msg(state_path, o.resume != NULL);
  signal(SIGINT, on_interrupt);
  signal(SIGTERM, on_interrupt);
  handlers = true;
  while (i2i_trainer_iteration(tr) < stop && !interrupted) {
    int64_t it = i2i_trainer_iteration(tr);
    for (int i = 0; i < tp.batch; i++) {
      uint64_t k = (uint64_t)it * (uint64_t)tp.batch + (uint64_t)i, epoch = k / ds.a->len;
      if ((int64_t)epoch != perm_epoch) {
        epoch_order(perm, ds.a->len, tp.seed, epoch);
        perm_epoch = (int64_t)epoch;
      }
      guint ia = perm[k % ds.a->len], ib = ds.paired ? ia : (guint)(mix64(tp.seed ^ mix64(k + 0x77)) % ds.b->len);
      expand(g_array_index(ds.a, image, ia).rgb, bufa, L * L);
      expand(g_array_index(ds.b, image, ib).rgb, bufb, L * L);
      if (i2i_trainer_set_images(tr, i, bufa, (int)L, (int)L, bufb, (int)L, (int)L)) {
        cli_error("finetune", "%s", i2i_ctx_errmsg(ctx));
        failed = true;
        break;
      }
    }
    if (failed) break;
    i2i_train_report r;
    i2i_status st = i2i_trainer_step(tr, &r);
    if (st) {
      cli_error("finetune", "%s", i2i_ctx_errmsg(ctx));
      if (st == I2I_E_LIMIT && !i2i_trainer_save_state(tr, state_path))
        fprintf(stderr, "i2i finetune: the last good state (after %lld iterations) is in %s\n",
                (long long)i2i_trainer_iteration(tr), state_path);
      failed = true;
      break;
    }
    if (cyc)
      fprintf(logf, "%lld,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%.4f\n", (long long)r.iteration, r.lr,
              r.loss_d, r.loss_g, r.loss_d_a, r.loss_d_b, r.loss_gan_a, r.loss_gan_b, r.loss_cycle_a, r.loss_cycle_b,
              r.loss_id_a, r.loss_id_b, r.seconds);
    else
      fprintf(logf, "%lld,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%.4f\n", (long long)r.iteration, r.lr, r.loss_d, r.loss_g,
              r.loss_d_fake, r.loss_d_real, r.loss_gan, r.loss_l1, r.seconds);
    int64_t done = i2i_trainer_iteration(tr);
    double el = cli_now() - t0, rate = (double)(done - it0) / (el > 0 ? el : 1e-9);
    if (cli_now() - last_print > 2.0 || done == stop || done == it0 + 1) {
      print_report(&r, cyc, tp.iters, rate, (double)(stop - done) / (rate > 0 ? rate : 1e-9));
      last_print = cli_now();
      fflush(logf);
    }
    writing = 1;
    if (sample_every && done % sample_every == 0) write_sample(ctx, tr, &ds, tp.size, samples, done);
    if ((save_every && done % save_every == 0) || done == stop || interrupted) {
      if (i2i_trainer_save_state(tr, state_path)) {
        cli_error("finetune", "%s", i2i_ctx_errmsg(ctx));
        failed = true;
        break;
      }
      set_quit_msg(state_path, true);
    }
    writing = 0;
  }
  if (logf) fflush(logf);
  if (failed) goto out;
  if (interrupted && i2i_trainer_iteration(tr) < tp.iters) {
    fprintf(stderr, "i2i finetune: interrupted at iteration %lld of %lld; the state is saved; continue with: "
            "i2i finetune --resume %s\n", (long long)i2i_trainer_iteration(tr), (long long)tp.iters, state_path);
    rc = 128 + (int)interrupted;
    goto out;
  }
  if (i2i_trainer_iteration(tr) < tp.iters) {
    fprintf(stderr, "i2i finetune: stopped at iteration %lld of %lld; continue with: i2i finetune --resume %s\n",
            (long long)i2i_trainer_iteration(tr), (long long)tp.iters, state_path);
    rc = 0;
    goto out;
  }
  /* ---- the result (a signal now waits for it: the run is complete) ---- */
  writing = 1;
  {
    const char *dir = out_dir;
    if (g_mkdir_with_parents(dir, 0777)) {
      cli_error("finetune", "cannot create '%s': %s; the trained state is kept: write the result elsewhere with "
                "`i2i finetune --resume %s --output-dir DIR`", dir, g_strerror(errno), state_path);
      goto out;
    }
    struct {
      int net;
      const char *name, *label, *other;
      bool disc;
    } outs[4] = {{I2I_NET_G, name, label, rev_name, false},
                 {I2I_NET_D, name, label, NULL, true},
                 {I2I_NET_G_REV, rev_name, rev_label, name, false},
                 {I2I_NET_D_REV, rev_name, rev_label, NULL, true}};
    bool ok = true;
    for (int i = 0; i < (cyc ? 4 : 2) && ok; i++) {
      gchar *file = g_strdup_printf("%s%s.onnx", outs[i].name, outs[i].disc ? ".D" : "");
      gchar *p = g_build_filename(dir, file, NULL);
      const char *meta[] = {"i2i.task", outs[i].name, "i2i.menu_label", outs[i].label,
                            outs[i].other && *outs[i].other ? "i2i.reverse_task" : NULL, outs[i].other, NULL};
      if (i2i_trainer_export(tr, outs[i].net, meta, p)) {
        cli_error("finetune", "%s; the trained state is kept: write the result elsewhere with "
                  "`i2i finetune --resume %s --output-dir DIR`", i2i_ctx_errmsg(ctx), state_path);
        ok = false;
      } else {
        printf("%s\n", p);
      }
      g_free(file);
      g_free(p);
    }
    if (!ok) goto out;
  }
  rc = 0;
out:
  if (handlers) {
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
  }
  if (logf) fclose(logf);
  g_option_context_free(oc);
  i2i_trainer_free(tr);
  for (int k = 0; k < 4; k++)
    if (owned[k]) i2i_model_free(models[k]);
  if (have_set) convert_set_free(&cset);
  free_images(ds.a);
  free_images(ds.b);
  g_free(bufa);
  g_free(bufb);
  g_free(perm);
  g_strfreev(data);
  g_free(gpath);
  g_free(rpath);
  g_free(state_path);
  g_free(work);
  g_free(out_dir);
  g_free(log_path);
  g_free(samples);
  g_free(name);
  g_free(rev_name);
  g_free(label);
  g_free(rev_label);
  g_free(task);
  g_free(rev_task);
  g_free(o.reverse);
  g_free(o.direction);
  g_free(o.source_side);
  g_free(o.backend);
  g_free(o.resume);
  g_free(o.out_name);
  g_free(o.out_dir);
  g_free(o.work_dir);
  g_free(o.log);
  g_free(o.channel_order);
  i2i_ctx_free(ctx);
  return rc;
}
