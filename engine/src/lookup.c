/* lookup.c: where models live: resolving a task name to a file, the user's model folder, and
 * the list of installed models the plug-in's generic procedure shows.
 *
 * Search order: each folder of $I2I_MODEL_PATH, then $XDG_DATA_HOME/i2i/models, then the
 * installed data folder. Listing reads only each file's metadata, never its weights. Every
 * allocation here goes through the context's allocator hook (GLib only names the user's data
 * folder, which it computes once per process).
 */
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

#ifndef I2I_DATADIR
#define I2I_DATADIR "/usr/local/share/i2i"
#endif

/* DIR "/" NAME SUFFIX as a new string from the allocator hook (no '/' added when DIR is empty
 * or ends with one); NULL when out of memory. */
static char *path_join(i2i_ctx *ctx, const char *dir, const char *name, const char *suffix) {
  size_t ld = strlen(dir), ln = strlen(name), ls = strlen(suffix), total;
  size_t sep = ld && dir[ld - 1] != '/';
  if (!i2i_add_ok(ld, ln, &total) || !i2i_add_ok(total, ls, &total) || !i2i_add_ok(total, sep + 1, &total)) return NULL;
  char *p = i2i_alloc(ctx, total);
  if (!p) return NULL;
  memcpy(p, dir, ld);
  if (sep) p[ld] = '/';
  memcpy(p + ld + sep, name, ln);
  memcpy(p + ld + sep + ln, suffix, ls);
  p[total - 1] = 0;
  return p;
}

static void free_dirs(i2i_ctx *ctx, char **dirs) {
  if (!dirs) return;
  for (char **d = dirs; *d; d++) i2i_dealloc(ctx, *d);
  i2i_dealloc(ctx, dirs);
}

/* The folders to search, in order, NULL-terminated, from the allocator hook; NULL when out of
 * memory. Free with free_dirs. */
static char **search_dirs(i2i_ctx *ctx) {
  const char *mp = getenv("I2I_MODEL_PATH");
  if (!mp) mp = "";
  size_t n = 4; /* one part more than the colons, the two fixed folders, the NULL */
  for (const char *p = mp; *p; p++) n += *p == ':';
  char **dirs = i2i_calloc(ctx, n, sizeof *dirs);
  if (!dirs) return NULL;
  size_t k = 0;
  for (const char *p = mp; *p;) {
    size_t len = strcspn(p, ":");
    if (len) {
      if (!(dirs[k] = i2i_alloc(ctx, len + 1))) goto oom;
      memcpy(dirs[k], p, len);
      dirs[k++][len] = 0;
    }
    p += len;
    if (*p == ':') p++;
  }
  if (!(dirs[k++] = path_join(ctx, g_get_user_data_dir(), "i2i/models", ""))) goto oom;
  if (!(dirs[k++] = path_join(ctx, I2I_DATADIR, "models", ""))) goto oom;
  return dirs;
oom:
  free_dirs(ctx, dirs);
  return NULL;
}

