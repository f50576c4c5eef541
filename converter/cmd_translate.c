/* cmd_translate.c: `i2i translate MODEL IN OUT` and `i2i translate MODEL IN... -o DIR`.
 *
 * Images (PNG, JPEG, TIFF, WebP; 8, 16 and 32-bit; alpha kept) are written in the input's
 * format and depth unless told otherwise; .npy arrays (float32 HxWx3 in [-1,1]) are the numeric
 * path. Folders are expanded to their images. A file that fails is reported and the others go
 * on; the exit status says whether any failed. Outputs are written to a temporary and renamed.
 * An image's output is written by a thread of its own while the next file translates. Ctrl-C
 * stops at the file in progress: what was written is kept, nothing half-written is left.
 */
#include <errno.h>
#include <signal.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "convert.h"
#include "imageio.h"
#include "npy.h"

#define DEFAULT_IMAGE_SCALE 512

typedef struct {
  i2i_ctx *ctx;
  i2i_model *model;
  i2i_run_params rp;
  int scale;            /* -1: default (images DEFAULT_IMAGE_SCALE, .npy native) */
  i2i_img_type out_type;
  int bits;
  int quality;
  bool warned_alpha;   /* the JPEG-drops-alpha warning was given */
  unsigned n_files;
  bool verbose;
  cli_progress *bar;
  double file_base, file_span;
  unsigned written;     /* files written so far */
} job;

static bool is_dir(const char *p) {
  struct stat sb;
  return p && stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* Ctrl-C or SIGTERM: the signal, once the first has come. The run in progress is cancelled at its
 * next progress report, an output being written is finished, and no further file is started. A
 * second signal ends the process at once (the handler gives way to the default). */
static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig) {
  interrupted = sig;
  signal(sig, SIG_DFL);
}

/* Catches sig unless it is ignored (a job started in the background, nohup); old gets what to
 * restore. */
static void catch_signal(int sig, struct sigaction *old) {
  sigaction(sig, NULL, old);
  if (old->sa_handler != SIG_IGN) signal(sig, on_interrupt);
}

/* Progress of one file mapped into the whole job's bar; nonzero cancels the run. */
static int file_progress(void *user, double f) {
  job *j = user;
  if (interrupted) return 1;
  return cli_progress_update(j->bar, j->file_base + j->file_span * f);
}

/* --verbose: one line per file with the size, device, time, tiles and working memory. */
static void report(const char *in, const char *out, int w, int h, const i2i_run_report *r) {
  char peak[64] = "";
  if (r->backend == I2I_BACKEND_CUDA)
    snprintf(peak, sizeof peak, "; peak GPU memory %.2f MiB", r->peak_device_bytes / 1048576.0);
  fprintf(stderr,
          "%s -> %s: %dx%d (model at %dx%d) in %.2f s on the %s; %d tile%s, %d whole-image intermediates "
          "(%.1f MiB) + %.1f MiB workspace%s%s%s\n",
          in, out, w, h, r->run_width, r->run_height, r->seconds, r->backend == I2I_BACKEND_CUDA ? "GPU" : "CPU",
          r->tiles, r->tiles == 1 ? "" : "s", r->whole_intermediates, r->intermediate_bytes / 1048576.0,
          r->workspace_bytes / 1048576.0, peak, r->message[0] ? "; " : "", r->message);
}

