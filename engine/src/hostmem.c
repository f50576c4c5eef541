/* hostmem.c: how much host memory this process can still take without being killed for it.
 *
 * The least of the system's MemAvailable (plus SwapFree when asked) and, for each cgroup memory
 * limit on the process's group and its ancestors (cgroup v2 memory.max, v1 memory.limit_in_bytes),
 * the limit less the group's usage not counting its inactive file cache (which the kernel
 * reclaims before it kills). A container or a systemd unit with a memory limit on a large host
 * sees its own limit, not the host's free memory.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>

/* Reads the first unsigned number of a file; false when missing, "max" or not a number. */
static bool read_u64_file(const char *path, uint64_t *v) {
  FILE *f = fopen(path, "r");
  if (!f) return false;
  unsigned long long x;
  bool ok = fscanf(f, "%llu", &x) == 1;
  fclose(f);
  if (ok) *v = (uint64_t)x;
  return ok;
}

/* The value of `key` in a "key value" file such as memory.stat, or 0. */
static uint64_t read_stat_key(const char *path, const char *key) {
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  char line[256];
  unsigned long long x = 0;
  size_t n = strlen(key);
  while (fgets(line, sizeof line, f))
    if (strncmp(line, key, n) == 0 && line[n] == ' ' && sscanf(line + n + 1, "%llu", &x) == 1) break;
  fclose(f);
  return (uint64_t)x;
}

typedef struct {
  const char *limit, *usage, *inactive_key;
} cgroup_files;

static const cgroup_files cg_v2 = {"memory.max", "memory.current", "inactive_file"};
static const cgroup_files cg_v1 = {"memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"};

/* Lowers *room to what the limits of group `rel` under `mount` and of its ancestors leave. Groups
 * whose folders are not there (a container sees its own group as the mount's root) are skipped. */
static void cgroup_room(const char *mount, const char *rel, const cgroup_files *cf, uint64_t *room) {
  char dir[4096], path[4200];
  if (snprintf(dir, sizeof dir, "%s%s", mount, rel) >= (int)sizeof dir) return;
  size_t root_len = strlen(mount);
  for (;;) {
    uint64_t limit, usage;
    snprintf(path, sizeof path, "%s/%s", dir, cf->limit);
    if (read_u64_file(path, &limit)) {
      snprintf(path, sizeof path, "%s/%s", dir, cf->usage);
      if (read_u64_file(path, &usage)) {
        snprintf(path, sizeof path, "%s/memory.stat", dir);
        uint64_t inactive = read_stat_key(path, cf->inactive_key);
        uint64_t used = usage > inactive ? usage - inactive : 0;
        uint64_t left = limit > used ? limit - used : 0;
        if (left < *room) *room = left;
      }
    }
    char *slash = strrchr(dir, '/');
    if (!slash || (size_t)(slash - dir) < root_len) break;
    *slash = 0;
  }
}

uint64_t i2i_host_memory_available(int with_swap) {
  uint64_t room = UINT64_MAX;
  FILE *f = fopen("/proc/meminfo", "r");
  if (f) {
    char line[256];
    unsigned long long kb, avail = 0, swap = 0;
    bool found = false;
    while (fgets(line, sizeof line, f)) {
      if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
        avail = kb, found = true;
      else if (sscanf(line, "SwapFree: %llu kB", &kb) == 1)
        swap = kb;
    }
    fclose(f);
    if (found) room = ((uint64_t)avail + (with_swap ? (uint64_t)swap : 0)) * 1024;
  }
  f = fopen("/proc/self/cgroup", "r");
  if (f) {
    char line[4096];
    while (fgets(line, sizeof line, f)) {
      line[strcspn(line, "\n")] = 0;
      char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
      if (!c2 || c2[1] != '/') continue;
      *c2 = 0;
      const char *controllers = c1 + 1, *rel = c2 + 1;
      if (strcmp(rel, "/") == 0) rel = "";
      if (!*controllers && c1 - line == 1 && line[0] == '0') {
        /* v2: the unified hierarchy, at /sys/fs/cgroup or (hybrid systems) /sys/fs/cgroup/unified */
        cgroup_room("/sys/fs/cgroup", rel, &cg_v2, &room);
        cgroup_room("/sys/fs/cgroup/unified", rel, &cg_v2, &room);
      } else {
        for (const char *p = controllers; p;) {
          const char *comma = strchr(p, ',');
          size_t n = comma ? (size_t)(comma - p) : strlen(p);
          if (n == 6 && strncmp(p, "memory", 6) == 0) cgroup_room("/sys/fs/cgroup/memory", rel, &cg_v1, &room);
          p = comma ? comma + 1 : NULL;
        }
      }
    }
    fclose(f);
  }
  return room;
}
