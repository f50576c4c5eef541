/* ui_gtk3.c: the GIMP 3 (GTK 3) dialog: a GimpProcedureDialog bound to the procedure's config.
 *
 * The option widgets are the procedure dialog's own, generated from the typed arguments, so the
 * config (and with it the last values GIMP keeps across restarts) always holds what the dialog
 * shows; a notify handler keeps the shared state's options (i2i_ui.o) in step. The preview,
 * rendering and status logic is ui_preview.c's, shared with the GIMP 2.10 dialog. Only the main
 * thread calls GTK or libgimp; no engine calls here besides manifest and model-list queries.
 */
#include <string.h>

#include "gimp3_config.h"
#include "ui_priv.h"

#define PREVIEW_SIZE 320
#define STATUS_LINES 3

/* The widgets and config the callbacks need (i2i_ui.tk). */
typedef struct {
  GimpProcedureConfig *config;
  GtkWidget *model_combo, *variant, *mode, *seed, *seed_button;
  bool custom_model;   /* the combo's last row is o.model, not an installed model */
  bool syncing;        /* the code itself is setting the model combo */
} gtk3_widgets;

bool i2i_ui_init(const char *binary, char **err) {
  *err = NULL;
  /* what gimp_ui_init does first; it then calls gtk_init, which exits without a display */
  const gchar *dn = gimp_display_name();
  if (dn && *dn) g_setenv("DISPLAY", dn, TRUE);
  if (!gtk_init_check(NULL, NULL)) {
    *err = g_strdup("i2i: interactive mode needs a display, and none could be opened; call the procedure with "
                    "RUN-NONINTERACTIVE (batch mode) instead");
    return false;
  }
  gimp_ui_init(binary);
  return true;
}

static bool is_generic(i2i_ui *u) { return u->dir == NULL; }

static void update_sensitivity(i2i_ui *u) {
  gtk3_widgets *w = u->tk;
  bool id0 = i2i_ui_has_id0(u);
  if (!id0 && u->o.variant != I2I_VARIANT_STANDARD) g_object_set(w->config, "variant", I2I_VARIANT_STANDARD, NULL);
  gtk_widget_set_sensitive(w->variant, id0);
  bool p2p = i2i_ui_is_unet(u);
  gtk_widget_set_sensitive(w->mode, p2p);
  bool seeded = p2p && u->o.pix2pix_mode == I2I_PIX2PIX_FAITHFUL;
  gtk_widget_set_sensitive(w->seed, seeded);
  gtk_widget_set_sensitive(w->seed_button, seeded);
}

/* The combo row of the model the options name; -1 when it is not listed. */
static int model_row(i2i_ui *u) {
  for (size_t i = 0; i < u->n_models; i++)
    if (!strcmp(u->models[i].task, u->o.model) || !strcmp(u->models[i].path, u->o.model)) return (int)i;
  return -1;
}

static void sync_model_combo(i2i_ui *u) {
  gtk3_widgets *w = u->tk;
  if (!w->model_combo) return;
  int row = model_row(u);
  if (row < 0 && u->o.model[0]) {
    if (!w->custom_model) gtk_combo_box_text_append_text(GTK_COMBO_BOX_TEXT(w->model_combo), u->o.model);
    w->custom_model = true;
    row = (int)u->n_models;
  }
  w->syncing = true;
  gtk_combo_box_set_active(GTK_COMBO_BOX(w->model_combo), row);
  w->syncing = false;
}

static void on_config(GObject *config, GParamSpec *pspec, gpointer data) {
  i2i_ui *u = data;
  gtk3_widgets *w = u->tk;
  char *err = NULL;
  if (!i2i_opts_from_config(w->config, is_generic(u), &u->o, &err)) {
    g_free(err); /* an over-long model name typed into a script: OK reports it */
    return;
  }
  const char *n = pspec->name;
  if (!strcmp(n, "strength")) {
    i2i_ui_redraw(u);
  } else if (strcmp(n, "memory-mb")) {
    if (!strcmp(n, "model")) sync_model_combo(u);
    if (u->built) update_sensitivity(u);
    i2i_ui_schedule_render(u);
  }
}

static void on_model(GtkComboBox *c, gpointer data) {
  i2i_ui *u = data;
  gtk3_widgets *w = u->tk;
  int i = gtk_combo_box_get_active(c);
  if (w->syncing || i < 0 || (size_t)i >= u->n_models) return;
  g_object_set(w->config, "model", u->models[i].task, NULL);
}

static void on_new_seed(GtkButton *b, gpointer data) {
  i2i_ui *u = data;
  gtk3_widgets *w = u->tk;
  g_object_set(w->config, "seed", (gint)g_random_int_range(0, G_MAXINT32), NULL);
}

