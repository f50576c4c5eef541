/* converter/imageio/atomicfile.c: temporary-then-rename file writing (see atomicfile.h).
 * Only creates, syncs, renames and removes files; it does not write their content. Errors
 * are reported in the caller's buffer with the folder or file named, never by exiting. */
#include "atomicfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static bool fail(char *err, size_t errlen, const char *fmt, ...)
{
  if (err && errlen > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return false;
}

/* The process umask from /proc (Linux), else the conventional 022: umask() itself cannot be
 * read without being changed, which would race with other threads creating files. */
static mode_t current_umask(void)
{
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  mode_t mask = 022;
  if (!f)
    return mask;
  while (fgets(line, sizeof line, f)) {
    unsigned int v;
    if (sscanf(line, "Umask: %o", &v) == 1) {
      mask = (mode_t)(v & 0777);
      break;
    }
  }
  fclose(f);
  return mask;
}

static char *dup_str(const char *s)
{
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d)
    memcpy(d, s, n);
  return d;
}

/* Splits `path` into a folder ("." when none) and a base name, both malloc'd. */
static bool split_path(const char *path, char **dir, char **base)
{
  const char *slash = strrchr(path, '/');
  *dir = NULL;
  *base = NULL;
  if (!slash) {
    *dir = dup_str(".");
    *base = dup_str(path);
  } else {
    size_t dlen = (size_t)(slash - path);
    *dir = malloc(dlen == 0 ? 2 : dlen + 1);
    if (*dir) {
      if (dlen == 0) {
        strcpy(*dir, "/");
      } else {
        memcpy(*dir, path, dlen);
        (*dir)[dlen] = '\0';
      }
    }
    *base = dup_str(slash + 1);
  }
  if (!*dir || !*base) {
    free(*dir);
    free(*base);
    *dir = *base = NULL;
    return false;
  }
  return true;
}

/* The file to write for `dest` (malloc'd): `dest` itself, or when it is a symbolic link the
 * file the link leads to, so that the link is kept and its target replaced, as cp writes
 * through links. A link that leads nowhere (or in a loop) is refused, as cp refuses to write
 * through a dangling link: creating its target could put a file anywhere. */
static char *write_target(const char *dest, char *err, size_t errlen)
{
  struct stat st;
  char *real, *d;
  if (lstat(dest, &st) != 0 || !S_ISLNK(st.st_mode)) {
    if (!(d = dup_str(dest)))
      fail(err, errlen, "out of memory");
    return d;
  }
  real = realpath(dest, NULL);
  if (!real) {
    if (errno == ENOENT)
      fail(err, errlen, "cannot write '%s': it is a symbolic link to a file that does not exist "
           "(i2i writes through links to existing files only)", dest);
    else
      fail(err, errlen, "cannot write '%s': cannot follow the symbolic link (%s)", dest,
           strerror(errno));
  }
  return real;
}

bool i2i_atomic_open(i2i_atomic_file *f, const char *dest_name, char *err, size_t errlen)
{
  char *dest = NULL, *dir = NULL, *base = NULL, *tmpl = NULL;
  struct stat st;
  mode_t mode;
  size_t n;
  int fd;

  memset(f, 0, sizeof *f);
  f->fd = -1;
  if (!dest_name || !*dest_name)
    return fail(err, errlen, "no output file name given");
  if (!(dest = write_target(dest_name, err, errlen)))
    return false;
  if (!split_path(dest, &dir, &base)) {
    free(dest);
    return fail(err, errlen, "out of memory");
  }
  if (!*base || strcmp(base, ".") == 0 || strcmp(base, "..") == 0) {
    fail(err, errlen, "'%s' names a folder, not a file", dest);
    goto out;
  }
  if (stat(dir, &st) != 0) {
    if (errno == ENOENT)
      fail(err, errlen, "cannot write '%s': folder '%s' does not exist", dest, dir);
    else if (errno == ENOTDIR)
      fail(err, errlen, "cannot write '%s': '%s' is not a folder", dest, dir);
    else
      fail(err, errlen, "cannot write '%s': folder '%s': %s", dest, dir, strerror(errno));
    goto out;
  }
  if (!S_ISDIR(st.st_mode)) {
    fail(err, errlen, "cannot write '%s': '%s' is not a folder", dest, dir);
    goto out;
  }
  if (stat(dest, &st) == 0) {
    if (S_ISDIR(st.st_mode)) {
      fail(err, errlen, "cannot write '%s': it is a folder", dest);
      goto out;
    }
    mode = st.st_mode & 0777;
  } else {
    mode = 0666 & ~current_umask();
  }

  /* dir + "/." + base + ".XXXXXX" + NUL */
  n = strlen(dir) + strlen(base) + 12;
  tmpl = malloc(n);
  if (!tmpl) {
    fail(err, errlen, "out of memory");
    goto out;
  }
  snprintf(tmpl, n, "%s/.%s.XXXXXX", dir, base);
  fd = mkstemp(tmpl);
  if (fd < 0) {
    int e = errno;
    if (e == EACCES || e == EPERM || e == EROFS)
      fail(err, errlen, "cannot write '%s': folder '%s' is not writable (%s)", dest, dir,
           strerror(e));
    else
      fail(err, errlen, "cannot write '%s': cannot create a file in '%s' (%s)", dest, dir,
           strerror(e));
    goto out;
  }
  /* On failure the file keeps mkstemp's 0600, which is only more private: not fatal. */
  (void)fchmod(fd, mode);
  f->dest = dest;
  f->tmp_path = tmpl;
  f->fd = fd;
  free(dir);
  free(base);
  return true;

out:
  free(dest);
  free(dir);
  free(base);
  free(tmpl);
  return false;
}

static void release(i2i_atomic_file *f)
{
  free(f->dest);
  free(f->tmp_path);
  f->dest = NULL;
  f->tmp_path = NULL;
  f->fd = -1;
}

void i2i_atomic_abort(i2i_atomic_file *f)
{
  if (!f)
    return;
  if (f->fd >= 0)
    close(f->fd);
  f->fd = -1;
  if (f->tmp_path)
    unlink(f->tmp_path);
  release(f);
}

bool i2i_atomic_commit(i2i_atomic_file *f, char *err, size_t errlen)
{
  char *dir = NULL, *base = NULL;
  int fd;

  if (!f->tmp_path || !f->dest) {
    i2i_atomic_abort(f);
    return fail(err, errlen, "internal error: no temporary file to commit");
  }
  fd = f->fd;
  f->fd = -1;
  if (fd < 0)
    fd = open(f->tmp_path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    fail(err, errlen, "cannot write '%s': temporary '%s' vanished (%s)", f->dest, f->tmp_path,
         strerror(errno));
    i2i_atomic_abort(f);
    return false;
  }
  if (fsync(fd) != 0 && errno != EINVAL && errno != EROFS) {
    fail(err, errlen, "cannot write '%s': flushing to disk failed (%s)", f->dest,
         strerror(errno));
    close(fd);
    i2i_atomic_abort(f);
    return false;
  }
  if (close(fd) != 0) {
    fail(err, errlen, "cannot write '%s': %s", f->dest, strerror(errno));
    i2i_atomic_abort(f);
    return false;
  }
  if (rename(f->tmp_path, f->dest) != 0) {
    fail(err, errlen, "cannot write '%s': renaming the temporary into place failed (%s)",
         f->dest, strerror(errno));
    i2i_atomic_abort(f);
    return false;
  }
  if (split_path(f->dest, &dir, &base)) {
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      (void)fsync(dfd);
      close(dfd);
    }
  }
  free(dir);
  free(base);
  release(f);
  return true;
}
