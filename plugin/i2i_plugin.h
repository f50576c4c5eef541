/* i2i_plugin.h: the GIMP-version-neutral core of the i2i GIMP plug-in.
 *
 * Declares the option set every procedure takes (table, defaults, range checks), the list of
 * procedures derived from the weights manifest, model lookup and loading for a procedure, the
 * engine runs, the strength blend and the preview worker. Nothing here includes libgimp or GTK:
 * the GIMP 2.10 glue (plugin_gimp2.c, ui_gtk2.c) and the GIMP 3 glue (plugin_gimp3.c,
 * ui_gtk3.c) are its clients, and pixel I/O through GIMP lives in pixels.c behind gimp_compat.h.
 * No ML here: the engine does it.
 */
#ifndef I2I_PLUGIN_H
#define I2I_PLUGIN_H

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "i2i.h"

#define I2I_PLUG_IN_BINARY   "i2i"
#define I2I_PROC_PREFIX      "plug-in-i2i-"
#define I2I_PROC_GENERIC     "plug-in-i2i-translate"
#define I2I_MENU_PATH        "<Image>/Filters/Translate"
#define I2I_IMAGE_TYPES      "RGB*, GRAY*"
#define I2I_MODEL_MAX        1024   /* bytes for the generic procedure's model name or path */

/* ---------------------------------------------------------------------------------------------
 * Options: the arguments after (run-mode image drawable [model]), in PDB order.
 * ------------------------------------------------------------------------------------------- */

enum { I2I_DEVICE_AUTO = 0, I2I_DEVICE_GPU = 1, I2I_DEVICE_CPU = 2 };
enum { I2I_VARIANT_STANDARD = 0, I2I_VARIANT_ID0 = 1 };

/* Plain data, stored as is by the last-values mechanism: no pointers. */
typedef struct {
  double strength;        /* percent, 0..100 */
  int32_t device;         /* I2I_DEVICE_* */
  int32_t variant;        /* I2I_VARIANT_* */
  int32_t seed;           /* Pix2Pix variation seed, any value (as `i2i translate --seed`) */
  int32_t pix2pix_mode;   /* i2i_pix2pix_mode: 0 faithful, 1 deterministic, 2 eval */
  int32_t scale;          /* working short side in pixels, 0 = native, else 64..I2I_SCALE_MAX */
  int32_t memory_mb;      /* engine memory budget in MiB, 0 = automatic */
  char model[I2I_MODEL_MAX]; /* generic procedure only: task name or .onnx path */
} i2i_opts;

#define I2I_SCALE_DEFAULT 512        /* the `i2i translate` default for images */
#define I2I_SCALE_MIN     64
#define I2I_SCALE_MAX     65536
#define I2I_MEMORY_MB_MAX 1048576    /* 1 TiB */
#define I2I_FAST_SCALE    256        /* the dialog's first, fast preview */

typedef enum { I2I_ARG_FLOAT, I2I_ARG_INT, I2I_ARG_STRING } i2i_arg_type;

/* One PDB argument after the drawable. `min`/`max` bound FLOAT and INT values (INT32 limits
 * where the argument has no range); the description is what the procedure browser shows, the
 * nick the label GIMP 3's generated dialogs give it (with a mnemonic). */
typedef struct {
  const char *name;
  i2i_arg_type type;
  double min, max, def;
  const char *desc;
  const char *nick;
} i2i_arg_def;

/* The argument table, in order: strength device variant seed pix2pix-mode scale memory-mb.
 * `*n` receives the count. Static storage. */
const i2i_arg_def *i2i_arg_table(size_t *n);
/* The generic procedure's extra `model` argument (it comes before the table's). */
const i2i_arg_def *i2i_arg_model(void);

/* Fills `o` with the defaults (strength 100, auto device, standard variant, seed 0, faithful,
 * scale 512, automatic memory, no model). */
void i2i_opts_default(i2i_opts *o);

/* Range-checks every value of `o` (not whether a model exists). Returns NULL when all are in
 * range, otherwise a newly allocated message naming the argument, its value and its range;
 * the caller frees it with g_free. */
char *i2i_opts_check(const i2i_opts *o);

/* ---------------------------------------------------------------------------------------------
 * Procedures: one per base direction of the manifest, plus the generic one.
 * ------------------------------------------------------------------------------------------- */

typedef struct {
  char *proc;         /* "plug-in-i2i-winter2summer" */
  char *task;         /* "winter2summer" */
  char *id0_task;     /* "winter2summer-id0", or NULL when the direction has no id0 variant */
  char *label;        /* "Winter to Summer" */
  char *family;       /* "resnet" or "unet" */
  char *blurb;        /* one line for the procedure browser */
  char *help;         /* a paragraph: domains, checkpoint, install command, arguments */
} i2i_direction;

/* Builds the direction list from the manifest of `ctx` (entries with variant 0, in manifest
 * order; procedure names made PDB-canonical, duplicates dropped). Returns the count; *out is
 * freed with i2i_directions_free. 0 with *out NULL when the manifest is empty or unreadable. */
size_t i2i_directions_load(i2i_ctx *ctx, i2i_direction **out);
void i2i_directions_free(i2i_direction *d, size_t n);
/* Builds one direction per installed model (i2i_model_list) that the manifest does not publish:
 * fine-tuned and user-converted models. Its procedure is plug-in-i2i-<task> (PDB-canonical),
 * its label the model's menu label, with " (<task>)" added where it equals a published or an
 * earlier label; id0_task is NULL; family is "resnet", "unet" or "unknown". Models whose
 * procedure name equals a published direction's, the generic procedure's or an earlier one's
 * are left to the generic procedure. `published` (np entries) is i2i_directions_load's list.
 * Returns the count; *out is freed with i2i_directions_free; 0 with *out NULL when none. */
