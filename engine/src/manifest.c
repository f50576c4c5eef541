/* manifest.c: the published-model manifest (weights/manifest), compiled into libi2i.
 *
 * Parsed once per context with GLib's key-file reader from the built-in text, or from the file
 * $I2I_MANIFEST names. Each [direction TASK] group joins its [checkpoint NAME] group into one
 * i2i_manifest_entry. Reading and converting checkpoints is the converter's job, not this file's.
 */
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

extern const char i2i_manifest_text[];

struct i2i_manifest {
  i2i_manifest_entry *e;
  size_t n;
  GStringChunk *strings;
  bool failed;
};

static const char *kf_str(GKeyFile *kf, GStringChunk *sc, const char *group, const char *key, bool *missing) {
  gchar *v = g_key_file_get_string(kf, group, key, NULL);
  if (!v) {
    if (missing) *missing = true;
    return "";
  }
  g_strstrip(v);
  const char *r = g_string_chunk_insert_const(sc, v);
  g_free(v);
  return r;
}

/* A reported score into *d: -1 when the key is absent; false when it is present but not a
 * non-negative number (a typo must not silently read as "no score"). */
static bool kf_score(GKeyFile *kf, const char *group, const char *key, double *d) {
  *d = -1;
  gchar *v = g_key_file_get_string(kf, group, key, NULL);
  if (!v) return true;
  g_strstrip(v);
  char *end;
  double x = g_ascii_strtod(v, &end);
  bool ok = end != v && *end == 0 && x >= 0 && x < 1e9; /* also false for nan and inf */
  g_free(v);
  if (ok) *d = x;
  return ok;
}

/* The sha256 prefix of a published file name: exactly 8 hex digits ("fcf08dc1"). */
static bool sha_prefix_ok(const char *s) {
  if (strlen(s) != 8) return false;
  for (int i = 0; i < 8; i++)
    if (!g_ascii_isxdigit(s[i])) return false;
  return true;
}

static bool file_safe(const char *t) {
  if (!t[0] || t[0] == '.' || strlen(t) > 100) return false;
  for (const char *p = t; *p; p++)
    if (!g_ascii_isalnum(*p) && *p != '-' && *p != '_' && *p != '.') return false;
  return true;
}

static i2i_status manifest_parse(i2i_ctx *ctx, const char *text, size_t len, const char *origin) {
  GKeyFile *kf = g_key_file_new();
  GError *err = NULL;
  if (!g_key_file_load_from_data(kf, text, len, G_KEY_FILE_NONE, &err)) {
    i2i_status st = i2i_fail(ctx, I2I_E_FORMAT, "manifest %s: %s", origin, err ? err->message : "unreadable");
    g_clear_error(&err);
    g_key_file_free(kf);
    return st;
  }
  gsize ng = 0;
  gchar **groups = g_key_file_get_groups(kf, &ng);
  struct i2i_manifest *mf = g_new0(struct i2i_manifest, 1);
  mf->strings = g_string_chunk_new(4096);
  mf->e = g_new0(i2i_manifest_entry, ng ? ng : 1);
  i2i_status st = I2I_OK;
  for (gsize i = 0; i < ng && !st; i++) {
    if (strncmp(groups[i], "direction ", 10)) continue;
    const char *task = groups[i] + 10;
    bool miss = false;
    i2i_manifest_entry *e = &mf->e[mf->n];
    e->task = g_string_chunk_insert_const(mf->strings, task);
    const char *ck = kf_str(kf, mf->strings, groups[i], "checkpoint", &miss);
    e->label = kf_str(kf, mf->strings, groups[i], "label", &miss);
    e->source_domain = kf_str(kf, mf->strings, groups[i], "source", &miss);
    e->target_domain = kf_str(kf, mf->strings, groups[i], "target", &miss);
    e->source_side = kf_str(kf, mf->strings, groups[i], "source_side", NULL);
    e->provisional = g_key_file_get_boolean(kf, groups[i], "provisional", NULL);
    bool scores_ok = kf_score(kf, groups[i], "fid", &e->fid);
    scores_ok &= kf_score(kf, groups[i], "is", &e->is);
    char cg[256];
    snprintf(cg, sizeof cg, "checkpoint %s", ck);
    if (miss || !g_key_file_has_group(kf, cg)) {
      st = i2i_fail(ctx, I2I_E_FORMAT, "manifest %s: direction '%s' lacks checkpoint, label, source or target, or names an unknown checkpoint", origin, task);
      break;
    }
    if (!scores_ok) {
      st = i2i_fail(ctx, I2I_E_FORMAT, "manifest %s: direction '%s': fid or is is not a non-negative number", origin, task);
      break;
    }
    e->checkpoint = kf_str(kf, mf->strings, cg, "file", &miss);
    e->url = kf_str(kf, mf->strings, cg, "url", &miss);
    e->sha256_prefix = kf_str(kf, mf->strings, cg, "sha256", &miss);
    e->config = kf_str(kf, mf->strings, cg, "config", NULL);
    e->family = kf_str(kf, mf->strings, cg, "family", &miss);
    e->channel_order = kf_str(kf, mf->strings, cg, "channel_order", &miss);
    if (miss || !file_safe(task) || (strcmp(e->channel_order, "bgr") && strcmp(e->channel_order, "rgb")) ||
        (strcmp(e->family, "resnet") && strcmp(e->family, "unet"))) {
      st = i2i_fail(ctx, I2I_E_FORMAT, "manifest %s: direction '%s' or its checkpoint is incomplete or invalid", origin, task);
      break;
    }
    if (!sha_prefix_ok(e->sha256_prefix)) {
      st = i2i_fail(ctx, I2I_E_FORMAT, "manifest %s: [%s] (direction '%s'): sha256 '%s' is not 8 hex digits "
                    "(the prefix in the published file name)", origin, cg, task, e->sha256_prefix);
      break;
    }
    size_t tl = strlen(task);
    e->variant = tl > 4 && !strcmp(task + tl - 4, "-id0");
    char base[128];
    snprintf(base, sizeof base, "%.*s", (int)(e->variant ? tl - 4 : tl), task);
    e->base_task = g_string_chunk_insert_const(mf->strings, base);
    char key[160];
    snprintf(key, sizeof key, "generators.%s", e->target_domain);
    e->generator_key = g_string_chunk_insert_const(mf->strings, key);
    snprintf(key, sizeof key, "discriminators.%s", e->target_domain);
    e->discriminator_key = g_string_chunk_insert_const(mf->strings, key);
    for (size_t j = 0; j < mf->n; j++)
      if (!strcmp(mf->e[j].task, e->task) || !strcmp(mf->e[j].label, e->label)) {
        st = i2i_fail(ctx, I2I_E_FORMAT, "manifest %s: task or label of '%s' repeats '%s'", origin, task, mf->e[j].task);
        break;
      }
    mf->n++;
  }
  g_strfreev(groups);
  g_key_file_free(kf);
  if (!st && !mf->n) st = i2i_fail(ctx, I2I_E_FORMAT, "manifest %s: no [direction TASK] group", origin);
  if (st) {
    g_string_chunk_free(mf->strings);
    g_free(mf->e);
    g_free(mf);
    return st;
  }
  ctx->manifest = mf;
  return I2I_OK;
}