static bool translate_npy(job *j, const char *in, const char *out, char *err, size_t errlen) {
  i2i_npy_image img;
  if (!i2i_npy_load(in, &img, err, errlen)) return false;
  size_t n = (size_t)img.width * (size_t)img.height;
  float *rgb = g_try_malloc(n * 3 * sizeof(float));
  if (!rgb) {
    i2i_npy_free(&img);
    snprintf(err, errlen, "out of memory for a %dx%d array", img.width, img.height);
    return false;
  }
  for (size_t i = 0; i < n; i++)
    for (int c = 0; c < 3; c++) {
      float v = img.rgba[i * 4 + (size_t)c];
      if (!isfinite(v)) {
        snprintf(err, errlen, "the array holds %s at row %zu, column %zu, channel %d: .npy inputs must be finite",
                 isnan(v) ? "NaN" : "inf", i / (size_t)img.width, i % (size_t)img.width, c);
        g_free(rgb);
        i2i_npy_free(&img);
        return false;
      }
      rgb[i * 3 + (size_t)c] = v;
    }
  i2i_run_params rp = j->rp;
  rp.layout = I2I_PIXELS_RGB_SIGNED;
  rp.scale = j->scale < 0 ? 0 : j->scale;
  rp.progress = file_progress;
  rp.progress_user = j;
  i2i_run_report rep;
  const float *ins[1] = {rgb};
  float *outs[1] = {rgb};
  i2i_status st = i2i_run(j->ctx, j->model, &rp, 1, img.width, img.height, ins, outs, &rep);
  bool ok = st == I2I_OK;
  if (!ok) snprintf(err, errlen, "%s", i2i_ctx_errmsg(j->ctx));
  if (ok) {
    for (size_t i = 0; i < n; i++)
      for (int c = 0; c < 3; c++) img.rgba[i * 4 + (size_t)c] = rgb[i * 3 + (size_t)c];
    ok = i2i_npy_save(out, img.rgba, img.height, img.width, img.channels, err, errlen);
  }
  if (ok && j->verbose) report(in, out, img.width, img.height, &rep);
  j->written += ok;
  g_free(rgb);
  i2i_npy_free(&img);
  return ok;
}

/* An image file of the run: loaded (one file ahead), translated, then written. Encoding runs on
 * one core (a 4000x3000 JPEG: 0.3 s of 1.4 s a photo on two cores, a PNG 1 s; bench/NOTES.md), so
 * while the next file is read and translated a thread of its own writes it. */
typedef struct {
  bool loaded;           /* img holds the file's pixels */
  bool active;           /* img is translated and its writing not reported yet */
  GThread *thread;       /* NULL: written in the loop's thread */
  i2i_img img;
  const char *in, *out;
  i2i_img_save_opts so;
  i2i_run_report rep;
  bool ok;
  char err[1024];        /* why loading, translating or writing failed */
} image_file;

static void image_load(image_file *f, const char *in, const char *out) {
  f->in = in;
  f->out = out;
  f->err[0] = 0;
  f->loaded = i2i_img_load(in, &f->img, f->err, sizeof f->err);
}

/* What the reader noticed in a loaded file (reported in the files' order, with its errors). */
static void report_warnings(const image_file *f) {
  unsigned w = f->loaded ? f->img.info.warnings : 0;
  if (w & I2I_IMG_WARN_PAGES) cli_error("translate", "warning: %s has several pages: the first is translated", f->in);
  if (w & I2I_IMG_WARN_NONFINITE) cli_error("translate", "warning: %s holds NaN or infinite values, read as 0", f->in);
  if (w & I2I_IMG_WARN_CLAMPED) cli_error("translate", "warning: %s holds values outside 0..1, clamped", f->in);
  if (w & I2I_IMG_WARN_DATA) cli_error("translate", "warning: %s has corrupt data the decoder skipped", f->in);
}

static void image_release(image_file *f) {
  if (f->loaded) i2i_img_free(&f->img);
  f->loaded = f->active = false;
}

/* Translates f's loaded image in place (f->active on success); `nomem`: the engine lacked the
 * memory for the run. */
