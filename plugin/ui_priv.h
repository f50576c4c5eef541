/* ui_priv.h: the dialog state and preview logic shared by ui_gtk2.c and ui_gtk3.c.
 *
 * ui_preview.c owns what both toolkits do the same way: the engine context for model queries,
 * the installed-model list, the preview worker, render scheduling, drawing the strength-blended
 * result into the GimpDrawablePreview, the status line and progress bar, and the stall timer.
 * The toolkit files build the widgets, keep i2i_ui.o in step with them and run the dialog.
 */
#ifndef I2I_UI_PRIV_H
#define I2I_UI_PRIV_H

#include "ui.h"

#include <libgimp/gimpui.h> /* after libgimp/gimp.h (via ui.h): 2.10's gimpui.h needs it first */

typedef struct i2i_ui i2i_ui;

struct i2i_ui {
  const i2i_gimp_call *call;
  const i2i_direction *dir;      /* NULL: the generic procedure */
  i2i_gimp_drawable drawable;
  const i2i_layer *L;
  i2i_opts o;                    /* the options shown; the toolkit file keeps it current */
  i2i_ctx *mctx;                 /* manifest and model-list queries, main thread only */
  i2i_model_entry *models;       /* generic procedure: the installed models */
  size_t n_models;
  GtkWidget *dialog, *preview, *status, *progress; /* set by the toolkit file */
  void (*sensitivity)(i2i_ui *u); /* the toolkit file's: enable the options that apply */
  void *tk;                      /* the toolkit file's own widgets */
  bool built;                    /* widgets complete: callbacks may act */
  /* ui_preview.c's */
  i2i_previewer *pv;
  guint render_id, poll_id, tick_id;
  gint64 last_tick;
  double max_gap_ms;
  bool seen_busy;
  float *tmp;
  size_t tmp_len;
  guchar *u8;
  size_t u8_len;
};

/* Prepares `u` for a dialog: copies the arguments (borrowed; they must outlive the dialog),
 * creates the query context, lists the installed models for the generic procedure and starts
 * the preview worker. False with *err (g_free) when no model is installed (generic) or the
 * worker cannot start; `u` is then cleaned up. */
bool i2i_ui_begin(i2i_ui *u, const i2i_gimp_call *call, const i2i_direction *dir, i2i_gimp_drawable d,
                  const i2i_layer *L, const i2i_opts *o, char **err);

/* Once u->dialog, u->preview, u->status and u->progress exist: connects the preview, applies
 * the sensitivity, shows the dialog, centres the preview on the selection, starts the timers
 * and the first render. */
void i2i_ui_start(i2i_ui *u);

/* Whether the model the options name is a Pix2Pix (U-Net) one, and whether it has an id0
 * variant. */
bool i2i_ui_is_unet(i2i_ui *u);
bool i2i_ui_has_id0(i2i_ui *u);

/* Options that change the model's output changed: render again after a short pause. */
void i2i_ui_schedule_render(i2i_ui *u);
/* Only the strength changed: redraw from the cached result. */
void i2i_ui_redraw(i2i_ui *u);

/* After the dialog's main loop: on `ok`, the model name and the exact cached result for u->o
 * (copied to *o); stops the timers and the worker. Returns the status as i2i_dialog_run does.
 * The caller then destroys u->dialog and calls i2i_ui_end. */
GimpPDBStatusType i2i_ui_finish(i2i_ui *u, bool ok, i2i_opts *o, char **model_name, float **cached, char **err);

/* Processes pending events and frees what i2i_ui_begin and the preview allocated. */
void i2i_ui_end(i2i_ui *u);

#endif
