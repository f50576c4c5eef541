/* ui_gtk2.c: the GIMP 2.10 (GTK 2) dialog: a hand-built GimpDialog with the preview, the
 * options, the device and timing line.
 *
 * The widgets are plain GTK 2 / libgimpui 2.0 ones whose callbacks keep the shared state's
 * options (i2i_ui.o) current; the preview, rendering and status logic is ui_preview.c's, shared
 * with the GIMP 3 dialog (ui_gtk3.c). Only the main thread calls GTK or libgimp. No engine calls
 * here besides manifest and model-list queries.
 */
#include <string.h>

#include "ui_priv.h"

#define PREVIEW_SIZE 320

/* The GTK 2 widgets the callbacks need (i2i_ui.tk). */
typedef struct {
  GtkWidget *model_combo, *variant_combo, *mode_combo, *seed_spin, *seed_button, *p2p_label1, *p2p_label2;
} gtk2_widgets;

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

static void update_sensitivity(i2i_ui *u) {
  gtk2_widgets *w = u->tk;
  bool id0 = i2i_ui_has_id0(u);
  if (!id0 && u->o.variant != I2I_VARIANT_STANDARD) {
    u->o.variant = I2I_VARIANT_STANDARD;
    gimp_int_combo_box_set_active(GIMP_INT_COMBO_BOX(w->variant_combo), I2I_VARIANT_STANDARD);
  }
  gtk_widget_set_sensitive(w->variant_combo, id0);
  bool p2p = i2i_ui_is_unet(u);
  gtk_widget_set_sensitive(w->mode_combo, p2p);
  gtk_widget_set_sensitive(w->p2p_label1, p2p);
  gtk_widget_set_sensitive(w->p2p_label2, p2p);
  bool seeded = p2p && u->o.pix2pix_mode == I2I_PIX2PIX_FAITHFUL;
  gtk_widget_set_sensitive(w->seed_spin, seeded);
  gtk_widget_set_sensitive(w->seed_button, seeded);
}

static void on_strength(GtkAdjustment *adj, gpointer data) {
  i2i_ui *u = data;
  u->o.strength = gtk_adjustment_get_value(adj);
  i2i_ui_redraw(u);
}

static void on_device(GtkWidget *w, gpointer data) {
  i2i_ui *u = data;
  gint v;
  if (gimp_int_combo_box_get_active(GIMP_INT_COMBO_BOX(w), &v)) u->o.device = v;
  i2i_ui_schedule_render(u);
}

static void on_variant(GtkWidget *w, gpointer data) {
  i2i_ui *u = data;
  gint v;
  if (gimp_int_combo_box_get_active(GIMP_INT_COMBO_BOX(w), &v)) u->o.variant = v;
  i2i_ui_schedule_render(u);
}

static void on_scale(GtkWidget *w, gpointer data) {
  i2i_ui *u = data;
  gint v;
  if (gimp_int_combo_box_get_active(GIMP_INT_COMBO_BOX(w), &v)) u->o.scale = v;
  i2i_ui_schedule_render(u);
}

static void on_mode(GtkWidget *w, gpointer data) {
  i2i_ui *u = data;
  gint v;
  if (gimp_int_combo_box_get_active(GIMP_INT_COMBO_BOX(w), &v)) u->o.pix2pix_mode = v;
  if (u->built) update_sensitivity(u);
  i2i_ui_schedule_render(u);
}

static void on_seed(GtkSpinButton *s, gpointer data) {
  i2i_ui *u = data;
  u->o.seed = gtk_spin_button_get_value_as_int(s);
  i2i_ui_schedule_render(u);
}

static void on_new_seed(GtkButton *b, gpointer data) {
  i2i_ui *u = data;
  gtk2_widgets *w = u->tk;
  gtk_spin_button_set_value(GTK_SPIN_BUTTON(w->seed_spin), g_random_int_range(0, G_MAXINT32));
}

static void on_memory(GtkSpinButton *s, gpointer data) {
  i2i_ui *u = data;
  u->o.memory_mb = gtk_spin_button_get_value_as_int(s);
}