static bool translate_image(job *j, image_file *f, bool *nomem) {
  i2i_run_params rp = j->rp;
  rp.layout = I2I_PIXELS_RGBA;
  rp.scale = j->scale < 0 ? DEFAULT_IMAGE_SCALE : j->scale;
  rp.progress = file_progress;
  rp.progress_user = j;
  const float *ins[1] = {f->img.pixels};
  float *outs[1] = {f->img.pixels};
  i2i_status st = i2i_run(j->ctx, j->model, &rp, 1, f->img.info.width, f->img.info.height, ins, outs, &f->rep);
  *nomem = st == I2I_E_NOMEM;
  if (st) {
    snprintf(f->err, sizeof f->err, "%s", i2i_ctx_errmsg(j->ctx));
    return false;
  }
  i2i_img_type t = j->out_type != I2I_IMG_UNKNOWN ? j->out_type : i2i_img_type_from_name(f->out);
  if (t == I2I_IMG_UNKNOWN) t = f->img.info.type;
  i2i_img_save_opts_from_info(&f->so, &f->img.info, t);
  if (j->bits) {
    f->so.bits = j->bits;
    f->so.is_float = j->bits == 32;
  }
  if (j->quality) f->so.quality = j->quality;
  if (t == I2I_IMG_JPEG && f->img.info.has_alpha && !j->warned_alpha) {
    fprintf(stderr, "i2i translate: warning: JPEG has no alpha channel: the transparency of %s%s is dropped "
            "(PNG, TIFF and WebP keep it)\n", f->in, j->n_files > 1 ? " (and of any others)" : "");
    j->warned_alpha = true;
  }
  f->active = true;
  return true;
}

static gpointer save_now(gpointer data) {
  image_file *f = data;
  f->ok = i2i_img_save(f->out, f->img.pixels, f->img.info.width, f->img.info.height, &f->so, f->err, sizeof f->err);
  return NULL;
}

/* Starts writing f: on a thread when another file follows and the image takes at most a quarter
 * of the memory still available (it is held while the next file runs), else here and now. */
static void save_start(image_file *f, bool more) {
  f->thread = NULL;
  uint64_t bytes = (uint64_t)f->img.info.width * (uint64_t)f->img.info.height * 4 * sizeof(float);
  if (more && bytes <= i2i_host_memory_available(0) / 4) f->thread = g_thread_try_new("i2i-save", save_now, f, NULL);
  if (!f->thread) save_now(f);
}

/* Waits for f to be written and reports it (its failure, or with --verbose its line); returns 1
 * when it failed. */
static int save_finish(job *j, image_file *f) {
  if (!f->active) return 0;
  if (f->thread) g_thread_join(f->thread);
  f->thread = NULL;
  if (f->ok && j->verbose) report(f->in, f->out, f->img.info.width, f->img.info.height, &f->rep);
  image_release(f);
  j->written += f->ok;
  if (f->ok) return 0;
  cli_progress_done(j->bar);
  cli_error("translate", "%s: %s", f->in, f->err);
  return 1;
}

static bool is_image_input(const char *p) { return !is_dir(p) && !cli_has_ext(p, ".npy"); }

static bool is_input_file(const char *p) {
  return i2i_img_path_is_supported(p) || (cli_has_ext(p, ".npy") && g_file_test(p, G_FILE_TEST_IS_REGULAR));
}

/* Adds the supported images (and .npy files) of a folder, sorted by name, non-recursively. */
static void add_dir(GPtrArray *files, const char *dir) {
  GPtrArray *names = cli_list_folder("translate", dir, is_input_file, "PNG, JPEG, TIFF, WebP and .npy files", NULL);
  if (!names) {
    g_ptr_array_add(files, g_strdup(dir)); /* reported as a failure later */
    return;
  }
  for (guint i = 0; i < names->len; i++) g_ptr_array_add(files, g_strdup(names->pdata[i]));
  g_ptr_array_free(names, TRUE);
}

/* The folders mkdir -p would create for DIR, deepest first (DIR itself first when missing). */
static GPtrArray *missing_folders(const char *dir) {
  GPtrArray *made = g_ptr_array_new_with_free_func(g_free);
  gchar *p = g_strdup(dir);
  struct stat st;
  bool top = false;
  while (!top && lstat(p, &st) != 0 && errno == ENOENT) {
    gchar *up = g_path_get_dirname(p);
    top = !strcmp(up, p) || !strcmp(up, ".") || !strcmp(up, "/");
    g_ptr_array_add(made, p);
    p = up;
  }
  g_free(p);
  return made;
}

