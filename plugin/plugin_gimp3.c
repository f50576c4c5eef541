/* plugin_gimp3.c: the GIMP 3 entry points of the i2i plug-in: a GimpPlugIn subclass.
 *
 * query_procedures lists one procedure per base direction of the weights manifest and the generic
 * plug-in-i2i-translate (GIMP caches these in pluginrc); init_procedures, which GIMP calls at
 * every start, lists the installed models the manifest does not publish (fine-tuned ones).
 * Arguments after the drawables are those of the 2.10 build, typed and ranged; run() reads them
 * from the GimpProcedureConfig and returns errors as a GError. The run is run.c's, the dialog
 * ui_gtk3.c's.
 */
#include <string.h>

#include "gimp3_config.h"
#include "run.h"

#define AUTHOR    "i2i contributors"
#define COPYRIGHT "GPL-3.0-or-later"
#define DATE      "2025"

#define I2I_TYPE_PLUG_IN (i2i_plug_in_get_type())
G_DECLARE_FINAL_TYPE(I2iPlugIn, i2i_plug_in, I2I, PLUG_IN, GimpPlugIn)

/* The direction lists, read once per process when first needed. */
struct _I2iPlugIn {
  GimpPlugIn parent_instance;
  i2i_ctx *ctx;
  bool have_published, have_installed;
  i2i_direction *published, *installed;
  size_t n_published, n_installed;
};

G_DEFINE_TYPE(I2iPlugIn, i2i_plug_in, GIMP_TYPE_PLUG_IN)

/* GIMP's GIMP_MAIN(), with the engine's process setup first (i2i.h: i2i_openmp_reexec). */
int main(int argc, char *argv[]) {
  i2i_openmp_reexec(argv);
  return gimp_main(I2I_TYPE_PLUG_IN, argc, argv);
}

static i2i_ctx *plug_in_ctx(I2iPlugIn *self) {
  if (!self->ctx && i2i_ctx_create(NULL, &self->ctx) != I2I_OK) self->ctx = NULL;
  return self->ctx;
}

static void load_published(I2iPlugIn *self) {
  if (self->have_published) return;
  self->have_published = true;
  if (plug_in_ctx(self)) self->n_published = i2i_directions_load(self->ctx, &self->published);
}

static void load_installed(I2iPlugIn *self) {
  if (self->have_installed) return;
  load_published(self);
  self->have_installed = true;
  double t0 = i2i_ms_since_start();
  if (plug_in_ctx(self))
    self->n_installed = i2i_directions_installed(self->ctx, self->published, self->n_published, &self->installed);
  i2i_vlog("installed models outside the manifest: %zu (%.1f ms)", self->n_installed, i2i_ms_since_start() - t0);
}

static void i2i_plug_in_finalize(GObject *object) {
  I2iPlugIn *self = I2I_PLUG_IN(object);
  i2i_directions_free(self->published, self->n_published);
  i2i_directions_free(self->installed, self->n_installed);
  i2i_ctx_free(self->ctx);
  G_OBJECT_CLASS(i2i_plug_in_parent_class)->finalize(object);
}

static GList *query_procedures(GimpPlugIn *plug_in) {
  I2iPlugIn *self = I2I_PLUG_IN(plug_in);
  load_published(self);
  GList *l = NULL;
  for (size_t i = 0; i < self->n_published; i++) l = g_list_append(l, g_strdup(self->published[i].proc));
  return g_list_append(l, g_strdup(I2I_PROC_GENERIC));
}

static GList *init_procedures(GimpPlugIn *plug_in) {
  I2iPlugIn *self = I2I_PLUG_IN(plug_in);
  load_installed(self);
  GList *l = NULL;
  for (size_t i = 0; i < self->n_installed; i++) l = g_list_append(l, g_strdup(self->installed[i].proc));
  return l;
}

/* A label as a menu label: '_' would be read as a mnemonic. */
static char *menu_label(const char *label) {
  GString *s = g_string_new(NULL);
  for (const char *c = label; *c; c++) {
    if (*c == '_') g_string_append_c(s, '_');
    g_string_append_c(s, *c);
  }
  g_string_append(s, "...");
  return g_string_free(s, FALSE);
}

/* The arguments after (run-mode image drawables): [model] strength ... memory-mb. */
static void add_arguments(GimpProcedure *p, bool generic) {
  if (generic) {
    const i2i_arg_def *m = i2i_arg_model();
    gimp_procedure_add_string_argument(p, m->name, m->nick, m->desc, "", G_PARAM_READWRITE);
  }
  size_t nt;
  const i2i_arg_def *t = i2i_arg_table(&nt);
  for (size_t i = 0; i < nt; i++) {
    if (t[i].type == I2I_ARG_FLOAT)
      gimp_procedure_add_double_argument(p, t[i].name, t[i].nick, t[i].desc, t[i].min, t[i].max, t[i].def,
                                         G_PARAM_READWRITE);
    else
      gimp_procedure_add_int_argument(p, t[i].name, t[i].nick, t[i].desc, (gint)t[i].min, (gint)t[i].max,
                                      (gint)t[i].def, G_PARAM_READWRITE);
  }
}

