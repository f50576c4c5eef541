/* ui_gtk2.c: the GIMP 2.10 (GTK 2) dialog: live preview, options, device and timing line.
 *
 * The preview is a GimpDrawablePreview fed from the preview worker's cached whole-layer result
 * (preview.c), blended with the strength on the main thread, so strength changes redraw at
 * once and other changes start a new render (fast, then exact) after a short pause. Only the
 * main thread calls GTK or libgimp; the worker never blocks the dialog. No engine calls here
 * besides manifest and model-list queries. GIMP 3 gets its own ui file.
 */
#include <string.h>

#include "ui.h"

#include <libgimp/gimpui.h>

#define RENDER_DELAY_MS 150
#define POLL_MS 100
#define TICK_MS 20
#define PREVIEW_SIZE 320

typedef struct {
  const char *proc;
  const i2i_direction *dir;
  i2i_gimp_drawable drawable;
  const i2i_layer *L;
  i2i_opts o;
  i2i_ctx *mctx;                 /* manifest and model-list queries, main thread only */
  i2i_model_entry *models;       /* generic procedure: the installed models */
  size_t n_models;
  bool custom_model;             /* o.model is not in the list: the combo's last row */
  GtkWidget *dialog, *preview, *status, *progress;
  GtkWidget *model_combo, *variant_combo, *mode_combo, *seed_spin, *seed_button, *p2p_label1, *p2p_label2;
  i2i_previewer *pv;
  guint render_id, poll_id, tick_id;
  gint64 last_tick;
  double max_gap_ms;
  bool seen_busy;
  bool built;                    /* widgets complete: callbacks may act */
  float *tmp;
  size_t tmp_len;
  guchar *u8;
  size_t u8_len;
} ui_state;

bool i2i_ui_init(const char *binary, char **err) {
  *err = NULL;
  const gchar *dn = gimp_display_name();
  if (dn && *dn) g_setenv("DISPLAY", dn, TRUE);
  if (!gtk_init_check(NULL, NULL)) {
    *err = g_strdup("i2i: interactive mode needs a display, and none could be opened; call the procedure with "
                    "RUN-NONINTERACTIVE (batch mode) instead");
    return false;
  }
  gimp_ui_init(binary, FALSE);
  return true;
}

static bool is_unet(ui_state *u) {
  if (u->dir) return !strcmp(u->dir->family, "unet");
  if (!u->model_combo) return false;
  int i = gtk_combo_box_get_active(GTK_COMBO_BOX(u->model_combo));
  return i >= 0 && (size_t)i < u->n_models && u->models[i].family == I2I_FAMILY_UNET;
}