static struct i2i_manifest *manifest(i2i_ctx *ctx) {
  if (ctx->manifest) return ctx->manifest->failed ? NULL : ctx->manifest;
  const char *path = getenv("I2I_MANIFEST");
  i2i_status st;
  if (path && *path) {
    gchar *text = NULL;
    gsize len = 0;
    GError *err = NULL;
    if (!g_file_get_contents(path, &text, &len, &err)) {
      st = i2i_fail(ctx, I2I_E_IO, "manifest '%s' (I2I_MANIFEST): %s", path, err ? err->message : "unreadable");
      g_clear_error(&err);
    } else {
      gchar *origin = g_strdup_printf("'%s' (I2I_MANIFEST)", path);
      st = manifest_parse(ctx, text, len, origin);
      g_free(origin);
      g_free(text);
    }
  } else {
    st = manifest_parse(ctx, i2i_manifest_text, strlen(i2i_manifest_text), "(built in)");
  }
  if (st) {
    ctx->manifest = g_new0(struct i2i_manifest, 1);
    ctx->manifest->failed = true;
    return NULL;
  }
  return ctx->manifest;
}

void manifest_free(i2i_ctx *ctx) {
  struct i2i_manifest *mf = ctx->manifest;
  if (!mf) return;
  if (mf->strings) g_string_chunk_free(mf->strings);
  g_free(mf->e);
  g_free(mf);
  ctx->manifest = NULL;
}

size_t i2i_manifest_count(i2i_ctx *ctx) {
  struct i2i_manifest *mf = ctx ? manifest(ctx) : NULL;
  return mf ? mf->n : 0;
}

const i2i_manifest_entry *i2i_manifest_get(i2i_ctx *ctx, size_t i) {
  struct i2i_manifest *mf = ctx ? manifest(ctx) : NULL;
  return mf && i < mf->n ? &mf->e[i] : NULL;
}

const i2i_manifest_entry *i2i_manifest_find(i2i_ctx *ctx, const char *task) {
  struct i2i_manifest *mf = ctx && task ? manifest(ctx) : NULL;
  if (!mf) return NULL;
  for (size_t i = 0; i < mf->n; i++)
    if (!strcmp(mf->e[i].task, task)) return &mf->e[i];
  return NULL;
}
