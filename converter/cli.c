/* cli.c: helpers shared by the `i2i` subcommands (sizes, backends, context, progress bar).
 *
 * The progress bar writes to stderr only when it is a terminal, at most ten times a second,
 * and always clears its line when done, so logs and pipes stay clean.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "pth.h"

double cli_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

bool cli_parse_size(const char *s, uint64_t *bytes) {
  if (!s || !*s) return false;
  /* plain decimal digits with at most one '.', then the suffix: no sign, hex or exponent */
  size_t nd = strspn(s, "0123456789.");
  if (!nd || memchr(s, '.', nd) != memrchr(s, '.', nd) || (nd == 1 && s[0] == '.')) return false;
  char *end;
  double v = g_ascii_strtod(s, &end);
  if (end != s + nd || !(v >= 0) || !isfinite(v)) return false;
  double mult = 1;
  if (*end) {
    switch (g_ascii_toupper(*end)) {
    case 'K': mult = 1024.0; break;
    case 'M': mult = 1024.0 * 1024; break;
    case 'G': mult = 1024.0 * 1024 * 1024; break;
    case 'T': mult = 1024.0 * 1024 * 1024 * 1024; break;
    default: return false;
    }
    end++;
    if (*end == 'i' || *end == 'I') end++;
    if (*end == 'B' || *end == 'b') end++;
    if (*end) return false;
  }
  double b = v * mult;
  if (b > 1.8e19) return false;
  *bytes = (uint64_t)b;
  return true;
}

void cli_check_manifest_override(const char *cmd) {
  const char *f = getenv("I2I_MANIFEST");
  if (!f || !*f) return;
  i2i_ctx *probe = cli_ctx(I2I_BACKEND_CPU, 1, 0);
  if (!probe) return;
  if (!i2i_manifest_count(probe)) {
    fprintf(stderr, "i2i %s: warning: %s; using the built-in manifest instead\n", cmd, i2i_ctx_errmsg(probe));
    g_unsetenv("I2I_MANIFEST");
  }
  i2i_ctx_free(probe);
}

bool cli_has_ext(const char *p, const char *ext) {
  size_t l = strlen(p), e = strlen(ext);
  return l > e && !g_ascii_strcasecmp(p + l - e, ext);
}