static GimpValueArray *run(GimpProcedure *procedure, GimpRunMode mode, GimpImage *image, GimpDrawable **drawables,
                           GimpProcedureConfig *config, gpointer data);

static GimpProcedure *create_procedure(GimpPlugIn *plug_in, const gchar *name) {
  I2iPlugIn *self = I2I_PLUG_IN(plug_in);
  bool generic = !strcmp(name, I2I_PROC_GENERIC);
  const i2i_direction *d = NULL;
  if (!generic) {
    load_published(self);
    d = i2i_direction_find(self->published, self->n_published, name);
    if (!d) {
      load_installed(self);
      d = i2i_direction_find(self->installed, self->n_installed, name);
    }
    if (!d) return NULL;
  }
  GimpProcedure *p = gimp_image_procedure_new(plug_in, name, GIMP_PDB_PROC_TYPE_PLUGIN, run, self, NULL);
  gimp_procedure_set_image_types(p, I2I_IMAGE_TYPES);
  gimp_procedure_set_sensitivity_mask(p, GIMP_PROCEDURE_SENSITIVE_DRAWABLE);
  if (generic) {
    gimp_procedure_set_menu_label(p, "With _Model...");
    gimp_procedure_set_documentation(p, "Translate the layer with any installed i2i model",
                                     "Runs an installed image-to-image model (a published direction or a "
                                     "fine-tuned model, given by task name or .onnx path) on the active layer; "
                                     "the dialog lists every installed model. Same arguments as the "
                                     "per-direction procedures, with 'model' after the drawables.",
                                     name);
  } else {
    char *label = menu_label(d->label);
    gimp_procedure_set_menu_label(p, label);
    g_free(label);
    gimp_procedure_set_documentation(p, d->blurb, d->help, name);
  }
  gimp_procedure_add_menu_path(p, I2I_MENU_PATH);
  gimp_procedure_set_attribution(p, AUTHOR, COPYRIGHT, DATE);
  add_arguments(p, generic);
  return p;
}

static GimpValueArray *run(GimpProcedure *procedure, GimpRunMode mode, GimpImage *image, GimpDrawable **drawables,
                           GimpProcedureConfig *config, gpointer data) {
  const char *name = gimp_procedure_get_name(procedure);
  bool generic = !strcmp(name, I2I_PROC_GENERIC);
  GimpPDBStatusType status;
  char *err = NULL;
  i2i_vlog("run %s: entered", name);
  size_t n = 0;
  while (drawables && drawables[n]) n++;
  i2i_opts o;
  if (n != 1) {
    status = GIMP_PDB_CALLING_ERROR;
    err = g_strdup_printf("i2i: %s works on one layer at a time, and %zu are selected; select one layer", name, n);
  } else if (!i2i_opts_from_config(config, generic, &o, &err)) {
    status = GIMP_PDB_CALLING_ERROR;
  } else {
    i2i_gimp_call call = {name, procedure, config};
    status = i2i_run_procedure(&call, mode, drawables[0], &o, &err);
    /* libgimp saves the config as last values after a successful interactive run */
    if (status == GIMP_PDB_SUCCESS && mode == GIMP_RUN_INTERACTIVE) i2i_opts_to_config(config, generic, &o);
  }
  i2i_vlog("run %s: done (%s)", name, status == GIMP_PDB_SUCCESS ? "success" : err ? err : "cancelled");
  GError *e = NULL;
  if (err && status != GIMP_PDB_SUCCESS && status != GIMP_PDB_CANCEL) e = g_error_new_literal(GIMP_PLUG_IN_ERROR, 0, err);
  g_free(err);
  return gimp_procedure_new_return_values(procedure, status, e);
}

/* The plug-in has no translations: no catalog to look for (GIMP would log its absence). */
static gboolean set_i18n(GimpPlugIn *plug_in, const gchar *name, gchar **domain, gchar **catalog_dir) {
  return FALSE;
}

static void i2i_plug_in_class_init(I2iPlugInClass *klass) {
  GimpPlugInClass *plug_in_class = GIMP_PLUG_IN_CLASS(klass);
  G_OBJECT_CLASS(klass)->finalize = i2i_plug_in_finalize;
  plug_in_class->query_procedures = query_procedures;
  plug_in_class->init_procedures = init_procedures;
  plug_in_class->create_procedure = create_procedure;
  plug_in_class->set_i18n = set_i18n;
}

static void i2i_plug_in_init(I2iPlugIn *self) {}