static bool is_file(const char *p) {
  struct stat sb;
  return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

i2i_status i2i_model_user_dir(i2i_ctx *ctx, char **path) {
  if (!ctx || !path) return ctx ? i2i_fail(ctx, I2I_E_ARG, "i2i_model_user_dir: NULL argument") : I2I_E_ARG;
  *path = path_join(ctx, g_get_user_data_dir(), "i2i/models", "");
  return *path ? I2I_OK : i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
}

i2i_status i2i_model_find(i2i_ctx *ctx, const char *name, char **path) {
  if (!ctx || !name || !path) return ctx ? i2i_fail(ctx, I2I_E_ARG, "i2i_model_find: NULL argument") : I2I_E_ARG;
  *path = NULL;
  size_t nl = strlen(name);
  if (!nl) return i2i_fail(ctx, I2I_E_ARG, "empty model name");
  if (strchr(name, '/') || (nl > 5 && !strcmp(name + nl - 5, ".onnx"))) {
    struct stat sb;
    if (stat(name, &sb) != 0) return i2i_fail(ctx, I2I_E_NOT_FOUND, "model file '%s' does not exist", name);
    if (S_ISDIR(sb.st_mode)) return i2i_fail(ctx, I2I_E_NOT_FOUND, "'%s' is a directory, not a model file", name);
    *path = i2i_strdup(ctx, name);
    return *path ? I2I_OK : i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
  }
  if (name[0] == '.') return i2i_fail(ctx, I2I_E_ARG, "'%s' is not a model name", name);
  char **dirs = search_dirs(ctx);
  if (!dirs) return i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
  char looked[I2I_ERRLEN] = ""; /* the message holds no more than this anyway */
  i2i_status st = I2I_E_NOT_FOUND;
  for (char **d = dirs; *d; d++) {
    char *p = path_join(ctx, *d, name, ".onnx");
    if (!p) {
      st = i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
      break;
    }
    if (is_file(p)) {
      *path = p;
      st = I2I_OK;
      break;
    }
    size_t used = strlen(looked);
    snprintf(looked + used, sizeof looked - used, "%s%s", used ? ", " : "", *d);
    i2i_dealloc(ctx, p);
  }
  if (st == I2I_E_NOT_FOUND) {
    const i2i_manifest_entry *e = i2i_manifest_find(ctx, name);
    if (e)
      i2i_fail(ctx, I2I_E_NOT_FOUND, "model '%s' (%s) is not installed (looked in %s); install it with: i2i fetch %s",
               name, e->label, looked, name);
    else
      i2i_fail(ctx, I2I_E_NOT_FOUND,
               "no model named '%s' (looked for %s.onnx in %s); `i2i fetch --list` shows the published models, "
               "`i2i convert CHECKPOINT.pth` converts your own",
               name, name, looked);
  }
  free_dirs(ctx, dirs);
  return st;
}

/* Reads one varint at *off from the file; false at the end or on a malformed varint. */
static bool pread_varint(int fd, off_t *off, uint64_t *v) {
  unsigned char b[10];
  ssize_t n = pread(fd, b, sizeof b, *off);
  if (n <= 0) return false;
  uint64_t r = 0;
  for (int i = 0; i < n; i++) {
    r |= (uint64_t)(b[i] & 0x7f) << (7 * i);
    if (!(b[i] & 0x80)) {
      *off += i + 1;
      *v = r;
      return true;
    }
  }
  return false;
}

/* Collects the metadata_props (field 14) of a model file into `g`, skipping every other
 * top-level field with a seek, so the weights (the graph, field 7) are never read. */
static bool scan_meta(i2i_ctx *ctx, const char *path, i2i_graph *g) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat sb;
  bool ok = fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode);
  off_t off = 0, end = ok ? sb.st_size : 0;
  while (ok && off < end) {
    uint64_t key, len;
    if (!pread_varint(fd, &off, &key)) ok = false;
    else if ((key & 7) == 0) ok = pread_varint(fd, &off, &len);
    else if ((key & 7) == 1) off += 8;
    else if ((key & 7) == 5) off += 4;
    else if ((key & 7) == 2) {
      ok = pread_varint(fd, &off, &len) && len <= (uint64_t)(end - off);
      if (ok && (key >> 3) == 14) {
        uint8_t *buf = len <= (1u << 20) ? i2i_alloc(ctx, (size_t)len + 1) : NULL;
        ok = buf && pread(fd, buf, (size_t)len, off) == (ssize_t)len;
        if (ok) {
          /* wrap the entry as a one-field message so onnx_read_meta decodes it */
          uint8_t hdr[16];
          size_t h = 0;
          hdr[h++] = (14 << 3) | 2;
          uint64_t l = len;
          do {
            hdr[h++] = (uint8_t)((l & 0x7f) | (l > 0x7f ? 0x80 : 0));
            l >>= 7;
          } while (l);
          uint8_t *msg = i2i_alloc(ctx, h + (size_t)len);
          ok = msg != NULL;
          if (ok) {
            memcpy(msg, hdr, h);
            memcpy(msg + h, buf, (size_t)len);
            ok = onnx_read_meta(ctx, msg, h + (size_t)len, g) == I2I_OK;
          }
          i2i_dealloc(ctx, msg);
        }
        i2i_dealloc(ctx, buf);
      }
      off += (off_t)len;
    } else {
      ok = false;
    }
  }
  close(fd);
  return ok;
}

