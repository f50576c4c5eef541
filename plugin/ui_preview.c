/* ui_preview.c: the dialog logic both toolkits share (GTK 2 for GIMP 2.10, GTK 3 for GIMP 3).
 *
 * The preview is a GimpDrawablePreview fed from the preview worker's cached whole-layer result
 * (preview.c), blended with the strength on the main thread, so strength changes redraw at
 * once and other changes start a new render (fast, then exact) after a short pause. Only the
 * main thread calls GTK or libgimp. The calls used here have the same names in GTK 2 and 3 and
 * in libgimpui 2.0 and 3.0; widgets and the dialog itself are ui_gtk2.c's and ui_gtk3.c's.
 */
#include <string.h>

#include "ui_priv.h"

#define RENDER_DELAY_MS 150
#define POLL_MS 100
#define TICK_MS 20

static void on_event(void *user, const i2i_preview_event *ev);

bool i2i_ui_begin(i2i_ui *u, const i2i_gimp_call *call, const i2i_direction *dir, i2i_gimp_drawable d,
                  const i2i_layer *L, const i2i_opts *o, char **err) {
  memset(u, 0, sizeof *u);
  *err = NULL;
  u->call = call;
  u->dir = dir;
  u->drawable = d;
  u->L = L;
  u->o = *o;
  if (i2i_ctx_create(NULL, &u->mctx) != I2I_OK) {
    *err = g_strdup("i2i: cannot create the engine context (out of memory)");
    return false;
  }
  if (!dir) {
    if (i2i_model_list(u->mctx, &u->models, &u->n_models) != I2I_OK || u->n_models == 0) {
      *err = g_strdup_printf("i2i: no models are installed (looked in $I2I_MODEL_PATH, ~/.local/share/i2i/models "
                             "and the installed data folder); install one with e.g.: i2i fetch winter2summer "
                             "(i2i fetch --list shows all)%s%s",
                             u->models ? "" : ": ", u->models ? "" : i2i_ctx_errmsg(u->mctx));
      i2i_ui_end(u);
      return false;
    }
  }
  /* babl builds a conversion the first time it is asked for one (about 0.1 s): here, not while
   * the dialog is on screen */
  double t0 = i2i_ms_since_start();
  (void)babl_fish(L->rgba_float, L->preview_format);
  i2i_vlog("preview conversion ready: %.1f ms", i2i_ms_since_start() - t0);
  u->pv = i2i_previewer_new(L->pixels, L->width, L->height, NULL, on_event, u);
  if (!u->pv) {
    *err = g_strdup("i2i: cannot start the preview thread");
    i2i_ui_end(u);
    return false;
  }
  return true;
}

bool i2i_ui_is_unet(i2i_ui *u) {
  if (u->dir) return !strcmp(u->dir->family, "unet");
  for (size_t i = 0; i < u->n_models; i++)
    if (!strcmp(u->models[i].task, u->o.model) || !strcmp(u->models[i].path, u->o.model))
      return u->models[i].family == I2I_FAMILY_UNET;
  return false;
}

bool i2i_ui_has_id0(i2i_ui *u) {
  if (u->dir) return u->dir->id0_task != NULL;
  i2i_opts t = u->o;
  t.variant = I2I_VARIANT_ID0;
  char *err = NULL;
  char *n = i2i_model_name_for(u->mctx, NULL, &t, &err);
  bool ok = n != NULL;
  g_free(n);
  g_free(err);
  return ok;
}

static void set_status(i2i_ui *u, const char *text, bool error) {
  if (error) {
    char *m = g_markup_printf_escaped("<span foreground=\"#c01c28\">%s</span>", text);
    gtk_label_set_markup(GTK_LABEL(u->status), m);
    g_free(m);
  } else {
    gtk_label_set_text(GTK_LABEL(u->status), text);
  }
}

void i2i_ui_redraw(i2i_ui *u) {
  if (u->preview) gimp_preview_invalidate(GIMP_PREVIEW(u->preview));
}

