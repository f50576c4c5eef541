/* cmd_fetch.c: `i2i fetch TASK... | --all | --list`: install the published models.
 *
 * For each checkpoint the tasks need (tasks sharing one are served by one download): take the
 * user's copy (--from, I2I_FETCH_FROM) or download it into $XDG_CACHE_HOME/i2i/downloads with
 * resume (fetch_download.c), verify its sha256 prefix, convert it (convert.c) into a staging
 * folder inside the model folder and rename the ONNX files into place. Says what it learned of
 * each file. Not a converter of arbitrary checkpoints (that is `i2i convert`).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "cli.h"
#include "convert.h"
#include "fetch_download.h"

#define CMD "fetch"

typedef struct {
  i2i_ctx *ctx;
  char *outdir;            /* where the models go */
  bool outdir_given;       /* -o: "installed" means present there */
  char *cache;             /* downloads folder */
  char *stage;             /* staging folder inside outdir, made on first need */
  gchar **from;            /* --from paths (may be NULL) */
  const char *from_env;    /* I2I_FETCH_FROM, or NULL */
  bool force, keep;
  fetch_options dopt;
  GHashTable *hashes;      /* path -> sha256 hex of the files seen, computed once */
} fetch_run;

typedef struct {
  const i2i_manifest_entry *e; /* a direction of the checkpoint: file, url, sha256 */
  GPtrArray *tasks;            /* requested task names (borrowed from the manifest) */
} ckpt_job;