static GtkListStore *scale_store(int scale) {
  static const int presets[] = {256, 512, 768, 1024, 2048, 0};
  GtkListStore *s = gimp_int_store_new("256 px (fast)", 256, "512 px (default)", 512, "768 px", 768, "1024 px", 1024,
                                       "2048 px", 2048, "Native size (slow on large layers)", 0, NULL);
  bool found = false;
  for (size_t i = 0; i < G_N_ELEMENTS(presets); i++)
    if (presets[i] == scale) found = true;
  if (!found) {
    char *l = g_strdup_printf("%d px", scale);
    GtkTreeIter it;
    gtk_list_store_append(s, &it);
    gtk_list_store_set(s, &it, GIMP_INT_STORE_VALUE, scale, GIMP_INT_STORE_LABEL, l, -1);
    g_free(l);
  }
  return s;
}

/* An int argument as a combo of named values; the dialog takes over the store. */
static GtkWidget *int_combo(GimpProcedureDialog *dlg, const char *prop, GtkListStore *store, const char *tip) {
  GtkWidget *w = gimp_procedure_dialog_get_int_combo(dlg, prop, GIMP_INT_STORE(store));
  if (tip) gimp_help_set_help_data(w, tip, NULL);
  return w;
}

static void build(i2i_ui *u, gtk3_widgets *w, const char *title) {
  u->tk = w;
  u->sensitivity = update_sensitivity;
  w->config = u->call->config;
  if (is_generic(u) && !u->o.model[0]) {
    g_strlcpy(u->o.model, u->models[0].task, sizeof u->o.model);
    g_object_set(w->config, "model", u->o.model, NULL);
  }
  u->dialog = gimp_procedure_dialog_new(u->call->procedure, w->config, title);
  GimpProcedureDialog *dlg = GIMP_PROCEDURE_DIALOG(u->dialog);
  GList *rows = NULL;

  /* a larger preview than GIMP's default (its style property "size") */
  u->preview = gimp_procedure_dialog_get_drawable_preview(dlg, "preview", u->drawable);
  GtkCssProvider *css = gtk_css_provider_new();
  gtk_css_provider_load_from_data(css, "* { -GimpPreview-size: " G_STRINGIFY(PREVIEW_SIZE) "; }", -1, NULL);
  gtk_style_context_add_provider(gtk_widget_get_style_context(u->preview), GTK_STYLE_PROVIDER(css),
                                 GTK_STYLE_PROVIDER_PRIORITY_APPLICATION);
  g_object_unref(css);
  u->status = gimp_procedure_dialog_get_label(dlg, "status", "", FALSE, FALSE);
  gtk_label_set_xalign(GTK_LABEL(u->status), 0.0);
  gtk_label_set_yalign(GTK_LABEL(u->status), 0.0);
  gtk_label_set_line_wrap(GTK_LABEL(u->status), TRUE);
  gtk_label_set_selectable(GTK_LABEL(u->status), TRUE);
  gtk_label_set_max_width_chars(GTK_LABEL(u->status), 48);
  gtk_label_set_lines(GTK_LABEL(u->status), STATUS_LINES);
  gtk_label_set_ellipsize(GTK_LABEL(u->status), PANGO_ELLIPSIZE_END);
  /* room for STATUS_LINES lines from the start: a longer status must not resize the dialog */
  PangoLayout *pl = gtk_widget_create_pango_layout(u->status, "Ag\nAg\nAg");
  int lh = 0;
  pango_layout_get_pixel_size(pl, NULL, &lh);
  g_object_unref(pl);
  gtk_widget_set_size_request(u->status, -1, lh);
  GtkWidget *pbox = gimp_procedure_dialog_fill_box(dlg, "preview-box", "preview", "status", NULL);
  u->progress = gtk_progress_bar_new();
  gtk_box_pack_start(GTK_BOX(pbox), u->progress, FALSE, FALSE, 0);
  rows = g_list_append(rows, "preview-box");

  if (is_generic(u)) {
    GtkWidget *label = gimp_procedure_dialog_get_label(dlg, "model-label", "_Model:", FALSE, TRUE);
    GtkWidget *mbox = gimp_procedure_dialog_fill_box(dlg, "model-box", "model-label", NULL);
    gtk_orientable_set_orientation(GTK_ORIENTABLE(mbox), GTK_ORIENTATION_HORIZONTAL);
    gtk_box_set_spacing(GTK_BOX(mbox), 6);
    w->model_combo = gtk_combo_box_text_new();
    for (size_t i = 0; i < u->n_models; i++) {
      char *l = strcmp(u->models[i].label, u->models[i].task)
                    ? g_strdup_printf("%s (%s)", u->models[i].label, u->models[i].task)
                    : g_strdup(u->models[i].task);
      gtk_combo_box_text_append_text(GTK_COMBO_BOX_TEXT(w->model_combo), l);
      g_free(l);
    }
    sync_model_combo(u);
    g_signal_connect(w->model_combo, "changed", G_CALLBACK(on_model), u);
    gtk_label_set_mnemonic_widget(GTK_LABEL(label), w->model_combo);
    gtk_box_pack_start(GTK_BOX(mbox), w->model_combo, TRUE, TRUE, 0);
    rows = g_list_append(rows, "model-box");
  }

  GtkWidget *strength = gimp_procedure_dialog_get_scale_entry(dlg, "strength", 1.0);
  gimp_help_set_help_data(strength, "Blend with the original: 0 leaves the layer unchanged", NULL);
  int_combo(dlg, "device",
            gimp_int_store_new("Automatic (GPU when usable)", I2I_DEVICE_AUTO, "GPU (CUDA)", I2I_DEVICE_GPU, "CPU",
                               I2I_DEVICE_CPU, NULL),
            NULL);
  int_combo(dlg, "scale", scale_store(u->o.scale),
            "The short side the model runs at; the change is brought back to full size");
  w->variant = int_combo(dlg, "variant",
                         gimp_int_store_new("Standard", I2I_VARIANT_STANDARD, "id0 (no identity loss)",
                                            I2I_VARIANT_ID0, NULL),
                         NULL);
  w->mode = int_combo(dlg, "pix2pix-mode",
                      gimp_int_store_new("Faithful (as published)", I2I_PIX2PIX_FAITHFUL, "Deterministic (no dropout)",
                                         I2I_PIX2PIX_DETERMINISTIC, "Eval (running statistics)", I2I_PIX2PIX_EVAL,
                                         NULL),
                      NULL);
  w->seed = gimp_procedure_dialog_get_widget(dlg, "seed", G_TYPE_NONE);
  GtkWidget *sbox = gimp_procedure_dialog_fill_box(dlg, "seed-box", "seed", NULL);
  gtk_orientable_set_orientation(GTK_ORIENTABLE(sbox), GTK_ORIENTATION_HORIZONTAL);
  gtk_box_set_spacing(GTK_BOX(sbox), 4);
  w->seed_button = gtk_button_new_with_mnemonic("_New");
  gimp_help_set_help_data(w->seed_button, "Another dropout pattern (Pix2Pix faithful mode)", NULL);
  g_signal_connect(w->seed_button, "clicked", G_CALLBACK(on_new_seed), u);
  gtk_box_pack_start(GTK_BOX(sbox), w->seed_button, FALSE, FALSE, 0);
  GtkWidget *mem = gimp_procedure_dialog_get_widget(dlg, "memory-mb", G_TYPE_NONE);
  gimp_help_set_help_data(mem, "Engine working-memory budget in MiB; 0 = automatic", NULL);

  const char *opts[] = {"strength", "device", "scale", "variant", "pix2pix-mode", "seed-box", "memory-mb"};
  for (size_t i = 0; i < G_N_ELEMENTS(opts); i++) rows = g_list_append(rows, (gpointer)opts[i]);
  gimp_procedure_dialog_fill_list(dlg, rows);
  g_list_free(rows);
  g_signal_connect(w->config, "notify", G_CALLBACK(on_config), u);
  /* strength is what users change most: the keyboard starts there */
  GtkWidget *spin = gimp_label_spin_get_spin_button(GIMP_LABEL_SPIN(strength));
  if (spin) gtk_widget_grab_focus(spin);
}

