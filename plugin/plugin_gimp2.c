/* plugin_gimp2.c: the GIMP 2.10 entry points of the i2i plug-in: registration and run.
 *
 * query() installs one procedure per base direction of the weights manifest
 * (plug-in-i2i-<task>, Filters > Translate > <menu label>) and the generic plug-in-i2i-translate,
 * with the argument table of options.c. run() unpacks the arguments, keeps the last values
 * (gimp_get_data) and returns errors the 2.10 way: a status plus a second STRING value
 * (gimp.md A4). The run itself is run.c's (shared with GIMP 3), the dialog ui_gtk2.c's.
 */
#include <gegl.h>
#include <string.h>

#include "run.h"

static void query(void);
static void run(const gchar *name, gint nparams, const GimpParam *param, gint *nreturn_vals,
                GimpParam **return_vals);

const GimpPlugInInfo PLUG_IN_INFO = {NULL, NULL, query, run};

/* GIMP's MAIN(), with the engine's process setup first (i2i.h: i2i_openmp_reexec). */
int main(int argc, char *argv[]) {
  i2i_openmp_reexec(argv);
  return gimp_main(&PLUG_IN_INFO, argc, argv);
}

#define AUTHOR    "i2i contributors"
#define COPYRIGHT "GPL-3.0-or-later"
#define DATE      "2025"

/* The PDB arguments: run-mode image drawable [model] strength ... memory-mb. */
static GimpParamDef *make_args(bool generic, int *n) {
  size_t nt;
  const i2i_arg_def *t = i2i_arg_table(&nt);
  int count = 3 + (generic ? 1 : 0) + (int)nt;
  GimpParamDef *a = g_new0(GimpParamDef, count);
  int k = 0;
  a[k++] = (GimpParamDef){GIMP_PDB_INT32, (gchar *)"run-mode",
                          (gchar *)"The run mode { RUN-INTERACTIVE (0), RUN-NONINTERACTIVE (1), RUN-WITH-LAST-VALS (2) }"};
  a[k++] = (GimpParamDef){GIMP_PDB_IMAGE, (gchar *)"image", (gchar *)"Input image"};
  a[k++] = (GimpParamDef){GIMP_PDB_DRAWABLE, (gchar *)"drawable", (gchar *)"Input drawable (RGB or gray, any precision)"};
  if (generic) {
    const i2i_arg_def *m = i2i_arg_model();
    a[k++] = (GimpParamDef){GIMP_PDB_STRING, (gchar *)m->name, (gchar *)m->desc};
  }
  for (size_t i = 0; i < nt; i++)
    a[k++] = (GimpParamDef){t[i].type == I2I_ARG_FLOAT ? GIMP_PDB_FLOAT : GIMP_PDB_INT32, (gchar *)t[i].name,
                            (gchar *)t[i].desc};
  *n = count;
  return a;
}

static void query(void) {
  i2i_ctx *ctx = NULL;
  i2i_direction *dirs = NULL;
  size_t nd = 0;
  if (i2i_ctx_create(NULL, &ctx) == I2I_OK) nd = i2i_directions_load(ctx, &dirs);
  int na;
  GimpParamDef *args = make_args(false, &na);
  for (size_t i = 0; i < nd; i++) {
    char *menu = g_strdup_printf("%s...", dirs[i].label);
    gimp_install_procedure(dirs[i].proc, dirs[i].blurb, dirs[i].help, AUTHOR, COPYRIGHT, DATE, menu,
                           I2I_IMAGE_TYPES, GIMP_PLUGIN, na, 0, args, NULL);
    gimp_plugin_menu_register(dirs[i].proc, I2I_MENU_PATH);
    g_free(menu);
  }
  g_free(args);
  args = make_args(true, &na);
  gimp_install_procedure(I2I_PROC_GENERIC, "Translate the layer with any installed i2i model",
                         "Runs an installed image-to-image model (a published direction or a fine-tuned "
                         "model, given by task name or .onnx path) on the active layer; the dialog lists "
                         "every installed model. Same arguments as the per-direction procedures, with "
                         "'model' after the drawable.",
                         AUTHOR, COPYRIGHT, DATE, "With _Model...", I2I_IMAGE_TYPES, GIMP_PLUGIN, na, 0,
                         args, NULL);
  gimp_plugin_menu_register(I2I_PROC_GENERIC, I2I_MENU_PATH);
  g_free(args);
  i2i_directions_free(dirs, nd);
  i2i_ctx_free(ctx);
}