static bool is_dir(const char *p) {
  struct stat sb;
  return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static bool is_file(const char *p) {
  struct stat sb;
  return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* A manifest file name we may join to a folder: one plain component. */
static bool plain_name(const char *n) {
  return n[0] && n[0] != '.' && !strchr(n, '/') && strlen(n) < 200;
}

static bool hex_prefix_ok(const char *p) {
  size_t l = strlen(p);
  if (l < 8 || l > 64) return false;
  for (size_t i = 0; i < l; i++)
    if (!g_ascii_isxdigit(p[i])) return false;
  return true;
}

/* The SHA-256 of a file, computed once per path; NULL with a message on a read error. */
static const char *file_hash(fetch_run *r, const char *path, char *err, size_t errlen) {
  const char *h = g_hash_table_lookup(r->hashes, path);
  if (h) return h;
  char hex[65];
  if (!fetch_sha256_file(path, hex, err, errlen)) return NULL;
  g_hash_table_insert(r->hashes, g_strdup(path), g_strdup(hex));
  return g_hash_table_lookup(r->hashes, path);
}

static const i2i_manifest_entry *entry_by_file(i2i_ctx *ctx, const char *file) {
  for (size_t i = 0; i < i2i_manifest_count(ctx); i++)
    if (!strcmp(i2i_manifest_get(ctx, i)->checkpoint, file)) return i2i_manifest_get(ctx, i);
  return NULL;
}

/* Which published checkpoint a user's file is: by its name, else by its sha256 prefix. */
static const i2i_manifest_entry *identify(fetch_run *r, const char *path, char *err, size_t errlen) {
  gchar *base = g_path_get_basename(path);
  const i2i_manifest_entry *e = entry_by_file(r->ctx, base);
  g_free(base);
  if (e) return e;
  const char *h = file_hash(r, path, err, errlen);
  if (!h) return NULL;
  for (size_t i = 0; i < i2i_manifest_count(r->ctx); i++) {
    const i2i_manifest_entry *m = i2i_manifest_get(r->ctx, i);
    if (hex_prefix_ok(m->sha256_prefix) && !g_ascii_strncasecmp(h, m->sha256_prefix, strlen(m->sha256_prefix))) return m;
  }
  snprintf(err, errlen, "'%s' is not a published checkpoint (its name is none of the manifest's and its sha256 "
           "begins %.8s, which matches none); convert your own files with `i2i convert`", path, h);
  return NULL;
}

/* The user's copy of the checkpoint from --from / I2I_FETCH_FROM (a new string), or NULL. */
static char *find_local(fetch_run *r, const i2i_manifest_entry *e) {
  for (gchar **f = r->from; f && *f; f++) {
    if (is_dir(*f)) {
      gchar *p = g_build_filename(*f, e->checkpoint, NULL);
      if (is_file(p)) return p;
      g_free(p);
    } else if (is_file(*f)) {
      char err[512];
      const i2i_manifest_entry *m = identify(r, *f, err, sizeof err);
      if (m && !strcmp(m->checkpoint, e->checkpoint)) return g_strdup(*f);
    }
  }
  if (r->from_env) {
    gchar *p = g_build_filename(r->from_env, e->checkpoint, NULL);
    if (is_file(p)) return p;
    g_free(p);
  }
  return NULL;
}

/* Where the task's model is installed (a new string), or NULL. */
static char *installed_path(fetch_run *r, const char *task) {
  if (r->outdir_given) {
    gchar *f = g_strconcat(task, ".onnx", NULL);
    gchar *p = g_build_filename(r->outdir, f, NULL);
    g_free(f);
    if (is_file(p)) return p;
    g_free(p);
    return NULL;
  }
  char *p = NULL;
  if (i2i_model_find(r->ctx, task, &p) != I2I_OK) return NULL;
  char *s = g_strdup(p);
  i2i_free(r->ctx, p);
  return s;
}

/* Makes the model folder and a staging folder inside it: the check that it is writable, done
 * before anything is downloaded. */
static bool ensure_stage(fetch_run *r) {
  if (r->stage) return true;
  if (g_mkdir_with_parents(r->outdir, 0755) != 0) {
    cli_error(CMD, "cannot create the model folder '%s': %s (choose another with -o DIR)", r->outdir, g_strerror(errno));
    return false;
  }
  gchar *tmpl = g_build_filename(r->outdir, ".i2i-fetch-XXXXXX", NULL);
  if (!g_mkdtemp_full(tmpl, 0700)) {
    cli_error(CMD, "cannot write into the model folder '%s': %s (choose another with -o DIR)", r->outdir, g_strerror(errno));
    g_free(tmpl);
    return false;
  }
  r->stage = tmpl;
  return true;
}

static bool ensure_cache(fetch_run *r) {
  if (g_mkdir_with_parents(r->cache, 0755) != 0) {
    cli_error(CMD, "cannot create the download folder '%s': %s", r->cache, g_strerror(errno));
    return false;
  }
  return true;
}

/* Downloads the checkpoint into the cache; returns its path (a new string) or NULL. */
static char *download(fetch_run *r, const i2i_manifest_entry *e, const char *label) {
  if (!ensure_cache(r)) return NULL;
  gchar *dest = g_build_filename(r->cache, e->checkpoint, NULL);
  gchar *part = g_strconcat(dest, ".part", NULL);
  if (r->force) unlink(part);
  struct stat sb;
  bool resume = stat(part, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > 0;
  char sz[32];
  printf("  download:       %s%s%s\n", e->url, resume ? ", resuming at " : "",
         resume ? fetch_format_bytes((uint64_t)sb.st_size, sz, sizeof sz) : "");
  fflush(stdout);
  cli_progress bar;
  char lab[96];
  snprintf(lab, sizeof lab, "downloading %s", label);
  cli_progress_init(&bar, lab);
  fetch_options o = r->dopt;
  o.url = e->url;
  o.dest = dest;
  o.progress = cli_progress_update;
  o.progress_user = &bar;
  fetch_result res;
  char err[1024];
  double t0 = cli_now();
  fetch_status st = fetch_download(&o, &res, err, sizeof err);
  cli_progress_done(&bar);
  if (st) {
    cli_error(CMD, "%s", err);
    if (st == FETCH_E_NETWORK && !r->from && !r->from_env)
      fprintf(stderr, "  (on a machine without internet: download %s elsewhere and use --from FILE|DIR)\n", e->checkpoint);
    g_free(dest);
    g_free(part);
    return NULL;
  }
  char got[32], all[32];
  double dt = cli_now() - t0;
  printf("                  %s received in %.1f s", fetch_format_bytes(res.bytes_received, got, sizeof got), dt);
  if (res.bytes_received != res.size) printf(" (the file is %s)", fetch_format_bytes(res.size, all, sizeof all));
  if (res.attempts > 1) printf(", %d requests", res.attempts);
  if (res.restarts) printf(", the server ignored a resume and sent the whole file");
  printf("\n");
  g_free(part);
  return dest;
}

/* Prints the report lines and renames the converted files from the stage into the model folder. */
static bool install_set(fetch_run *r, const convert_set *set) {
  char err[1024];
  convert_clear_stage(r->stage);
  if (convert_write(r->ctx, set, r->stage, NULL, err, sizeof err)) {
    cli_error(CMD, "writing the models: %s", err);
    convert_clear_stage(r->stage);
    return false;
  }
  bool ok = true;
  bool first = true;
  for (int pass = 0; pass < 2; pass++)
    for (size_t i = 0; i < set->n; i++) {
      const convert_net *n = &set->nets[i];
      if (n->discriminator != (pass == 1)) continue;
      gchar *file = g_strdup_printf("%s%s.onnx", n->task, n->discriminator ? ".D" : "");
      gchar *from = g_build_filename(r->stage, file, NULL);
      gchar *to = g_build_filename(r->outdir, file, NULL);
      if (ok && rename(from, to) != 0) {
        cli_error(CMD, "cannot install '%s': %s", to, g_strerror(errno));
        ok = false;
      }
      if (ok) {
        const char *label = i2i_model_meta(n->model, "i2i.menu_label");
        printf("  %-16s%s  (%s%s%s)\n", first ? "installed:" : "", to, n->discriminator ? "discriminator, " : "",
               !n->discriminator && label ? label : "", n->discriminator ? n->architecture : "");
        first = false;
      }
      g_free(file);
      g_free(from);
      g_free(to);
    }
  convert_clear_stage(r->stage);
  return ok;
}

static void print_learned(const convert_set *set) {
  size_t nd = 0, ng = 0;
  for (size_t i = 0; i < set->n; i++) {
    if (set->nets[i].discriminator) nd++;
    else ng++;
  }
  printf("  container:      %s\n", set->container);
  printf("  layout:         %s; colour order %s (from the %s)\n", set->layout, set->channel_order, set->channel_order_from);
  printf("  pickle globals: %s\n", set->globals[0] ? set->globals : "none");
  printf("  meta globals:   %s\n", set->opaque[0] ? set->opaque : "none outside the allowlist");
  if (set->opaque[0]) printf("                  (kept as inert values, never called)\n");
  printf("  networks:       %zu generator%s", ng, ng == 1 ? "" : "s");
  for (size_t i = 0; i < set->n; i++)
    if (!set->nets[i].discriminator) printf("%s%s (%s)", i ? ", " : ": ", set->nets[i].key, set->nets[i].architecture);
  printf("\n  discriminators: %s", set->has_discriminators ? "present" : "absent (fine-tuning starts them from scratch)");
  if (nd) printf(" (%zu)", nd);
  printf("\n");
}

/* One checkpoint: skip it when installed, else get it, verify, convert, install. */
static bool do_checkpoint(fetch_run *r, const ckpt_job *j) {
  const i2i_manifest_entry *e = j->e;
  const char *first_task = g_ptr_array_index(j->tasks, 0);
  if (!plain_name(e->checkpoint) || !e->url[0] || !hex_prefix_ok(e->sha256_prefix)) {
    cli_error(CMD, "the manifest's entry for '%s' has a bad file name, URL or sha256 prefix", first_task);
    return false;
  }
  if (!r->force) {
    GString *have = g_string_new(NULL);
    bool all = true;
    for (guint i = 0; i < j->tasks->len; i++) {
      char *p = installed_path(r, g_ptr_array_index(j->tasks, i));
      if (!p) all = false;
      else g_string_append_printf(have, "  %s\n", p);
      g_free(p);
    }
    if (all) {
      printf("%s: installed already (--force fetches it again)\n%s", e->checkpoint, have->str);
      g_string_free(have, TRUE);
      return true;
    }
    g_string_free(have, TRUE);
  }
  printf("%s\n", e->checkpoint);
  fflush(stdout);
  if (!ensure_stage(r)) return false;
  char err[1024];
  bool downloaded = false;
  char *path = find_local(r, e);
  if (path) {
    printf("  source:         %s (yours, left untouched)\n", path);
  } else if (r->from || r->from_env) {
    GString *w = g_string_new(NULL);
    for (gchar **f = r->from; f && *f; f++) g_string_append_printf(w, "%s%s", w->len ? ", " : "", *f);
    if (r->from_env) g_string_append_printf(w, "%s%s (I2I_FETCH_FROM)", w->len ? ", " : "", r->from_env);
    cli_error(CMD, "%s is not in %s; download it from %s, or leave out --from / I2I_FETCH_FROM to let i2i fetch it",
              e->checkpoint, w->str, e->url);
    g_string_free(w, TRUE);
    return false;
  } else {
    gchar *cached = g_build_filename(r->cache, e->checkpoint, NULL);
    if (r->force) unlink(cached);
    if (is_file(cached)) {
      printf("  source:         %s (downloaded before)\n", cached);
      const char *h = file_hash(r, cached, err, sizeof err);
      if (h && !g_ascii_strncasecmp(h, e->sha256_prefix, strlen(e->sha256_prefix))) {
        path = cached;
        cached = NULL;
      } else {
        gchar *bad = g_strconcat(cached, ".bad", NULL);
        rename(cached, bad);
        printf("                  it does not verify any more; kept aside as %s, downloading again\n", bad);
        g_hash_table_remove(r->hashes, cached);
        g_free(bad);
      }
    }
    g_free(cached);
    if (!path) {
      path = download(r, e, first_task);
      if (!path) return false;
      downloaded = true;
    }
  }
  bool ok = false;
  gchar *link = NULL;
  convert_set set;
  bool have_set = false;
  const char *h = file_hash(r, path, err, sizeof err);
  if (!h) {
    cli_error(CMD, "%s", err);
    goto out;
  }
  if (g_ascii_strncasecmp(h, e->sha256_prefix, strlen(e->sha256_prefix))) {
    if (downloaded) {
      gchar *bad = g_strconcat(path, ".bad", NULL);
      if (rename(path, bad) == 0)
        cli_error(CMD, "%s: sha256 mismatch: the download's sha256 begins %.8s, the published file's %s; kept aside as %s, "
                  "nothing converted or installed (run again to download it anew)", e->checkpoint, h, e->sha256_prefix, bad);
      else
        cli_error(CMD, "%s: sha256 mismatch (begins %.8s, expected %s), and it could not be set aside: %s", e->checkpoint, h,
                  e->sha256_prefix, g_strerror(errno));
      g_free(bad);
    } else {
      cli_error(CMD, "%s: sha256 mismatch: '%s' begins %.8s, the published file %s; it is not the published checkpoint "
                "(damaged, or another file); not converted", e->checkpoint, path, h, e->sha256_prefix);
    }
    goto out;
  }
  printf("  sha256:         %s (matches the published %s)\n", h, e->sha256_prefix);
  /* the converter knows a published file by its name: give a renamed copy its published name */
  gchar *base = g_path_get_basename(path);
  const char *conv_path = path;
  if (strcmp(base, e->checkpoint)) {
    link = g_build_filename(r->stage, e->checkpoint, NULL);
    gchar *abs = g_canonicalize_filename(path, NULL);
    unlink(link);
    if (symlink(abs, link) != 0) {
      cli_error(CMD, "cannot link '%s' as '%s': %s", path, link, g_strerror(errno));
      g_free(abs);
      g_free(base);
      goto out;
    }
    g_free(abs);
    conv_path = link;
  }
  g_free(base);
  convert_opts co = {0};
  if (convert_load(r->ctx, conv_path, &co, &set, err, sizeof err)) {
    cli_error(CMD, "converting %s: %s", e->checkpoint, err);
    goto out;
  }
  have_set = true;
  if (link) {
    unlink(link);
    g_free(link);
    link = NULL;
  }
  print_learned(&set);
  for (guint i = 0; i < j->tasks->len; i++) {
    const char *t = g_ptr_array_index(j->tasks, i);
    bool found = false;
    for (size_t k = 0; k < set.n; k++)
      if (!set.nets[k].discriminator && !strcmp(set.nets[k].task, t)) found = true;
    if (!found) {
      cli_error(CMD, "%s holds no generator for '%s' (the manifest expects '%s'); nothing installed", e->checkpoint, t,
                i2i_manifest_find(r->ctx, t)->generator_key);
      goto out;
    }
  }
  if (!install_set(r, &set)) goto out;
  ok = true;
  if (downloaded && !r->keep) unlink(path);
  else if (downloaded) printf("  kept:           %s\n", path);
out:
  if (link) {
    unlink(link);
    g_free(link);
  }
  if (have_set) convert_set_free(&set);
  g_free(path);
  return ok;
}

static void list_models(i2i_ctx *ctx) {
  for (size_t i = 0; i < i2i_manifest_count(ctx); i++) {
    const i2i_manifest_entry *e = i2i_manifest_get(ctx, i);
    char *p = NULL;
    bool have = i2i_model_find(ctx, e->task, &p) == I2I_OK;
    i2i_free(ctx, p);
    printf("%-28s %-34s %s\n", e->task, e->label, have ? "installed" : "");
  }
}

/* Adds the task once, keeping the request order. */
static void want(GPtrArray *tasks, const char *t) {
  for (guint i = 0; i < tasks->len; i++)
    if (!strcmp(g_ptr_array_index(tasks, i), t)) return;
  g_ptr_array_add(tasks, (gpointer)t);
}

int cmd_fetch(int argc, char **argv) {
  gboolean list = FALSE, all = FALSE, force = FALSE, keep = FALSE;
  gchar **from = NULL;
  gchar *outdir = NULL;
  gint timeout = 30, retries = 3;
  GOptionEntry entries[] = {
    {"list", 'l', 0, G_OPTION_ARG_NONE, &list, "List the published models and whether each is installed", NULL},
    {"all", 'a', 0, G_OPTION_ARG_NONE, &all, "Fetch every published model", NULL},
    {"from", 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &from,
     "Use checkpoints you already have: a .pth file or a folder holding them under their published names "
     "(repeatable; also I2I_FETCH_FROM=DIR); still verified", "PATH"},
    {"output-dir", 'o', 0, G_OPTION_ARG_FILENAME, &outdir, "Install into DIR (default: ~/.local/share/i2i/models)", "DIR"},
    {"force", 'f', 0, G_OPTION_ARG_NONE, &force, "Download and install again even when installed", NULL},
    {"keep-download", 'k', 0, G_OPTION_ARG_NONE, &keep, "Keep the downloaded .pth in the download folder", NULL},
    {"timeout", 0, 0, G_OPTION_ARG_INT, &timeout, "Give up on a transfer stalled (under 1 KiB/s) for SECONDS (default 30)", "SECONDS"},
    {"retries", 0, 0, G_OPTION_ARG_INT, &retries, "Resume a broken or stalled download up to N times (default 3)", "N"},
    {NULL, 0, 0, 0, NULL, NULL, NULL}};
  GOptionContext *oc = g_option_context_new("TASK... | --all | --list - download, verify, convert and install published models");
  g_option_context_add_main_entries(oc, entries, NULL);
  g_option_context_set_description(oc,
    "TASK is a direction such as winter2summer (`i2i fetch --list` shows them). Each published checkpoint is\n"
    "downloaded once (resuming an interrupted download), its sha256 checked against the manifest, converted,\n"
    "and every model in it (both directions, and the discriminators for fine-tuning) installed where the\n"
    "plug-in and `i2i translate` find them. Downloads go to $XDG_CACHE_HOME/i2i/downloads. Offline: put the\n"
    "published .pth files in a folder and pass --from DIR (or set I2I_FETCH_FROM=DIR).");
  GError *gerr = NULL;
  int rc = 2;
  fetch_run r = {0};
  GPtrArray *tasks = g_ptr_array_new();
  GPtrArray *jobs = g_ptr_array_new();
  bool curl_up = false;
  if (!g_option_context_parse(oc, &argc, &argv, &gerr)) {
    cli_error(CMD, "%s", gerr->message);
    g_error_free(gerr);
    goto out;
  }
  if (timeout <= 0 || retries < 0 || retries > 100) {
    cli_error(CMD, "--timeout takes a positive number of seconds and --retries 0 to 100");
    goto out;
  }
  r.ctx = cli_ctx(I2I_BACKEND_CPU, 1, 0);
  if (!r.ctx) goto out;
  if (!i2i_manifest_count(r.ctx)) {
    cli_error(CMD, "no published models: %s", i2i_ctx_errmsg(r.ctx));
    rc = 1;
    goto out;
  }
  if (list) {
    list_models(r.ctx);
    rc = 0;
    goto out;
  }
  r.hashes = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  r.from = from;
  const char *env = getenv("I2I_FETCH_FROM");
  r.from_env = env && *env ? env : NULL;
  if (r.from_env && !is_dir(r.from_env)) {
    cli_error(CMD, "I2I_FETCH_FROM='%s' is not a folder", r.from_env);
    goto out;
  }
  for (gchar **f = from; f && *f; f++)
    if (!is_dir(*f) && !is_file(*f)) {
      cli_error(CMD, "--from '%s': no such file or folder", *f);
      goto out;
    }
  for (int i = 1; i < argc; i++) {
    const i2i_manifest_entry *e = i2i_manifest_find(r.ctx, argv[i]);
    if (!e) {
      cli_error(CMD, "unknown model '%s'; `i2i fetch --list` shows the published ones", argv[i]);
      goto out;
    }
    want(tasks, e->task);
  }
  if (all)
    for (size_t i = 0; i < i2i_manifest_count(r.ctx); i++) want(tasks, i2i_manifest_get(r.ctx, i)->task);
  if (!tasks->len && from) {
    /* no tasks named: every direction of the published checkpoints the --from paths hold */
    for (gchar **f = from; *f; f++) {
      if (is_file(*f)) {
        char err[1024];
        const i2i_manifest_entry *e = identify(&r, *f, err, sizeof err);
        if (!e) {
          cli_error(CMD, "%s", err);
          rc = 1;
          goto out;
        }
        for (size_t i = 0; i < i2i_manifest_count(r.ctx); i++)
          if (!strcmp(i2i_manifest_get(r.ctx, i)->checkpoint, e->checkpoint)) want(tasks, i2i_manifest_get(r.ctx, i)->task);
      } else {
        for (size_t i = 0; i < i2i_manifest_count(r.ctx); i++) {
          const i2i_manifest_entry *e = i2i_manifest_get(r.ctx, i);
          gchar *p = g_build_filename(*f, e->checkpoint, NULL);
          if (is_file(p)) want(tasks, e->task);
          g_free(p);
        }
      }
    }
    if (!tasks->len) {
      cli_error(CMD, "no published checkpoint in the --from paths (a folder must hold them under their published names)");
      rc = 1;
      goto out;
    }
  }
  if (!tasks->len) {
    cli_error(CMD, "name the models to fetch (e.g. `i2i fetch winter2summer`), or --all; `i2i fetch --list` shows them");
    goto out;
  }
  /* one job per checkpoint, in the order its first task was asked for */
  for (guint i = 0; i < tasks->len; i++) {
    const i2i_manifest_entry *e = i2i_manifest_find(r.ctx, g_ptr_array_index(tasks, i));
    ckpt_job *j = NULL;
    for (guint k = 0; k < jobs->len && !j; k++)
      if (!strcmp(((ckpt_job *)g_ptr_array_index(jobs, k))->e->checkpoint, e->checkpoint)) j = g_ptr_array_index(jobs, k);
    if (!j) {
      j = g_new0(ckpt_job, 1);
      j->e = e;
      j->tasks = g_ptr_array_new();
      g_ptr_array_add(jobs, j);
    }
    g_ptr_array_add(j->tasks, (gpointer)e->task);
  }
  rc = 1;
  if (outdir) {
    r.outdir = g_strdup(outdir);
    r.outdir_given = true;
  } else {
    char *d;
    if (i2i_model_user_dir(r.ctx, &d)) {
      cli_error(CMD, "%s", i2i_ctx_errmsg(r.ctx));
      goto out;
    }
    r.outdir = g_strdup(d);
    i2i_free(r.ctx, d);
  }
  r.cache = g_build_filename(g_get_user_cache_dir(), "i2i", "downloads", NULL);
  r.force = force;
  r.keep = keep;
  fetch_default_options(&r.dopt);
  r.dopt.stall_timeout_s = timeout;
  r.dopt.retries = retries;
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    cli_error(CMD, "cannot initialise libcurl");
    goto out;
  }
  curl_up = true;
  int failed = 0;
  for (guint k = 0; k < jobs->len; k++) {
    if (!do_checkpoint(&r, g_ptr_array_index(jobs, k))) failed++;
    fflush(stdout);
  }
  if (jobs->len > 1 || failed)
    printf("%u checkpoint%s: %u ready, %d failed\n", jobs->len, jobs->len == 1 ? "" : "s", jobs->len - (guint)failed, failed);
  if (!failed) {
    const char *t = tasks->len ? g_ptr_array_index(tasks, 0) : NULL;
    const i2i_manifest_entry *e = t ? i2i_manifest_find(r.ctx, t) : NULL;
    if (e && !r.outdir_given)
      printf("Try it: i2i translate %s photo.jpg out.jpg, or in GIMP: Filters > Translate > %s\n", e->task, e->label);
    else if (e)
      printf("Use it: i2i translate %s/%s.onnx photo.jpg out.jpg (or add %s to I2I_MODEL_PATH)\n", r.outdir, e->task, r.outdir);
  }
  rc = failed ? 1 : 0;
out:
  if (r.stage) {
    convert_clear_stage(r.stage);
    rmdir(r.stage);
  }
  for (guint k = 0; k < jobs->len; k++) {
    ckpt_job *j = g_ptr_array_index(jobs, k);
    g_ptr_array_free(j->tasks, TRUE);
    g_free(j);
  }
  g_ptr_array_free(jobs, TRUE);
  g_ptr_array_free(tasks, TRUE);
  if (r.hashes) g_hash_table_destroy(r.hashes);
  if (curl_up) curl_global_cleanup();
  g_free(r.stage);
  g_free(r.outdir);
  g_free(r.cache);
  i2i_ctx_free(r.ctx);
  g_option_context_free(oc);
  g_strfreev(from);
  g_free(outdir);
  return rc;
}