/* Reads the metadata of one model file without its weights. */
static bool read_entry(i2i_ctx *ctx, const char *path, char **label, i2i_family *family) {
  i2i_graph g;
  graph_init(&g);
  if (!scan_meta(ctx, path, &g)) {
    graph_clear(ctx, &g);
    return false;
  }
  const char *fam = graph_meta(&g, "i2i.family");
  *family = !fam ? I2I_FAMILY_UNKNOWN
            : !strcmp(fam, "resnet") ? I2I_FAMILY_RESNET
            : !strcmp(fam, "unet") ? I2I_FAMILY_UNET
            : !strcmp(fam, "patchgan") ? I2I_FAMILY_PATCHGAN
                                       : I2I_FAMILY_UNKNOWN;
  const char *l = graph_meta(&g, "i2i.menu_label");
  *label = l && *l ? i2i_strdup(ctx, l) : NULL;
  graph_clear(ctx, &g);
  return true;
}

void i2i_model_list_free(i2i_ctx *ctx, i2i_model_entry *e, size_t n) {
  if (!ctx || !e) return;
  for (size_t i = 0; i < n; i++) {
    i2i_dealloc(ctx, e[i].task);
    i2i_dealloc(ctx, e[i].path);
    i2i_dealloc(ctx, e[i].label);
  }
  i2i_dealloc(ctx, e);
}

static int entry_cmp(const void *a, const void *b) {
  return strcmp(((const i2i_model_entry *)a)->task, ((const i2i_model_entry *)b)->task);
}

i2i_status i2i_model_list(i2i_ctx *ctx, i2i_model_entry **entries, size_t *count) {
  if (!ctx || !entries || !count) return ctx ? i2i_fail(ctx, I2I_E_ARG, "i2i_model_list: NULL argument") : I2I_E_ARG;
  *entries = NULL;
  *count = 0;
  char **dirs = search_dirs(ctx);
  size_t n = 0, cap = 16;
  i2i_model_entry *e = dirs ? i2i_calloc(ctx, cap, sizeof *e) : NULL;
  i2i_status st = e ? I2I_OK : i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
  for (char **d = dirs; !st && *d; d++) {
    DIR *dir = opendir(*d);
    if (!dir) continue;
    size_t first = n;
    struct dirent *de;
    while ((de = readdir(dir)) && !st) {
      size_t l = strlen(de->d_name);
      if (l <= 5 || strcmp(de->d_name + l - 5, ".onnx") || de->d_name[0] == '.') continue;
      if (l > 7 && !strcmp(de->d_name + l - 7, ".D.onnx")) continue;
      char task[256];
      snprintf(task, sizeof task, "%.*s", (int)(l - 5), de->d_name);
      bool dup = false;
      for (size_t i = 0; i < n; i++)
        if (!strcmp(e[i].task, task)) dup = true;
      if (dup) continue;
      char *p = path_join(ctx, *d, de->d_name, "");
      if (!p) {
        st = i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
        break;
      }
      char *label = NULL;
      i2i_family fam;
      if (!is_file(p) || !read_entry(ctx, p, &label, &fam) || fam == I2I_FAMILY_PATCHGAN) {
        i2i_dealloc(ctx, label);
        i2i_dealloc(ctx, p);
        continue;
      }
      if (n == cap) {
        i2i_model_entry *ne = i2i_calloc(ctx, cap * 2, sizeof *ne);
        if (!ne) {
          st = i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
          i2i_dealloc(ctx, label);
          i2i_dealloc(ctx, p);
          break;
        }
        memcpy(ne, e, sizeof *e * n);
        i2i_dealloc(ctx, e);
        e = ne;
        cap *= 2;
      }
      e[n].task = i2i_strdup(ctx, task);
      e[n].path = p;
      e[n].label = label ? label : i2i_strdup(ctx, task);
      e[n].family = fam;
      n++;
      if (!e[n - 1].task || !e[n - 1].path || !e[n - 1].label) st = i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
    }
    closedir(dir);
    qsort(e + first, n - first, sizeof *e, entry_cmp);
  }
  free_dirs(ctx, dirs);
  if (st) {
    i2i_model_list_free(ctx, e, n);
    return st;
  }
  i2i_clear_err(ctx);
  *entries = e;
  *count = n;
  return I2I_OK;
}
