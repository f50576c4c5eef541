/* cuda/algo_cache.c: the on-disk cache of cuDNN algorithm choices (see algo_cache.h).
 *
 * Plain C11 with POSIX file calls; it knows nothing of CUDA or cuDNN: keys and values are
 * opaque to it. The file is bounded (4 MiB, 1 KiB lines) and rewritten atomically (temporary
 * file + rename), so a crash or a concurrent process never leaves a torn cache.
 */
#include "algo_cache.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_FILE_BYTES (4u << 20)
#define MAX_LINE 1024
#define MAX_ENTRIES 100000

typedef struct {
  char *key;
  int algo, math;
  size_t ws;
} entry;

struct algo_cache {
  char path[512];
  entry *e;
  size_t n, cap;
  int dirty;
};

static int find(const algo_cache *c, const char *key) {
  for (size_t i = 0; i < c->n; i++)
    if (!strcmp(c->e[i].key, key)) return (int)i;
  return -1;
}

static int add(algo_cache *c, const char *key, int algo, int math, size_t ws) {
  int i = find(c, key);
  if (i >= 0) {
    c->e[i].algo = algo;
    c->e[i].math = math;
    c->e[i].ws = ws;
    return 0;
  }
  if (c->n >= MAX_ENTRIES) return 0;
  if (c->n == c->cap) {
    size_t nc = c->cap ? c->cap * 2 : 64;
    entry *ne = realloc(c->e, nc * sizeof *ne);
    if (!ne) return -1;
    c->e = ne;
    c->cap = nc;
  }
  size_t kl = strlen(key) + 1;
  char *k = malloc(kl);
  if (!k) return -1;
  memcpy(k, key, kl);
  c->e[c->n++] = (entry){k, algo, math, ws};
  return 0;
}

/* Reads `path` and adds its entries (without replacing entries already present when
 * keep_existing). Returns -1 only on host memory exhaustion. */
static int load(algo_cache *c, int keep_existing) {
  if (!c->path[0]) return 0;
  FILE *f = fopen(c->path, "r");
  if (!f) return 0;
  char line[MAX_LINE + 2];
  size_t total = 0;
  int rc = 0;
  while (fgets(line, sizeof line, f)) {
    size_t l = strlen(line);
    total += l;
    if (total > MAX_FILE_BYTES) break;
    if (l == 0 || line[l - 1] != '\n') continue; /* overlong or unterminated: skipped */
    line[--l] = 0;
    if (line[0] == '#' || !line[0]) continue;
    char *t1 = strchr(line, '\t');
    if (!t1) continue;
    *t1 = 0;
    char *end;
    long algo = strtol(t1 + 1, &end, 10);
    if (*end != '\t' || algo < 0 || algo > 64) continue;
    long math = strtol(end + 1, &end, 10);
    if (*end != '\t' || math < 0 || math > 16) continue;
    errno = 0;
    unsigned long long ws = strtoull(end + 1, &end, 10);
    if (*end || errno) continue;
    if (keep_existing && find(c, line) >= 0) continue;
    if (add(c, line, (int)algo, (int)math, (size_t)ws)) {
      rc = -1;
      break;
    }
  }
  fclose(f);
  return rc;
}

static int mkdirs(const char *dir) {
  char tmp[512];
  size_t l = strlen(dir);
  if (l == 0 || l >= sizeof tmp) return -1;
  memcpy(tmp, dir, l + 1);
  for (char *p = tmp + 1; *p; p++)
    if (*p == '/') {
      *p = 0;
      if (mkdir(tmp, 0755) && errno != EEXIST) return -1;
      *p = '/';
    }
  if (mkdir(tmp, 0755) && errno != EEXIST) return -1;
  return 0;
}

algo_cache *algo_cache_open(void) {
  algo_cache *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  const char *env = getenv("I2I_CUDA_ALGO_CACHE");
  int n = 0;
  if (env && !strcmp(env, "off")) {
    c->path[0] = 0;
  } else if (env && *env) {
    n = snprintf(c->path, sizeof c->path, "%s", env);
  } else {
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (xdg && xdg[0] == '/')
      n = snprintf(c->path, sizeof c->path, "%s/i2i/cudnn-algos.txt", xdg);
    else if (home && *home)
      n = snprintf(c->path, sizeof c->path, "%s/.cache/i2i/cudnn-algos.txt", home);
  }
  if (n < 0 || (size_t)n >= sizeof c->path) c->path[0] = 0;
  if (load(c, 0)) {
    algo_cache_close(c);
    return NULL;
  }
  return c;
}

void algo_cache_close(algo_cache *c) {
  if (!c) return;
  for (size_t i = 0; i < c->n; i++) free(c->e[i].key);
  free(c->e);
  free(c);
}

const char *algo_cache_path(const algo_cache *c) { return c ? c->path : ""; }

int algo_cache_get(const algo_cache *c, const char *key, int *algo, int *math, size_t *ws) {
  if (!c) return 0;
  int i = find(c, key);
  if (i < 0) return 0;
  *algo = c->e[i].algo;
  *math = c->e[i].math;
  *ws = c->e[i].ws;
  return 1;
}

int algo_cache_put(algo_cache *c, const char *key, int algo, int math, size_t ws) {
  if (!c || strlen(key) >= 512 || strpbrk(key, "\t\n")) return 0;
  if (add(c, key, algo, math, ws)) return -1;
  c->dirty = 1;
  return 0;
}

int algo_cache_flush(algo_cache *c) {
  if (!c || !c->dirty || !c->path[0]) return 0;
  c->dirty = 0;
  if (load(c, 1)) return -1;
  char dir[512];
  snprintf(dir, sizeof dir, "%s", c->path);
  char *slash = strrchr(dir, '/');
  if (slash && slash != dir) {
    *slash = 0;
    if (mkdirs(dir)) return -1;
  }
  char tmp[600];
  int n = snprintf(tmp, sizeof tmp, "%s.tmp.%ld", c->path, (long)getpid());
  if (n < 0 || (size_t)n >= sizeof tmp) return -1;
  FILE *f = fopen(tmp, "w");
  if (!f) return -1;
  int ok = fprintf(f, "# i2i cuDNN algorithm cache v1: key\talgo\tmath\tworkspace\n") > 0;
  for (size_t i = 0; i < c->n && ok; i++)
    ok = fprintf(f, "%s\t%d\t%d\t%zu\n", c->e[i].key, c->e[i].algo, c->e[i].math, c->e[i].ws) > 0;
  if (fclose(f) != 0) ok = 0;
  if (!ok || rename(tmp, c->path) != 0) {
    unlink(tmp);
    return -1;
  }
  return 0;
}