static char *out_name(const char *dir, const char *in, i2i_img_type t) {
  gchar *base = g_path_get_basename(in);
  if (t != I2I_IMG_UNKNOWN && !cli_has_ext(base, ".npy")) {
    char *dot = strrchr(base, '.');
    if (dot) *dot = 0;
    static const char *ext[] = {"", ".png", ".jpg", ".tif", ".webp"};
    gchar *nb = g_strconcat(base, ext[t], NULL);
    g_free(base);
    base = nb;
  }
  gchar *p = g_build_filename(dir, base, NULL);
  g_free(base);
  return p;
}

/* The bit depths a format can hold; NULL if BITS (0: as the input) fits type T. */
static const char *bits_problem(i2i_img_type t, int bits) {
  if (!bits || t == I2I_IMG_UNKNOWN) return NULL;
  switch (t) {
  case I2I_IMG_PNG: return bits == 8 || bits == 16 ? NULL : "PNG stores 8 or 16 bits";
  case I2I_IMG_TIFF: return NULL;
  default: return bits == 8 ? NULL : "JPEG and WebP store 8 bits";
  }
}

/* "device:inode" of an existing file, else NULL. */
static gchar *file_key(const char *p) {
  struct stat sb;
  if (stat(p, &sb) != 0) return NULL;
  return g_strdup_printf("%ju:%ju", (uintmax_t)sb.st_dev, (uintmax_t)sb.st_ino);
}

/* Checks every input/output pair before any work, so that a mistyped command loses nothing:
 * an output that is its input, two inputs that would write one output, an image written as .npy
 * (or the reverse), a bit depth the output format cannot hold. Prints each problem; returns the
 * count. */
static int check_pairs(GPtrArray *ins, GPtrArray *outs, i2i_img_type out_type, int bits) {
  int bad = 0;
  GHashTable *seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  GHashTable *inputs = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  for (guint i = 0; i < ins->len; i++) {
    gchar *k = file_key(ins->pdata[i]);
    if (k) g_hash_table_insert(inputs, k, ins->pdata[i]);
  }
  for (guint i = 0; i < ins->len; i++) {
    const char *in = ins->pdata[i], *out = outs->pdata[i];
    char msg[512] = "";
    gchar *canon = g_canonicalize_filename(out, NULL);
    const char *first = g_hash_table_lookup(seen, canon);
    i2i_img_type named = i2i_img_type_from_name(out);
    i2i_img_type t = out_type != I2I_IMG_UNKNOWN ? out_type : named;
    if (t == I2I_IMG_UNKNOWN) t = i2i_img_type_from_name(in);
    gchar *obase = g_path_get_basename(out);
    const char *oext = strrchr(obase, '.');
    const char *bp = cli_has_ext(in, ".npy") ? NULL : bits_problem(t, bits);
    gchar *okey = file_key(out);
    const char *clobbered = okey ? g_hash_table_lookup(inputs, okey) : NULL;
    g_free(okey);
    if (is_dir(in)) {
      /* an unreadable folder: reported when its turn comes */
    } else if (clobbered) {
      snprintf(msg, sizeof msg, "the output '%s' would replace the input '%s': choose another output", out,
               clobbered);
    } else if (first) {
      snprintf(msg, sizeof msg, "'%s' and '%s' would both be written to '%s'", first, in, out);
    } else if (cli_has_ext(in, ".npy") != cli_has_ext(out, ".npy")) {
      snprintf(msg, sizeof msg, "%s", cli_has_ext(in, ".npy") ? "a .npy input needs a .npy output"
                                                          : "an image input needs an image output, not .npy");
    } else if (bp) {
      snprintf(msg, sizeof msg, "--bits %d does not fit '%s': %s (TIFF holds 8, 16 or 32)", bits, out, bp);
    } else if (!cli_has_ext(out, ".npy") && oext && oext != obase && named == I2I_IMG_UNKNOWN &&
               out_type == I2I_IMG_UNKNOWN) {
      i2i_img_type content;
      char serr[400];
      gchar *ibase = g_path_get_basename(in);
      if (i2i_img_type_from_name(in) == I2I_IMG_UNKNOWN && !i2i_img_sniff(in, &content, serr, sizeof serr))
        snprintf(msg, sizeof msg, "%s", serr); /* not a picture at all */
      else if (!strcmp(ibase, obase)) /* the output is named after the input, under -o or into a folder */
        snprintf(msg, sizeof msg, "i2i does not write '%s' files: give the outputs' format with -f (png, jpeg, tiff "
                 "or webp)", oext);
      else
        snprintf(msg, sizeof msg, "i2i does not write '%s' files: name the output .png, .jpg, .tif or .webp", oext);
      g_free(ibase);
    } else if (!cli_has_ext(out, ".npy") && named != I2I_IMG_UNKNOWN && out_type != I2I_IMG_UNKNOWN &&
               named != out_type) {
      snprintf(msg, sizeof msg, "-f asks for another format than the name '%s' says: change the name or leave -f out",
               out);
    }
    g_free(obase);
    if (msg[0]) {
      if (bad < 20) cli_error("translate", "%s: %s", in, msg);
      bad++;
    }
    if (!first) g_hash_table_insert(seen, canon, (gpointer)in);
    else g_free(canon);
  }
  g_hash_table_destroy(seen);
  g_hash_table_destroy(inputs);
  if (bad > 20) fprintf(stderr, "i2i translate: ... and %d more\n", bad - 20);
  return bad;
}

