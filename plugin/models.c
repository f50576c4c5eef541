/* models.c: from the weights manifest to procedures, and from a procedure's options to a
 * loaded, checked generator.
 *
 * The procedure list is the manifest's base directions (variant 0); a direction's id0 sibling is
 * the entry whose base_task is the direction and whose variant is 1. Installed models the
 * manifest does not publish (fine-tuned ones) get directions of their own for GIMP 3, which
 * registers them at every start. Model lookup and the
 * "install it with: i2i fetch <task>" message are the engine's (i2i_model_find); this file adds
 * the plug-in's refusal of models that are not image-to-image generators. No GIMP calls here.
 */
#include <string.h>

#include "i2i_plugin.h"

/* PDB names are lower-case letters, digits and '-'. */
static char *canonical_proc(const char *task) {
  char *p = g_strconcat(I2I_PROC_PREFIX, task, NULL);
  for (char *c = p; *c; c++) {
    *c = g_ascii_tolower(*c);
    if (!g_ascii_isalnum(*c) && *c != '-') *c = '-';
  }
  return p;
}

static const char *family_name(const char *family) {
  if (!strcmp(family, "resnet")) return "CycleGAN (ResNet generator)";
  if (!strcmp(family, "unet")) return "Pix2Pix (U-Net generator)";
  if (!strcmp(family, "unknown")) return "image-to-image model";
  return family;
}

size_t i2i_directions_load(i2i_ctx *ctx, i2i_direction **out) {
  *out = NULL;
  size_t n = i2i_manifest_count(ctx);
  if (!n) return 0;
  i2i_direction *d = g_new0(i2i_direction, n);
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    const i2i_manifest_entry *e = i2i_manifest_get(ctx, i);
    if (!e || e->variant != 0 || !*e->task) continue;
    char *proc = canonical_proc(e->task);
    bool dup = false;
    for (size_t j = 0; j < k; j++)
      if (!strcmp(d[j].proc, proc)) dup = true;
    if (dup) {
      g_free(proc);
      continue;
    }
    const char *id0 = NULL;
    for (size_t j = 0; j < n; j++) {
      const i2i_manifest_entry *v = i2i_manifest_get(ctx, j);
      if (v && v->variant == 1 && !strcmp(v->base_task, e->task)) id0 = v->task;
    }
    i2i_direction *r = &d[k++];
    r->proc = proc;
    r->task = g_strdup(e->task);
    r->id0_task = id0 ? g_strdup(id0) : NULL;
    r->label = g_strdup(*e->label ? e->label : e->task);
    r->family = g_strdup(e->family);
    r->blurb = g_strdup_printf("Translate the layer: %s (%s)", r->label, family_name(e->family));
    GString *h = g_string_new(NULL);
    g_string_append_printf(h, "Translates the active layer from the %s domain to the %s domain with the %s "
                           "of mmagic's %s. The model sees the whole layer at the working resolution "
                           "('scale'); only selected pixels change, alpha is kept, and the result is one "
                           "undo step. It needs the model %s.onnx (install it with: i2i fetch %s).",
                           *e->source_domain ? e->source_domain : "source",
                           *e->target_domain ? e->target_domain : "target", family_name(e->family),
                           *e->checkpoint ? e->checkpoint : "published checkpoint", e->task, e->task);
    if (id0)
      g_string_append_printf(h, " Variant 1 uses %s.onnx (install it with: i2i fetch %s).", id0, id0);
    else
      g_string_append(h, " This direction has no id0 variant: 'variant' must be 0.");
    if (!strcmp(e->family, "unet"))
      g_string_append(h, " 'seed' and 'pix2pix-mode' choose the Pix2Pix test-time behaviour.");
    if (e->provisional) g_string_append(h, " The domain labels of this checkpoint are provisional upstream.");
    r->help = g_string_free(h, FALSE);
  }
  if (!k) {
    g_free(d);
    return 0;
  }
  *out = d;
  return k;
}

void i2i_directions_free(i2i_direction *d, size_t n) {
  if (!d) return;
  for (size_t i = 0; i < n; i++) {
    g_free(d[i].proc);
    g_free(d[i].task);
    g_free(d[i].id0_task);
    g_free(d[i].label);
    g_free(d[i].family);
    g_free(d[i].blurb);
    g_free(d[i].help);
  }
  g_free(d);
}

static const char *family_key(i2i_family f) {
  return f == I2I_FAMILY_RESNET ? "resnet" : f == I2I_FAMILY_UNET ? "unet" : "unknown";
}

static bool label_taken(const i2i_direction *a, size_t na, const i2i_direction *b, size_t nb, const char *label) {
  for (size_t i = 0; i < na; i++)
    if (!strcmp(a[i].label, label)) return true;
  for (size_t i = 0; i < nb; i++)
    if (!strcmp(b[i].label, label)) return true;
  return false;
}