GimpPDBStatusType i2i_dialog_run(const i2i_gimp_call *call, const i2i_direction *dir, i2i_gimp_drawable d,
                                 const i2i_layer *L, i2i_opts *o, char **model_name, float **cached,
                                 char **err) {
  *model_name = NULL;
  *cached = NULL;
  i2i_ui u;
  if (!i2i_ui_begin(&u, call, dir, d, L, o, err)) return GIMP_PDB_EXECUTION_ERROR;
  gtk3_widgets w = {0};
  build(&u, &w, dir ? dir->label : "Translate with a model");
  i2i_ui_start(&u);
  gboolean ok = gimp_procedure_dialog_run(GIMP_PROCEDURE_DIALOG(u.dialog));
  g_signal_handlers_disconnect_by_data(w.config, &u);
  if (ok && !i2i_opts_from_config(w.config, is_generic(&u), &u.o, err)) {
    char *none = NULL;
    (void)i2i_ui_finish(&u, false, o, model_name, cached, &none);
    gtk_widget_destroy(u.dialog);
    i2i_ui_end(&u);
    return GIMP_PDB_CALLING_ERROR;
  }
  GimpPDBStatusType status = i2i_ui_finish(&u, ok, o, model_name, cached, err);
  gtk_widget_destroy(u.dialog);
  i2i_ui_end(&u);
  return status;
}