static void on_model(GtkComboBox *c, gpointer data) {
  i2i_ui *u = data;
  int i = gtk_combo_box_get_active(c);
  if (i >= 0 && (size_t)i < u->n_models) g_strlcpy(u->o.model, u->models[i].task, sizeof u->o.model);
  if (u->built) update_sensitivity(u);
  i2i_ui_schedule_render(u);
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

static void build(i2i_ui *u, gtk2_widgets *w, const char *title) {
  u->tk = w;
  u->sensitivity = update_sensitivity;
  u->dialog = gimp_dialog_new(title, "i2i", NULL, 0, gimp_standard_help_func, u->call->name, "_Cancel",
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
    w->model_combo = gtk_combo_box_text_new();
    int active = -1;
    for (size_t i = 0; i < u->n_models; i++) {
      char *l = strcmp(u->models[i].label, u->models[i].task)
                    ? g_strdup_printf("%s (%s)", u->models[i].label, u->models[i].task)
                    : g_strdup(u->models[i].task);
      gtk_combo_box_text_append_text(GTK_COMBO_BOX_TEXT(w->model_combo), l);
      g_free(l);
      if (!strcmp(u->models[i].task, u->o.model) || !strcmp(u->models[i].path, u->o.model)) active = (int)i;
    }
    if (active < 0 && u->o.model[0]) {
      gtk_combo_box_text_append_text(GTK_COMBO_BOX_TEXT(w->model_combo), u->o.model);
      active = (int)u->n_models;
    }
    if (active < 0) {
      active = 0;
      g_strlcpy(u->o.model, u->models[0].task, sizeof u->o.model);
    }
    gtk_combo_box_set_active(GTK_COMBO_BOX(w->model_combo), active);
    if (i2i_verbose()) { /* the list as the combo holds it (tests/gimp/interactive reads this line) */
      GtkTreeModel *tm = gtk_combo_box_get_model(GTK_COMBO_BOX(w->model_combo));
      GString *s = g_string_new(NULL);
      GtkTreeIter it;
      for (gboolean more = gtk_tree_model_get_iter_first(tm, &it); more; more = gtk_tree_model_iter_next(tm, &it)) {
        gchar *t = NULL;
        gtk_tree_model_get(tm, &it, 0, &t, -1);
        g_string_append_printf(s, "%s[%s]", s->len ? " " : "", t ? t : "");
        g_free(t);
      }
      i2i_vlog("model list: %d entries: %s", gtk_tree_model_iter_n_children(tm, NULL), s->str);
      g_string_free(s, TRUE);
    }
    g_signal_connect(w->model_combo, "changed", G_CALLBACK(on_model), u);
    row = attach_row(table, row, "_Model:", w->model_combo, NULL);
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

  w->variant_combo = gimp_int_combo_box_new("Standard", I2I_VARIANT_STANDARD, "id0 (no identity loss)",
                                            I2I_VARIANT_ID0, NULL);
  gimp_int_combo_box_connect(GIMP_INT_COMBO_BOX(w->variant_combo), u->o.variant, G_CALLBACK(on_variant), u);
  row = attach_row(table, row, "_Variant:", w->variant_combo, NULL);

  w->mode_combo = gimp_int_combo_box_new("Faithful (as published)", I2I_PIX2PIX_FAITHFUL,
                                         "Deterministic (no dropout)", I2I_PIX2PIX_DETERMINISTIC,
                                         "Eval (running statistics)", I2I_PIX2PIX_EVAL, NULL);
  gimp_int_combo_box_connect(GIMP_INT_COMBO_BOX(w->mode_combo), u->o.pix2pix_mode, G_CALLBACK(on_mode), u);
  row = attach_row(table, row, "Pix2Pix _mode:", w->mode_combo, &w->p2p_label1);

  GtkWidget *hbox = gtk_hbox_new(FALSE, 4);
  w->seed_spin = gimp_spin_button_new_with_range(G_MININT32, G_MAXINT32, 1);
  gtk_spin_button_set_value(GTK_SPIN_BUTTON(w->seed_spin), u->o.seed);
  g_signal_connect(w->seed_spin, "value-changed", G_CALLBACK(on_seed), u);
  gtk_box_pack_start(GTK_BOX(hbox), w->seed_spin, TRUE, TRUE, 0);
  w->seed_button = gtk_button_new_with_mnemonic("_New");
  gimp_help_set_help_data(w->seed_button, "Another dropout pattern (Pix2Pix faithful mode)", NULL);
  g_signal_connect(w->seed_button, "clicked", G_CALLBACK(on_new_seed), u);
  gtk_box_pack_start(GTK_BOX(hbox), w->seed_button, FALSE, FALSE, 0);
  row = attach_row(table, row, "Variation s_eed:", hbox, &w->p2p_label2);

  GtkWidget *mem = gimp_spin_button_new_with_range(0, I2I_MEMORY_MB_MAX, 256);
  gtk_spin_button_set_value(GTK_SPIN_BUTTON(mem), u->o.memory_mb);
  g_signal_connect(mem, "value-changed", G_CALLBACK(on_memory), u);
  gimp_help_set_help_data(mem, "Engine working-memory budget in MiB; 0 = automatic", NULL);
  row = attach_row(table, row, "Memory (MiB, 0 = auto):", mem, NULL);
  (void)row;
}

GimpPDBStatusType i2i_dialog_run(const i2i_gimp_call *call, const i2i_direction *dir, i2i_gimp_drawable d,
                                 const i2i_layer *L, i2i_opts *o, char **model_name, float **cached,
                                 char **err) {
  *model_name = NULL;
  *cached = NULL;
  i2i_ui u;
  if (!i2i_ui_begin(&u, call, dir, d, L, o, err)) return GIMP_PDB_EXECUTION_ERROR;
  gtk2_widgets w = {0};
  build(&u, &w, dir ? dir->label : "Translate with a model");
  i2i_ui_start(&u);
  gint response = gimp_dialog_run(GIMP_DIALOG(u.dialog));
  GimpPDBStatusType status = i2i_ui_finish(&u, response == GTK_RESPONSE_OK, o, model_name, cached, err);
  gtk_widget_destroy(u.dialog);
  i2i_ui_end(&u);
  return status;
}