static gboolean render_now(gpointer data) {
  i2i_ui *u = data;
  u->render_id = 0;
  char *err = NULL;
  char *name = i2i_model_name_for(u->mctx, u->dir, &u->o, &err);
  if (!name) {
    set_status(u, err, true);
    g_free(err);
    return G_SOURCE_REMOVE;
  }
  /* a cached result is shown again by its event; otherwise a render is on its way */
  if (!i2i_previewer_request(u->pv, &u->o, name)) set_status(u, "Rendering the preview...", false);
  g_free(name);
  return G_SOURCE_REMOVE;
}

void i2i_ui_schedule_render(i2i_ui *u) {
  if (!u->built) return;
  if (u->render_id) g_source_remove(u->render_id);
  u->render_id = g_timeout_add(RENDER_DELAY_MS, render_now, u);
}

static void dump_preview(i2i_ui *u, int x, int y, int w, int h, int bpp, const guchar *data) {
  const char *path = g_getenv("I2I_PREVIEW_DUMP");
  if (!path || !*path) return;
  GString *s = g_string_new(NULL);
  char sbuf[G_ASCII_DTOSTR_BUF_SIZE];
  g_string_append_printf(s, "I2IPREVIEW %d %d %d %d %d %s\n", x, y, w, h, bpp,
                         g_ascii_dtostr(sbuf, sizeof sbuf, u->o.strength));
  g_string_append_len(s, (const char *)data, (gssize)w * h * bpp);
  if (!g_file_set_contents(path, s->str, (gssize)s->len, NULL)) i2i_vlog("cannot write %s", path);
  g_string_free(s, TRUE);
}

static void preview_draw(GimpPreview *preview, gpointer data) {
  i2i_ui *u = data;
  i2i_stage stage;
  const float *res = i2i_previewer_result(u->pv, &stage);
  if (!res) {
    gimp_preview_draw(preview);
    return;
  }
  gint x, y, w, h;
  gimp_preview_get_position(preview, &x, &y);
  gimp_preview_get_size(preview, &w, &h);
  if (x < 0 || y < 0 || w < 1 || h < 1 || x > u->L->width - w || y > u->L->height - h) return;
  size_t n = (size_t)w * (size_t)h;
  if (n * 4 > u->tmp_len) {
    g_free(u->tmp);
    u->tmp = g_new(float, n * 4);
    u->tmp_len = n * 4;
    g_free(u->u8);
    u->u8 = g_new(guchar, n * 4);
    u->u8_len = n * 4;
  }
  size_t off = ((size_t)y * (size_t)u->L->width + (size_t)x) * 4;
  i2i_blend_rows(u->L->pixels + off, res + off, (size_t)u->L->width, w, h, (float)(u->o.strength / 100.0), u->tmp,
                 (size_t)w);
  int bpp = i2i_layer_to_preview(u->L, u->tmp, w, h, u->u8);
  gimp_preview_draw_buffer(preview, u->u8, w * bpp);
  if (stage == I2I_STAGE_EXACT) {
    dump_preview(u, x, y, w, h, bpp, u->u8);
    i2i_vlog("preview drawn (exact) at %d,%d %dx%d", x, y, w, h);
  }
}

static void on_event(void *user, const i2i_preview_event *ev) {
  i2i_ui *u = user;
  set_status(u, ev->message, !ev->ok);
  gimp_help_set_help_data(u->status, ev->detail[0] ? ev->detail : NULL, NULL);
  i2i_ui_redraw(u);
}

static gboolean poll_progress(gpointer data) {
  i2i_ui *u = data;
  bool busy;
  double f = i2i_previewer_progress(u->pv, &busy);
  /* child-visible, not shown/hidden: the bar keeps its place, so the dialog is not laid out anew */
  if (busy) {
    gtk_progress_bar_set_fraction(GTK_PROGRESS_BAR(u->progress), f);
    u->seen_busy = true;
  }
  if (gtk_widget_get_child_visible(u->progress) != busy) gtk_widget_set_child_visible(u->progress, busy);
  return G_SOURCE_CONTINUE;
}