static bool has_id0(ui_state *u) {
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

static void set_status(ui_state *u, const char *text, bool error) {
  if (error) {
    char *m = g_markup_printf_escaped("<span foreground=\"#c01c28\">%s</span>", text);
    gtk_label_set_markup(GTK_LABEL(u->status), m);
    g_free(m);
  } else {
    gtk_label_set_text(GTK_LABEL(u->status), text);
  }
}

static void update_sensitivity(ui_state *u) {
  bool id0 = has_id0(u);
  if (!id0 && u->o.variant != I2I_VARIANT_STANDARD) {
    u->o.variant = I2I_VARIANT_STANDARD;
    gimp_int_combo_box_set_active(GIMP_INT_COMBO_BOX(u->variant_combo), I2I_VARIANT_STANDARD);
  }
  gtk_widget_set_sensitive(u->variant_combo, id0);
  bool p2p = is_unet(u);
  gtk_widget_set_sensitive(u->mode_combo, p2p);
  gtk_widget_set_sensitive(u->p2p_label1, p2p);
  gtk_widget_set_sensitive(u->p2p_label2, p2p);
  bool seeded = p2p && u->o.pix2pix_mode == I2I_PIX2PIX_FAITHFUL;
  gtk_widget_set_sensitive(u->seed_spin, seeded);
  gtk_widget_set_sensitive(u->seed_button, seeded);
}

static gboolean render_now(gpointer data) {
  ui_state *u = data;
  u->render_id = 0;
  char *err = NULL;
  char *name = i2i_model_name_for(u->mctx, u->dir, &u->o, &err);
  if (!name) {
    set_status(u, err, true);
    g_free(err);
    return G_SOURCE_REMOVE;
  }
  i2i_previewer_request(u->pv, &u->o, name);
  bool busy;
  (void)i2i_previewer_progress(u->pv, &busy);
  i2i_stage stage;
  const float *r = i2i_previewer_result(u->pv, &stage);
  if (busy) set_status(u, "Rendering the preview...", false);
  else if (r && stage == I2I_STAGE_EXACT) gimp_preview_invalidate(GIMP_PREVIEW(u->preview));
  g_free(name);
  return G_SOURCE_REMOVE;
}

/* Options that change the model's output: render again after a short pause. */
static void schedule_render(ui_state *u) {
  if (!u->built) return;
  if (u->render_id) g_source_remove(u->render_id);
  u->render_id = g_timeout_add(RENDER_DELAY_MS, render_now, u);
}

static void dump_preview(ui_state *u, int x, int y, int w, int h, int bpp, const guchar *data) {
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
  ui_state *u = data;
  i2i_stage stage;
  const float *res = i2i_previewer_result(u->pv, &stage);
  if (!res) {
    gimp_preview_draw(preview);
    return;
  }
  gint x, y, w, h;
  gimp_preview_get_position(preview, &x, &y);
  gimp_preview_get_size(preview, &w, &h);
  if (x < 0 || y < 0 || w < 1 || h < 1 || x + w > u->L->width || y + h > u->L->height) return;
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
  ui_state *u = user;
  set_status(u, ev->message, !ev->ok);
  gimp_help_set_help_data(u->status, ev->detail[0] ? ev->detail : NULL, NULL);
  gimp_preview_invalidate(GIMP_PREVIEW(u->preview));
}

static gboolean poll_progress(gpointer data) {
  ui_state *u = data;
  bool busy;
  double f = i2i_previewer_progress(u->pv, &busy);
  if (busy) {
    gtk_progress_bar_set_fraction(GTK_PROGRESS_BAR(u->progress), f);
    gtk_widget_show(u->progress);
    u->seen_busy = true;
  } else {
    gtk_widget_hide(u->progress);
  }
  return G_SOURCE_CONTINUE;
}

/* Measures the longest gap between main-loop ticks (I2I_VERBOSE): the dialog's latency. */
static gboolean tick(gpointer data) {
  ui_state *u = data;
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

static void on_strength(GtkAdjustment *adj, gpointer data) {
  ui_state *u = data;
  u->o.strength = gtk_adjustment_get_value(adj);
  gimp_preview_invalidate(GIMP_PREVIEW(u->preview));
}

static void on_device(GtkWidget *w, gpointer data) {
  ui_state *u = data;
  gint v;
  if (gimp_int_combo_box_get_active(GIMP_INT_COMBO_BOX(w), &v)) u->o.device = v;
  schedule_render(u);
}

static void on_variant(GtkWidget *w, gpointer data) {
  ui_state *u = data;
  gint v;
  if (gimp_int_combo_box_get_active(GIMP_INT_COMBO_BOX(w), &v)) u->o.variant = v;
  schedule_render(u);
}

static void on_scale(GtkWidget *w, gpointer data) {
  ui_state *u = data;
  gint v;
  if (gimp_int_combo_box_get_active(GIMP_INT_COMBO_BOX(w), &v)) u->o.scale = v;
  schedule_render(u);
}

static void on_mode(GtkWidget *w, gpointer data) {
  ui_state *u = data;
  gint v;
  if (gimp_int_combo_box_get_active(GIMP_INT_COMBO_BOX(w), &v)) u->o.pix2pix_mode = v;
  if (u->built) update_sensitivity(u);
  schedule_render(u);
}

static void on_seed(GtkSpinButton *s, gpointer data) {
  ui_state *u = data;
  u->o.seed = gtk_spin_button_get_value_as_int(s);
  schedule_render(u);
}

static void on_new_seed(GtkButton *b, gpointer data) {
  ui_state *u = data;
  gtk_spin_button_set_value(GTK_SPIN_BUTTON(u->seed_spin), g_random_int_range(0, G_MAXINT32));
}

static void on_memory(GtkSpinButton *s, gpointer data) {
  ui_state *u = data;
  u->o.memory_mb = gtk_spin_button_get_value_as_int(s);
}

static void on_model(GtkComboBox *c, gpointer data) {
  ui_state *u = data;
  int i = gtk_combo_box_get_active(c);
  if (i >= 0 && (size_t)i < u->n_models) g_strlcpy(u->o.model, u->models[i].task, sizeof u->o.model);
  if (u->built) update_sensitivity(u);
  schedule_render(u);
}

static int attach_row(GtkWidget *table, int row, const char *label, GtkWidget *w, GtkWidget **label_out) {
  GtkWidget *l = gimp_table_attach_aligned(GTK_TABLE(table), 0, row, label, 0.0, 0.5, w, 2, FALSE);
  if (label_out) *label_out = l;
  return row + 1;
}

static GtkWidget *scale_combo(int scale) {
  static const int presets[] = {256, 512, 768, 1024, 2048, 0};
  GtkWidget *c = gimp_int_combo_box_new("256 px (fast)", 256, "512 px (default)", 512, "768 px", 768, "1024 px",
                                        1024, "2048 px", 2048, "Native size (slow on large layers)", 0, NULL);
  bool found = false;
  for (size_t i = 0; i < G_N_ELEMENTS(presets); i++)
    if (presets[i] == scale) found = true;
  if (!found) {
    char *l = g_strdup_printf("%d px", scale);
    gimp_int_combo_box_append(GIMP_INT_COMBO_BOX(c), GIMP_INT_STORE_VALUE, scale, GIMP_INT_STORE_LABEL, l, -1);
    g_free(l);
  }
  return c;
}

static void build(ui_state *u, const char *title) {
  u->dialog = gimp_dialog_new(title, "i2i", NULL, 0, gimp_standard_help_func, u->proc, "_Cancel",
                              GTK_RESPONSE_CANCEL, "_OK", GTK_RESPONSE_OK, NULL);
  gtk_dialog_set_alternative_button_order(GTK_DIALOG(u->dialog), GTK_RESPONSE_OK, GTK_RESPONSE_CANCEL, -1);
  gtk_dialog_set_default_response(GTK_DIALOG(u->dialog), GTK_RESPONSE_OK);
  gimp_window_set_transient(GTK_WINDOW(u->dialog));

  GtkWidget *vbox = gtk_vbox_new(FALSE, 8);
  gtk_container_set_border_width(GTK_CONTAINER(vbox), 12);
  gtk_box_pack_start(GTK_BOX(gtk_dialog_get_content_area(GTK_DIALOG(u->dialog))), vbox, TRUE, TRUE, 0);

  /* a larger preview than GIMP's default (its style property "size") */
  gtk_rc_parse_string("style \"i2i-preview\" { GimpPreview::size = " G_STRINGIFY(PREVIEW_SIZE) " }\n"
                      "widget \"*.i2i-preview\" style \"i2i-preview\"\n");
  u->preview = gimp_drawable_preview_new_from_drawable_id(u->drawable);
  gtk_widget_set_name(u->preview, "i2i-preview");
  gtk_box_pack_start(GTK_BOX(vbox), u->preview, TRUE, TRUE, 0);
  g_signal_connect(u->preview, "invalidated", G_CALLBACK(preview_draw), u);

  u->status = gtk_label_new("");
  gtk_misc_set_alignment(GTK_MISC(u->status), 0.0, 0.5);
  gtk_label_set_line_wrap(GTK_LABEL(u->status), TRUE);
  gtk_label_set_selectable(GTK_LABEL(u->status), TRUE);
  gtk_widget_set_size_request(u->status, 320, -1);
  gtk_box_pack_start(GTK_BOX(vbox), u->status, FALSE, FALSE, 0);
  u->progress = gtk_progress_bar_new();
  gtk_widget_set_size_request(u->progress, -1, 8);
  gtk_box_pack_start(GTK_BOX(vbox), u->progress, FALSE, FALSE, 0);

  GtkWidget *table = gtk_table_new(8, 3, FALSE);
  gtk_table_set_col_spacings(GTK_TABLE(table), 6);
  gtk_table_set_row_spacings(GTK_TABLE(table), 4);
  gtk_box_pack_start(GTK_BOX(vbox), table, FALSE, FALSE, 0);
  int row = 0;

  if (!u->dir) {
    u->model_combo = gtk_combo_box_text_new();
    int active = -1;
    for (size_t i = 0; i < u->n_models; i++) {
      char *l = strcmp(u->models[i].label, u->models[i].task)
                    ? g_strdup_printf("%s (%s)", u->models[i].label, u->models[i].task)
                    : g_strdup(u->models[i].task);
      gtk_combo_box_text_append_text(GTK_COMBO_BOX_TEXT(u->model_combo), l);
      g_free(l);
      if (!strcmp(u->models[i].task, u->o.model) || !strcmp(u->models[i].path, u->o.model)) active = (int)i;
    }
    if (active < 0 && u->o.model[0]) {
      gtk_combo_box_text_append_text(GTK_COMBO_BOX_TEXT(u->model_combo), u->o.model);
      active = (int)u->n_models;
      u->custom_model = true;
    }
    if (active < 0) {
      active = 0;
      g_strlcpy(u->o.model, u->models[0].task, sizeof u->o.model);
    }
    gtk_combo_box_set_active(GTK_COMBO_BOX(u->model_combo), active);
    g_signal_connect(u->model_combo, "changed", G_CALLBACK(on_model), u);
    row = attach_row(table, row, "_Model:", u->model_combo, NULL);
  }

  GtkObject *adj = gimp_scale_entry_new(GTK_TABLE(table), 0, row++, "_Strength (%):", 200, 6, u->o.strength, 0, 100,
                                        1, 10, 1, TRUE, 0, 0, "Blend with the original: 0 leaves the layer unchanged",
                                        NULL);
  g_signal_connect(adj, "value-changed", G_CALLBACK(on_strength), u);

  GtkWidget *dev = gimp_int_combo_box_new("Automatic (GPU when usable)", I2I_DEVICE_AUTO, "GPU (CUDA)",
                                          I2I_DEVICE_GPU, "CPU", I2I_DEVICE_CPU, NULL);
  gimp_int_combo_box_connect(GIMP_INT_COMBO_BOX(dev), u->o.device, G_CALLBACK(on_device), u);
  row = attach_row(table, row, "_Device:", dev, NULL);

  GtkWidget *sc = scale_combo(u->o.scale);
  gimp_int_combo_box_connect(GIMP_INT_COMBO_BOX(sc), u->o.scale, G_CALLBACK(on_scale), u);
  gimp_help_set_help_data(sc, "The short side the model runs at; the change is brought back to full size", NULL);
  row = attach_row(table, row, "_Working size:", sc, NULL);

  u->variant_combo = gimp_int_combo_box_new("Standard", I2I_VARIANT_STANDARD, "id0 (no identity loss)",
                                            I2I_VARIANT_ID0, NULL);
  gimp_int_combo_box_connect(GIMP_INT_COMBO_BOX(u->variant_combo), u->o.variant, G_CALLBACK(on_variant), u);
  row = attach_row(table, row, "_Variant:", u->variant_combo, NULL);

  u->mode_combo = gimp_int_combo_box_new("Faithful (as published)", I2I_PIX2PIX_FAITHFUL,
                                         "Deterministic (no dropout)", I2I_PIX2PIX_DETERMINISTIC,
                                         "Eval (running statistics)", I2I_PIX2PIX_EVAL, NULL);
  gimp_int_combo_box_connect(GIMP_INT_COMBO_BOX(u->mode_combo), u->o.pix2pix_mode, G_CALLBACK(on_mode), u);
  row = attach_row(table, row, "Pix2Pix _mode:", u->mode_combo, &u->p2p_label1);

  GtkWidget *hbox = gtk_hbox_new(FALSE, 4);
  u->seed_spin = gimp_spin_button_new_with_range(G_MININT32, G_MAXINT32, 1);
  gtk_spin_button_set_value(GTK_SPIN_BUTTON(u->seed_spin), u->o.seed);
  g_signal_connect(u->seed_spin, "value-changed", G_CALLBACK(on_seed), u);
  gtk_box_pack_start(GTK_BOX(hbox), u->seed_spin, TRUE, TRUE, 0);
  u->seed_button = gtk_button_new_with_mnemonic("_New");
  gimp_help_set_help_data(u->seed_button, "Another dropout pattern (Pix2Pix faithful mode)", NULL);
  g_signal_connect(u->seed_button, "clicked", G_CALLBACK(on_new_seed), u);
  gtk_box_pack_start(GTK_BOX(hbox), u->seed_button, FALSE, FALSE, 0);
  row = attach_row(table, row, "Variation s_eed:", hbox, &u->p2p_label2);

  GtkWidget *mem = gimp_spin_button_new_with_range(0, I2I_MEMORY_MB_MAX, 256);
  gtk_spin_button_set_value(GTK_SPIN_BUTTON(mem), u->o.memory_mb);
  g_signal_connect(mem, "value-changed", G_CALLBACK(on_memory), u);
  gimp_help_set_help_data(mem, "Engine working-memory budget in MiB; 0 = automatic", NULL);
  row = attach_row(table, row, "Memory (MiB, 0 = auto):", mem, NULL);
  (void)row;

  u->built = true;
  update_sensitivity(u);
  gtk_widget_show_all(u->dialog);
  gtk_widget_hide(u->progress);
  /* centred on the selection */
  gint pw, ph;
  gimp_preview_get_size(GIMP_PREVIEW(u->preview), &pw, &ph);
  gimp_scrolled_preview_set_position(GIMP_SCROLLED_PREVIEW(u->preview), u->L->mx + (u->L->mw - pw) / 2,
                                     u->L->my + (u->L->mh - ph) / 2);
}

GimpPDBStatusType i2i_dialog_run(const char *proc, const i2i_direction *dir, i2i_gimp_drawable d,
                                 const i2i_layer *L, i2i_opts *o, char **model_name, float **cached,
                                 char **err) {
  *model_name = NULL;
  *cached = NULL;
  *err = NULL;
  ui_state u = {0};
  u.proc = proc;
  u.dir = dir;
  u.drawable = d;
  u.L = L;
  u.o = *o;
  if (i2i_ctx_create(NULL, &u.mctx) != I2I_OK) {
    *err = g_strdup("i2i: cannot create the engine context (out of memory)");
    return GIMP_PDB_EXECUTION_ERROR;
  }
  if (!dir) {
    if (i2i_model_list(u.mctx, &u.models, &u.n_models) != I2I_OK || u.n_models == 0) {
      *err = g_strdup_printf("i2i: no models are installed (looked in $I2I_MODEL_PATH, ~/.local/share/i2i/models "
                             "and the installed data folder); install one with e.g.: i2i fetch winter2summer "
                             "(i2i fetch --list shows all)%s%s",
                             u.models ? "" : ": ", u.models ? "" : i2i_ctx_errmsg(u.mctx));
      i2i_model_list_free(u.mctx, u.models, u.n_models);
      i2i_ctx_free(u.mctx);
      return GIMP_PDB_EXECUTION_ERROR;
    }
  }
  u.pv = i2i_previewer_new(L->pixels, L->width, L->height, NULL, on_event, &u);
  if (!u.pv) {
    *err = g_strdup("i2i: cannot start the preview thread");
    i2i_model_list_free(u.mctx, u.models, u.n_models);
    i2i_ctx_free(u.mctx);
    return GIMP_PDB_EXECUTION_ERROR;
  }
  build(&u, dir ? dir->label : "Translate with a model");
  u.poll_id = g_timeout_add(POLL_MS, poll_progress, &u);
  if (i2i_verbose()) u.tick_id = g_timeout_add(TICK_MS, tick, &u);
  render_now(&u);
  i2i_vlog("dialog shown");

  gint response = gimp_dialog_run(GIMP_DIALOG(u.dialog));
  GimpPDBStatusType status = GIMP_PDB_CANCEL;
  if (response == GTK_RESPONSE_OK) {
    char *name = i2i_model_name_for(u.mctx, dir, &u.o, err);
    if (name) {
      *model_name = name;
      *cached = i2i_previewer_take_exact(u.pv, &u.o, name);
      *o = u.o;
      status = GIMP_PDB_SUCCESS;
      i2i_vlog("OK: %s", *cached ? "the exact preview is reused" : "computing now");
    } else {
      status = GIMP_PDB_EXECUTION_ERROR;
    }
  }
  if (u.render_id) g_source_remove(u.render_id);
  g_source_remove(u.poll_id);
  if (u.tick_id) {
    g_source_remove(u.tick_id);
    if (u.seen_busy) i2i_vlog("longest main-loop stall while rendering: %.0f ms", u.max_gap_ms);
  }
  i2i_previewer_free(u.pv);
  gtk_widget_destroy(u.dialog);
  while (g_main_context_pending(NULL)) g_main_context_iteration(NULL, FALSE);
  g_free(u.tmp);
  g_free(u.u8);
  i2i_model_list_free(u.mctx, u.models, u.n_models);
  i2i_ctx_free(u.mctx);
  return status;
}