size_t i2i_directions_installed(i2i_ctx *ctx, const i2i_direction *published, size_t np, i2i_direction **out);
/* The direction whose procedure name is `proc`, or NULL. */
const i2i_direction *i2i_direction_find(const i2i_direction *d, size_t n, const char *proc);

/* ---------------------------------------------------------------------------------------------
 * Models
 * ------------------------------------------------------------------------------------------- */

/* The model name a run uses: the direction's task or its id0 task (dir != NULL), or the generic
 * procedure's `o->model`, whose variant 1 means the manifest's id0 sibling of a published task.
 * Returns a newly allocated name, or NULL with *err set (variant without an id0 model, empty
 * name); both are freed with g_free. */
char *i2i_model_name_for(i2i_ctx *ctx, const i2i_direction *dir, const i2i_opts *o, char **err);

/* Finds and loads the model `name` (task or path) and checks that it is an image-to-image
 * generator. On success returns the model (freed with i2i_model_free) and, when `path` is not
 * NULL, its file (g_free). On failure returns NULL and *err (g_free) says why: the engine's
 * message, which names the install command for a missing published model, or the reason the
 * file is refused (a discriminator, not a generator, malformed). */
i2i_model *i2i_model_open(i2i_ctx *ctx, const char *name, char **path, char **err);

/* ---------------------------------------------------------------------------------------------
 * Running
 * ------------------------------------------------------------------------------------------- */

/* Creates an engine context for these options (backend from `device`, memory budget). NULL
 * with *err (g_free) on failure. */
i2i_ctx *i2i_ctx_for(const i2i_opts *o, char **err);

/* Fills engine run parameters from the options; `strength_override` < 0 keeps o->strength,
 * otherwise it gives the strength as a fraction (the preview runs at 1 and blends later). */
void i2i_run_params_for(const i2i_opts *o, double strength_override, int scale, i2i_run_params *rp);

/* Bytes for `npix` interleaved float RGBA pixels; false on overflow. */
bool i2i_rgba_bytes(size_t width, size_t height, size_t *bytes);

/* out = in + s * (res - in) on RGB with `in` clamped to [0,1] as the engine clamps it, alpha
 * copied from `in`: the engine's strength blend, applied to a strength-1 result. Rows of
 * `width` pixels, `stride_px` pixels apart in `in` and `res` and `out_stride_px` apart in `out`;
 * `out` may be `res` (same stride) for an in-place blend. */
void i2i_blend_rows(const float *in, const float *res, size_t stride_px, int width, int height,
                    float s, float *out, size_t out_stride_px);

/* Milliseconds since the plug-in process started (for the I2I_VERBOSE timing lines). */
double i2i_ms_since_start(void);
/* CPU seconds the process has used so far, all threads (user + system). */
double i2i_cpu_seconds(void);
/* True when $I2I_VERBOSE is set to something other than "" or "0". */
bool i2i_verbose(void);
/* Prints "i2i: <message>" to stderr when verbose. */
void i2i_vlog(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

/* ---------------------------------------------------------------------------------------------
 * The preview worker: whole-layer runs in a thread, fast (short side 256) then exact.
 * ------------------------------------------------------------------------------------------- */

typedef struct i2i_previewer i2i_previewer;

typedef enum { I2I_STAGE_NONE = 0, I2I_STAGE_FAST = 1, I2I_STAGE_EXACT = 2 } i2i_stage;

/* What a finished (or failed) stage reports, on the main thread. */
typedef struct {
  i2i_stage stage;
  bool ok;
  char message[768];     /* the error when !ok; else the device line ("CPU, 1.2 s ...") */
  char detail[512];      /* the engine's full reason for its device choice, or "" */
} i2i_preview_event;

/* Called on the thread that owns `main_context` (the GTK main thread), never on the worker. */
typedef void (*i2i_preview_notify)(void *user, const i2i_preview_event *ev);

/* Starts the worker on `input` (width x height interleaved float RGBA; borrowed, must outlive
 * the previewer and stay unchanged). Returns NULL when the thread cannot start. */
i2i_previewer *i2i_previewer_new(const float *input, int width, int height,
                                 GMainContext *main_context, i2i_preview_notify notify, void *user);

/* Asks for a render of these options with the model `name` (task or path); cancels a render in
 * progress for older options. When the exact result for equal options is cached, nothing is
 * computed: its event is delivered again at once (to `notify`, on this thread) and the call
 * returns true; otherwise false. Call on the main thread. */
bool i2i_previewer_request(i2i_previewer *p, const i2i_opts *o, const char *name);

/* The latest result delivered (strength 1; while a render runs it may be of earlier options),
 * or NULL; *stage says which stage. Valid on the main thread until the next event is delivered,
 * i2i_previewer_take_exact or the previewer is freed. */
const float *i2i_previewer_result(i2i_previewer *p, i2i_stage *stage);

/* The render progress in [0,1] and whether a render is running, for a progress bar. */
double i2i_previewer_progress(i2i_previewer *p, bool *busy);

/* Hands over the exact cached result when it was computed for options equal to `o` (strength
 * aside) and model `name`; the caller then owns it (g_free) and the previewer forgets it.
 * NULL otherwise. */
float *i2i_previewer_take_exact(i2i_previewer *p, const i2i_opts *o, const char *name);

/* Cancels any render, joins the thread and frees everything. NULL is accepted. */
void i2i_previewer_free(i2i_previewer *p);

#endif