/* Measures the longest gap between main-loop ticks (I2I_VERBOSE): the dialog's latency. */
static gboolean tick(gpointer data) {
  i2i_ui *u = data;
  gint64 now = g_get_monotonic_time();
  bool busy;
  (void)i2i_previewer_progress(u->pv, &busy);
  if (u->last_tick && busy) {
    double gap = (now - u->last_tick) / 1000.0 - TICK_MS;
    if (gap > u->max_gap_ms) u->max_gap_ms = gap;
  }
  u->last_tick = now;
  return G_SOURCE_CONTINUE;
}

void i2i_ui_start(i2i_ui *u) {
  g_signal_connect(u->preview, "invalidated", G_CALLBACK(preview_draw), u);
  u->built = true;
  if (u->sensitivity) u->sensitivity(u);
  gtk_widget_show_all(u->dialog);
  gtk_widget_set_child_visible(u->progress, FALSE);
  /* centred on the selection */
  gint pw, ph;
  gimp_preview_get_size(GIMP_PREVIEW(u->preview), &pw, &ph);
  gimp_scrolled_preview_set_position(GIMP_SCROLLED_PREVIEW(u->preview), u->L->mx + (u->L->mw - pw) / 2,
                                     u->L->my + (u->L->mh - ph) / 2);
  u->poll_id = g_timeout_add(POLL_MS, poll_progress, u);
  if (i2i_verbose()) u->tick_id = g_timeout_add(TICK_MS, tick, u);
  render_now(u);
  char sb[G_ASCII_DTOSTR_BUF_SIZE];
  i2i_vlog("dialog shown: strength %s, device %d, variant %d, seed %d, pix2pix-mode %d, scale %d, memory-mb %d%s%s",
           g_ascii_dtostr(sb, sizeof sb, u->o.strength), (int)u->o.device, (int)u->o.variant, (int)u->o.seed,
           (int)u->o.pix2pix_mode, (int)u->o.scale, (int)u->o.memory_mb, u->dir ? "" : ", model ", u->dir ? "" : u->o.model);
}

GimpPDBStatusType i2i_ui_finish(i2i_ui *u, bool ok, i2i_opts *o, char **model_name, float **cached, char **err) {
  *model_name = NULL;
  *cached = NULL;
  *err = NULL;
  GimpPDBStatusType status = GIMP_PDB_CANCEL;
  if (ok) {
    char *name = i2i_model_name_for(u->mctx, u->dir, &u->o, err);
    if (name) {
      *model_name = name;
      *cached = i2i_previewer_take_exact(u->pv, &u->o, name);
      *o = u->o;
      status = GIMP_PDB_SUCCESS;
      i2i_vlog("OK: %s", *cached ? "the exact preview is reused" : "computing now");
    } else {
      status = GIMP_PDB_EXECUTION_ERROR;
    }
  }
  if (u->render_id) g_source_remove(u->render_id);
  u->render_id = 0;
  if (u->poll_id) g_source_remove(u->poll_id);
  u->poll_id = 0;
  if (u->tick_id) {
    g_source_remove(u->tick_id);
    u->tick_id = 0;
    if (u->seen_busy) i2i_vlog("longest main-loop stall while rendering: %.0f ms", u->max_gap_ms);
  }
  i2i_previewer_free(u->pv);
  u->pv = NULL;
  u->built = false;
  return status;
}

void i2i_ui_end(i2i_ui *u) {
  while (g_main_context_pending(NULL)) g_main_context_iteration(NULL, FALSE);
  g_free(u->tmp);
  g_free(u->u8);
  i2i_model_list_free(u->mctx, u->models, u->n_models);
  i2i_ctx_free(u->mctx);
  memset(u, 0, sizeof *u);
}