int cmd_translate(int argc, char **argv) {
  gchar *outdir = NULL, *backend_s = NULL, *mode_s = NULL, *memory_s = NULL, *format_s = NULL;
  int threads = 0, scale = -1, bits = 0, quality = -1;
  gint64 seed = 0;
  double strength = 100;
  gboolean verbose = FALSE;
  GOptionEntry entries[] = {
    {"output-dir", 'o', 0, G_OPTION_ARG_FILENAME, &outdir, "Write every output into DIR under its input's name (all paths are inputs)", "DIR"},
    {"backend", 'b', 0, G_OPTION_ARG_STRING, &backend_s, "auto (default), cpu or cuda", "NAME"},
    {"device", 0, 0, G_OPTION_ARG_STRING, &backend_s, "Same as --backend", "NAME"},
    {"threads", 't', 0, G_OPTION_ARG_INT, &threads, "CPU threads (default: all cores)", "N"},
    {"seed", 0, 0, G_OPTION_ARG_INT64, &seed, "Pix2Pix variation seed (default 0)", "N"},
    {"pix2pix-mode", 0, 0, G_OPTION_ARG_STRING, &mode_s, "faithful (default: as mmagic, dropout with the seed), deterministic or eval", "MODE"},
    {"strength", 's', 0, G_OPTION_ARG_DOUBLE, &strength, "Blend with the original, 0..100 percent (default 100)", "PCT"},
    {"scale", 0, 0, G_OPTION_ARG_INT, &scale, "Working short side in pixels, 0 = native (default 512 for images, native for .npy)", "PX"},
    {"memory", 'm', 0, G_OPTION_ARG_STRING, &memory_s, "Engine working memory budget, e.g. 2G (1024-based; 0 = automatic)", "SIZE"},
    {"format", 'f', 0, G_OPTION_ARG_STRING, &format_s, "Output format: png, jpeg, tiff or webp (default: as the input, or the output's extension)", "FMT"},
    {"bits", 0, 0, G_OPTION_ARG_INT, &bits, "Output bits per sample: 8, 16 or 32 (float TIFF) (default: as the input)", "N"},
    {"quality", 'q', 0, G_OPTION_ARG_INT, &quality, "JPEG / lossy WebP quality 1..100 (default 95)", "Q"},
    {"verbose", 'v', 0, G_OPTION_ARG_NONE, &verbose, "Print each file's size, time and device", NULL},
    {NULL, 0, 0, 0, NULL, NULL, NULL}};
  GOptionContext *oc = g_option_context_new("MODEL IN OUT | MODEL IN... -o DIR - translate images with a model");
  g_option_context_add_main_entries(oc, entries, NULL);
  g_option_context_set_description(oc,
    "MODEL is a task name (e.g. winter2summer, found in $I2I_MODEL_PATH, ~/.local/share/i2i/models or the\n"
    "installed models) or a path to an .onnx file. IN may be image files, .npy arrays or folders.\n"
    "Without -o the last path is the output (a file, or a folder: an existing one, or for several inputs), as\n"
    "with cp. Outputs that would replace an input or one another are refused before anything runs.\n"
    ".npy files hold float32 H x W x 3 arrays in [-1,1] (the model's own range) and run natively; a fourth\n"
    "channel (H x W x 4) is passed through unchanged, as an image's alpha is.\n"
    "Ctrl-C stops at the file in progress; the files written are whole and nothing half-written is left.\n"
    "Exit status: 0 when every file was written, 1 when any failed, 2 on a usage error, 130 when\n"
    "interrupted (143 for SIGTERM).");
  GError *gerr = NULL;
  int rc = 2;
  i2i_ctx *ctx = NULL;
  i2i_model *model = NULL;
  GPtrArray *ins = g_ptr_array_new_with_free_func(g_free);
  GPtrArray *outs = g_ptr_array_new_with_free_func(g_free);
  GPtrArray *made = NULL; /* output folders this run creates, deepest first */
  guint n_written = 0;
  if (!g_option_context_parse(oc, &argc, &argv, &gerr)) {
    cli_error("translate", "%s", gerr->message);
    g_error_free(gerr);
    goto out;
  }
  i2i_backend backend = I2I_BACKEND_AUTO;
  if (backend_s && !cli_parse_backend(backend_s, &backend)) {
    cli_error("translate", "unknown backend '%s' (auto, cpu or cuda)", backend_s);
    goto out;
  }
  i2i_pix2pix_mode mode = I2I_PIX2PIX_FAITHFUL;
  if (mode_s) {
    if (!strcmp(mode_s, "faithful")) mode = I2I_PIX2PIX_FAITHFUL;
    else if (!strcmp(mode_s, "deterministic")) mode = I2I_PIX2PIX_DETERMINISTIC;
    else if (!strcmp(mode_s, "eval")) mode = I2I_PIX2PIX_EVAL;
    else {
      cli_error("translate", "unknown Pix2Pix mode '%s' (faithful, deterministic or eval)", mode_s);
      goto out;
    }
  }
  uint64_t memory = 0;
  if (memory_s && !cli_parse_size(memory_s, &memory)) {
    cli_error("translate", "cannot read the memory size '%s' (e.g. 512M, 2G)", memory_s);
    goto out;
  }
  if (!(strength >= 0 && strength <= 100)) {
    cli_error("translate", "--strength must be within 0..100");
    goto out;
  }
  if (scale != -1 && (scale < 0 || (scale > 0 && scale < 64))) {
    cli_error("translate", "--scale must be 0 (native) or a short side of at least 64 pixels");
    goto out;
  }
  if (threads < 0) {
    cli_error("translate", "--threads must be 0 (all cores) or more");
    goto out;
  }
  if (bits && bits != 8 && bits != 16 && bits != 32) {
    cli_error("translate", "--bits must be 8, 16 or 32");
    goto out;
  }
  if (quality != -1 && (quality < 1 || quality > 100)) {
    cli_error("translate", "--quality must be within 1..100");
    goto out;
  }
  i2i_img_type out_type = I2I_IMG_UNKNOWN;
  if (format_s) {
    gchar *fake = g_strconcat("x.", format_s, NULL);
    out_type = i2i_img_type_from_name(fake);
    g_free(fake);
    if (out_type == I2I_IMG_UNKNOWN) {
      cli_error("translate", "unknown format '%s' (png, jpeg, tiff, webp)", format_s);
      goto out;
    }
  }
  int npaths = argc - 2;
  if (argc < 3 || (!outdir && argc < 4)) {
    cli_error("translate", "expects MODEL IN OUT or MODEL IN... -o DIR (see --help)");
    goto out;
  }
  const char *dest = outdir ? outdir : argv[argc - 1];
  int nin = outdir ? npaths : npaths - 1;
  /* as with cp: an existing folder as the last path receives the output under the input's name */
  bool to_dir = outdir || nin > 1 || is_dir(argv[2]) || is_dir(dest);
  struct stat dsb;
  if (to_dir && !is_dir(dest) && stat(dest, &dsb) == 0) {
    cli_error("translate", "'%s' is not a folder: several inputs (or a folder) need an output folder", dest);
    goto out;
  }
  for (int i = 0; i < nin; i++) {
    if (is_dir(argv[2 + i])) add_dir(ins, argv[2 + i]);
    else g_ptr_array_add(ins, g_strdup(argv[2 + i]));
  }
  if (!ins->len) {
    cli_error("translate", "no images found in the input folder(s)");
    rc = 1;
    goto out;
  }
  for (guint i = 0; i < ins->len; i++)
    g_ptr_array_add(outs, to_dir ? out_name(dest, ins->pdata[i], out_type) : g_strdup(dest));
  if (check_pairs(ins, outs, out_type, bits)) goto out;
  ctx = cli_ctx(backend, threads, memory);
  if (!ctx) {
    rc = 1;
    goto out;
  }
  char *mpath = NULL;
  i2i_status st = i2i_model_find(ctx, argv[1], &mpath);
  const char *file = mpath ? mpath : argv[1];
  if (g_file_test(file, G_FILE_TEST_IS_REGULAR) && convert_is_checkpoint(file)) {
    cli_error("translate", "'%s' is a PyTorch checkpoint: convert it into ONNX models first with `i2i convert %s`, "
              "then use the .onnx it writes", file, file);
    i2i_free(ctx, mpath);
    rc = 1;
    goto out;
  }
  if (!st) st = i2i_model_load_file(ctx, mpath, &model);
  i2i_free(ctx, mpath);
  if (st) {
    cli_error("translate", "%s", i2i_ctx_errmsg(ctx));
    rc = 1;
    goto out;
  }
  if (to_dir && !is_dir(dest)) {
    made = missing_folders(dest);
    if (g_mkdir_with_parents(dest, 0777) != 0) {
      cli_error("translate", "cannot create the output folder '%s': %s", dest, g_strerror(errno));
      rc = 1;
      goto out;
    }
  }
  bool any_npy = false;
  for (guint i = 0; i < ins->len; i++) any_npy |= cli_has_ext(ins->pdata[i], ".npy");
  if (any_npy && (bits || format_s || quality != -1)) {
    const char *given[3];
    int ng = 0;
    if (format_s) given[ng++] = "--format";
    if (bits) given[ng++] = "--bits";
    if (quality != -1) given[ng++] = "--quality";
    cli_error("translate", "warning: %s%s%s%s%s %s not apply to .npy files, which are written as float32 arrays",
              given[0], ng > 1 ? (ng > 2 ? ", " : " and ") : "", ng > 1 ? given[1] : "", ng > 2 ? " and " : "",
              ng > 2 ? given[2] : "", ng > 1 ? "do" : "does");
  }
  job j = {0};
  j.ctx = ctx;
  j.model = model;
  i2i_run_default_params(&j.rp);
  j.rp.pix2pix_mode = mode;
  j.rp.seed = (uint64_t)seed;
  j.rp.strength = (float)(strength / 100.0);
  j.scale = scale;
  j.out_type = out_type;
  j.bits = bits;
  j.quality = quality > 0 ? quality : 0;
  j.n_files = ins->len;
  j.verbose = verbose;
  cli_progress bar;
  char label[64];
  snprintf(label, sizeof label, "translating %u file%s", ins->len, ins->len == 1 ? "" : "s");
  cli_progress_init(&bar, label);
  j.bar = &bar;
  int failed = 0;
  guint started = 0;
  image_file slot[2] = {{0}};
  interrupted = 0;
  struct sigaction old_int, old_term;
  catch_signal(SIGINT, &old_int);
  catch_signal(SIGTERM, &old_term);
  if (is_image_input(ins->pdata[0])) image_load(&slot[0], ins->pdata[0], outs->pdata[0]);
  for (guint i = 0; i < ins->len && !interrupted; i++) {
    const char *in = ins->pdata[i];
    const char *out = outs->pdata[i];
    image_file *cur = &slot[i % 2], *prev = &slot[(i + 1) % 2];
    char npy_err[1024] = "";
    const char *err = npy_err;
    j.file_base = (double)i / ins->len;
    j.file_span = 1.0 / ins->len;
    bool ok = false, nomem = false;
    started++;
    if (is_dir(in)) {
      snprintf(npy_err, sizeof npy_err, "cannot read the folder");
    } else if (!is_image_input(in)) {
      failed += save_finish(&j, prev); /* reports stay in the files' order */
      ok = translate_npy(&j, in, out, npy_err, sizeof npy_err);
    } else {
      err = cur->err;
      ok = cur->loaded && translate_image(&j, cur, &nomem);
      if (!ok && nomem && prev->active && !interrupted) {
        /* the image still being written may be what the run lacked */
        failed += save_finish(&j, prev);
        image_release(cur);
        image_load(cur, in, out);
        ok = cur->loaded && translate_image(&j, cur, &nomem);
      }
    }
    failed += save_finish(&j, prev);
    if (is_image_input(in)) report_warnings(cur);
    if (!ok && !interrupted) {
      cli_progress_done(&bar);
      cli_error("translate", "%s: %s", in, err);
      failed++;
    }
    if (!ok) image_release(cur);
    /* the next image is read while this one is written */
    bool more = i + 1 < ins->len && !interrupted && is_image_input(ins->pdata[i + 1]);
    if (ok && cur->active) save_start(cur, i + 1 < ins->len);
    if (more) image_load(prev, ins->pdata[i + 1], outs->pdata[i + 1]);
  }
  for (int k = 0; k < 2; k++) {
    failed += save_finish(&j, &slot[k]);
    image_release(&slot[k]); /* loaded ahead of an interruption */
  }
  sigaction(SIGINT, &old_int, NULL);
  sigaction(SIGTERM, &old_term, NULL);
  cli_progress_done(&bar);
  n_written = j.written;
  if (interrupted) {
    fprintf(stderr, "i2i translate: interrupted: %u of %u files written (each one whole), %u not started\n",
            j.written, ins->len, ins->len - started);
    rc = 128 + (int)interrupted;
    goto out;
  }
  if (failed && ins->len > 1) fprintf(stderr, "i2i translate: %d of %u files failed\n", failed, ins->len);
  rc = failed ? 1 : 0;
out:
  if (made) {
    /* an output folder this run made stays only when something was written into it */
    for (guint i = 0; i < made->len && !n_written; i++) (void)rmdir(made->pdata[i]);
    g_ptr_array_free(made, TRUE);
  }
  g_option_context_free(oc);
  g_ptr_array_free(ins, TRUE);
  g_ptr_array_free(outs, TRUE);
  i2i_model_free(model);
  i2i_ctx_free(ctx);
  g_free(outdir);
  g_free(backend_s);
  g_free(mode_s);
  g_free(memory_s);
  g_free(format_s);
  return rc;
}