/* Reads the non-interactive arguments; false with *err on a count or type mismatch. */
static bool unpack(const GimpParam *param, gint nparams, bool generic, i2i_opts *o, char **err) {
  size_t nt;
  (void)i2i_arg_table(&nt);
  int want = 3 + (generic ? 1 : 0) + (int)nt;
  if (nparams != want) {
    *err = g_strdup_printf("i2i: this procedure takes %d arguments (run-mode image drawable%s strength device "
                           "variant seed pix2pix-mode scale memory-mb), got %d",
                           want, generic ? " model" : "", nparams);
    return false;
  }
  int k = 3;
  if (generic) {
    const gchar *m = param[k++].data.d_string;
    if (m && strlen(m) >= sizeof o->model) {
      *err = g_strdup_printf("i2i: argument 'model' is longer than %d bytes", I2I_MODEL_MAX - 1);
      return false;
    }
    g_strlcpy(o->model, m ? m : "", sizeof o->model);
  }
  o->strength = param[k++].data.d_float;
  o->device = param[k++].data.d_int32;
  o->variant = param[k++].data.d_int32;
  o->seed = param[k++].data.d_int32;
  o->pix2pix_mode = param[k++].data.d_int32;
  o->scale = param[k++].data.d_int32;
  o->memory_mb = param[k++].data.d_int32;
  return true;
}

static void run(const gchar *name, gint nparams, const GimpParam *param, gint *nreturn_vals,
                GimpParam **return_vals) {
  static GimpParam values[2];
  GimpPDBStatusType status = GIMP_PDB_SUCCESS;
  char *err = NULL;
  bool generic = !strcmp(name, I2I_PROC_GENERIC);
  i2i_vlog("run %s: entered", name);

  *nreturn_vals = 1;
  *return_vals = values;
  values[0].type = GIMP_PDB_STATUS;

  if (nparams < 3) {
    status = GIMP_PDB_CALLING_ERROR;
    err = g_strdup("i2i: expected at least run-mode, image and drawable");
    goto done;
  }
  GimpRunMode mode = (GimpRunMode)param[0].data.d_int32;
  i2i_gimp_drawable drawable = param[2].data.d_drawable;

  i2i_opts o;
  i2i_opts_default(&o);
  if (!i2i_last_values_get(name, &o, sizeof o)) i2i_opts_default(&o);
  o.model[sizeof o.model - 1] = 0;
  switch (mode) {
  case GIMP_RUN_NONINTERACTIVE:
    i2i_opts_default(&o);
    if (!unpack(param, nparams, generic, &o, &err)) {
      status = GIMP_PDB_CALLING_ERROR;
      goto done;
    }
    break;
  case GIMP_RUN_INTERACTIVE:
    if (generic && !o.model[0] && nparams > 3 && param[3].data.d_string)
      g_strlcpy(o.model, param[3].data.d_string, sizeof o.model);
    break;
  case GIMP_RUN_WITH_LAST_VALS:
    break;
  default:
    status = GIMP_PDB_CALLING_ERROR;
    err = g_strdup_printf("i2i: unknown run mode %d", (int)mode);
    goto done;
  }
  i2i_gimp_call call = {name};
  status = i2i_run_procedure(&call, mode, drawable, &o, &err);
  if (status == GIMP_PDB_SUCCESS) i2i_last_values_set(name, &o, sizeof o);

done:
  i2i_vlog("run %s: done (%s)", name, status == GIMP_PDB_SUCCESS ? "success" : err ? err : "cancelled");
  values[0].data.d_status = status;
  if (err && status != GIMP_PDB_SUCCESS && status != GIMP_PDB_CANCEL) {
    *nreturn_vals = 2;
    values[1].type = GIMP_PDB_STRING;
    values[1].data.d_string = err; /* stays allocated: GIMP reads it after run() returns */
  } else {
    g_free(err);
  }
}
