/* cuda/algo_cache.h: the on-disk cache of cuDNN algorithm choices (plain C, no CUDA), so a
 * second process does no search. File: $I2I_CUDA_ALGO_CACHE, else $XDG_CACHE_HOME/i2i/ (else
 * ~/.cache/i2i/) cudnn-algos.txt; "off" disables it. Lines are "key TAB algo TAB math TAB
 * workspace"; keys name the GPU model, compute capability, cuDNN / CUDA versions and shape. */
#ifndef I2I_ALGO_CACHE_H
#define I2I_ALGO_CACHE_H

#include <stddef.h>

typedef struct algo_cache algo_cache;

/* Opens the cache and reads its file (a missing or unreadable file is an empty cache; malformed
 * lines are skipped). Returns NULL only when host memory runs out. */
algo_cache *algo_cache_open(void);
void algo_cache_close(algo_cache *c);
/* The file's path, or "" when the cache is off. */
const char *algo_cache_path(const algo_cache *c);
/* 1 and the entry when `key` is known, else 0. */
int algo_cache_get(const algo_cache *c, const char *key, int *algo, int *math, size_t *ws);
/* Adds or replaces an entry in memory (0, or -1 when host memory runs out). Keys hold no tabs
 * or newlines and are under 512 bytes. */
int algo_cache_put(algo_cache *c, const char *key, int algo, int math, size_t ws);
/* Writes the entries added since the last flush: re-reads the file (another process may have
 * added lines), merges, writes a temporary file in the same folder and renames it over the
 * cache. 0 on success or nothing to do, -1 when the file could not be written. */
int algo_cache_flush(algo_cache *c);

#endif