/* g_ptr_array_sort hands the comparator pointers to the elements. */
static gint cmp_names(gconstpointer a, gconstpointer b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* What a folder listing passed over: a count and the first name of each kind. */
typedef struct {
  int n[4];
  gchar *first[4];
} skipped_kinds;

enum { SKIP_FILE, SKIP_FOLDER, SKIP_BROKEN_LINK, SKIP_SPECIAL };

static void skipped_add(skipped_kinds *k, int kind, const char *name) {
  if (!k->n[kind]++ || strcmp(name, k->first[kind]) < 0) {
    g_free(k->first[kind]);
    k->first[kind] = g_strdup(name);
  }
}

GPtrArray *cli_list_folder(const char *cmd, const char *dir, bool (*want)(const char *path), const char *what,
                           int *skipped) {
  GDir *d = g_dir_open(dir, 0, NULL);
  if (!d) return NULL;
  GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
  skipped_kinds k = {{0}, {NULL}};
  const char *n;
  while ((n = g_dir_read_name(d))) {
    if (n[0] == '.') continue;
    gchar *p = g_build_filename(dir, n, NULL);
    struct stat st, lst;
    if (want(p)) {
      g_ptr_array_add(names, p);
      continue;
    }
    if (stat(p, &st) != 0) skipped_add(&k, lstat(p, &lst) == 0 && S_ISLNK(lst.st_mode) ? SKIP_BROKEN_LINK : SKIP_SPECIAL, n);
    else if (S_ISDIR(st.st_mode)) skipped_add(&k, SKIP_FOLDER, n);
    else if (S_ISREG(st.st_mode)) skipped_add(&k, SKIP_FILE, n);
    else skipped_add(&k, SKIP_SPECIAL, n);
    g_free(p);
  }
  g_dir_close(d);
  g_ptr_array_sort(names, cmp_names);
  static const char *const kind_one[] = {"file", "subfolder", "broken link", "other entry"};
  static const char *const kind_many[] = {"files", "subfolders", "broken links", "other entries"};
  GString *msg = g_string_new(NULL);
  int total = 0;
  for (int i = 0; i < 4; i++) {
    if (!k.n[i]) continue;
    total += k.n[i];
    g_string_append_printf(msg, "%s%d %s", msg->len ? "; " : "", k.n[i], k.n[i] == 1 ? kind_one[i] : kind_many[i]);
    gchar *shown = g_strescape(k.first[i], NULL);
    g_string_append_printf(msg, k.n[i] == 1 ? " '%s'" : ", the first '%s'", shown);
    g_free(shown);
    if (i == SKIP_FILE) g_string_append_printf(msg, " (i2i reads %s)", what);
    else if (i == SKIP_FOLDER) g_string_append(msg, " (folders are not read recursively)");
    else if (i == SKIP_SPECIAL) g_string_append(msg, k.n[i] == 1 ? " (not a regular file)" : " (not regular files)");
    g_free(k.first[i]);
  }
  if (total) cli_error(cmd, "%s: skipping %s", dir, msg->str);
  if (skipped) *skipped += total;
  g_string_free(msg, TRUE);
  return names;
}

bool cli_parse_backend(const char *s, i2i_backend *b) {
  if (!s) return false;
  if (!g_ascii_strcasecmp(s, "auto")) *b = I2I_BACKEND_AUTO;
  else if (!g_ascii_strcasecmp(s, "cpu")) *b = I2I_BACKEND_CPU;
  else if (!g_ascii_strcasecmp(s, "cuda") || !g_ascii_strcasecmp(s, "gpu")) *b = I2I_BACKEND_CUDA;
  else return false;
  return true;
}

static void log_stderr(void *user, i2i_log_level lvl, const char *msg) {
  (void)user;
  fprintf(stderr, "i2i: %s%s\n", lvl == I2I_LOG_ERROR ? "error: " : lvl == I2I_LOG_WARNING ? "warning: " : "", msg);
}

i2i_ctx *cli_ctx(i2i_backend backend, int threads, uint64_t memory) {
  i2i_ctx_params p;
  i2i_ctx_default_params(&p);
  p.backend = backend;
  p.threads = threads;
  p.memory_budget = memory;
  p.log = log_stderr;
  p.log_level = getenv("I2I_DEBUG") ? I2I_LOG_DEBUG : I2I_LOG_WARNING;
  i2i_ctx *ctx;
  i2i_status st = i2i_ctx_create(&p, &ctx);
  if (st) {
    fprintf(stderr, "i2i: cannot create the engine context: %s\n", i2i_status_name(st));
    return NULL;
  }
  return ctx;
}

void cli_error(const char *cmd, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  gchar *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  /* a message may quote a file (a node name of a hostile model, a path): nothing in it may drive
   * the terminal */
  size_t n = strlen(msg), room;
  gchar *shown = g_size_checked_mul(&room, n, 4) && room < G_MAXSIZE ? g_try_malloc(room + 1) : NULL;
  fprintf(stderr, "i2i %s: %s\n", cmd, shown ? pth_shown(msg, n, shown, room + 1) : msg);
  g_free(shown);
  g_free(msg);
}

void cli_progress_init(cli_progress *p, const char *label) {
  memset(p, 0, sizeof *p);
  p->enabled = isatty(STDERR_FILENO) && !getenv("I2I_NO_PROGRESS");
  p->start = cli_now();
  snprintf(p->label, sizeof p->label, "%s", label ? label : "");
}

int cli_progress_update(void *user, double f) {
  cli_progress *p = user;
  if (!p->enabled) return 0;
  double t = cli_now();
  if (t - p->last_draw < 0.1 && f < 1.0) return 0;
  p->last_draw = t;
  if (f < 0) f = 0;
  if (f > 1) f = 1;
  int width = 30, fill = (int)(f * width + 0.5);
  char bar[64];
  for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '-';
  bar[width] = 0;
  double el = t - p->start;
  char left[32] = "";
  if (f > 0.02 && f < 1.0) {
    double rem = el * (1.0 - f) / f;
    snprintf(left, sizeof left, " %d:%02d left", (int)rem / 60, (int)rem % 60);
  }
  fprintf(stderr, "\r\033[K%s [%s] %3.0f%%%s", p->label, bar, f * 100.0, left);
  fflush(stderr);
  return 0;
}

void cli_progress_done(cli_progress *p) {
  if (!p->enabled) return;
  fprintf(stderr, "\r\033[K");
  fflush(stderr);
}