size_t i2i_directions_installed(i2i_ctx *ctx, const i2i_direction *published, size_t np, i2i_direction **out) {
  *out = NULL;
  i2i_model_entry *m = NULL;
  size_t nm = 0;
  if (i2i_model_list(ctx, &m, &nm) != I2I_OK || nm == 0) {
    i2i_model_list_free(ctx, m, nm);
    return 0;
  }
  i2i_direction *d = g_new0(i2i_direction, nm);
  size_t k = 0;
  for (size_t i = 0; i < nm; i++) {
    if (i2i_manifest_find(ctx, m[i].task)) continue; /* a published task: its direction covers it */
    char *proc = canonical_proc(m[i].task);
    bool clash = !strcmp(proc, I2I_PROC_GENERIC) || i2i_direction_find(published, np, proc) ||
                 i2i_direction_find(d, k, proc);
    if (clash) {
      g_free(proc);
      continue;
    }
    i2i_direction *r = &d[k++];
    r->proc = proc;
    r->task = g_strdup(m[i].task);
    r->id0_task = NULL;
    r->label = label_taken(published, np, d, k - 1, m[i].label) ? g_strdup_printf("%s (%s)", m[i].label, m[i].task)
                                                                : g_strdup(m[i].label);
    r->family = g_strdup(family_key(m[i].family));
    r->blurb = g_strdup_printf("Translate the layer: %s (installed model %s)", r->label, m[i].task);
    r->help = g_strdup_printf("Translates the active layer with the installed model %s (%s), found when GIMP "
                              "started. The model sees the whole layer at the working resolution ('scale'); "
                              "only selected pixels change, alpha is kept, and the result is one undo step. "
                              "'variant' must be 0.%s",
                              m[i].path, family_name(r->family),
                              m[i].family == I2I_FAMILY_UNET
                                  ? " 'seed' and 'pix2pix-mode' choose the Pix2Pix test-time behaviour."
                                  : "");
  }
  i2i_model_list_free(ctx, m, nm);
  if (!k) {
    g_free(d);
    return 0;
  }
  *out = d;
  return k;
}

const i2i_direction *i2i_direction_find(const i2i_direction *d, size_t n, const char *proc) {
  for (size_t i = 0; i < n && proc; i++)
    if (!strcmp(d[i].proc, proc)) return &d[i];
  return NULL;
}

char *i2i_model_name_for(i2i_ctx *ctx, const i2i_direction *dir, const i2i_opts *o, char **err) {
  *err = NULL;
  if (dir) {
    if (o->variant == I2I_VARIANT_STANDARD) return g_strdup(dir->task);
    if (dir->id0_task) return g_strdup(dir->id0_task);
    *err = g_strdup_printf("i2i: %s has no id0 variant (only the published CycleGAN directions with an "
                           "identity-loss-free checkpoint have one); 'variant' must be 0", dir->label);
    return NULL;
  }
  if (!o->model[0]) {
    *err = g_strdup("i2i: no model given: 'model' must be a task name (e.g. winter2summer) or an .onnx path");
    return NULL;
  }
  if (o->variant == I2I_VARIANT_STANDARD) return g_strdup(o->model);
  const i2i_manifest_entry *e = i2i_manifest_find(ctx, o->model);
  if (e && e->variant == 0) {
    size_t n = i2i_manifest_count(ctx);
    for (size_t j = 0; j < n; j++) {
      const i2i_manifest_entry *v = i2i_manifest_get(ctx, j);
      if (v && v->variant == 1 && !strcmp(v->base_task, e->task)) return g_strdup(v->task);
    }
  }
  *err = g_strdup_printf("i2i: model '%s' has no id0 variant ('variant' 1 applies to published CycleGAN "
                         "directions given by task name); 'variant' must be 0", o->model);
  return NULL;
}

i2i_model *i2i_model_open(i2i_ctx *ctx, const char *name, char **path, char **err) {
  *err = NULL;
  if (path) *path = NULL;
  char *file = NULL;
  i2i_status st = i2i_model_find(ctx, name, &file);
  if (st) {
    *err = g_strdup_printf("i2i: %s", i2i_ctx_errmsg(ctx));
    return NULL;
  }
  i2i_model *m = NULL;
  st = i2i_model_load_file(ctx, file, &m);
  if (st) {
    *err = g_strdup_printf("i2i: cannot use the model %s: %s", file, i2i_ctx_errmsg(ctx));
    i2i_free(ctx, file);
    return NULL;
  }
  i2i_model_info info;
  i2i_model_get_info(m, &info);
  if (info.family == I2I_FAMILY_PATCHGAN || info.in_channels != 3 || info.out_channels != 3) {
    bool disc = info.family == I2I_FAMILY_PATCHGAN;
    *err = g_strdup_printf("i2i: %s is not an image-to-image generator: %s (%d input and %d output channels); "
                           "choose %s",
                           file, disc ? "it is a PatchGAN discriminator" : "it does not map RGB to RGB",
                           info.in_channels, info.out_channels,
                           disc ? "a generator such as <task>.onnx, not <task>.D.onnx"
                                : "a model that takes and gives 3 colour channels");
    i2i_model_free(m);
    i2i_free(ctx, file);
    return NULL;
  }
  if (path) *path = g_strdup(file);
  i2i_free(ctx, file);
  return m;
}
