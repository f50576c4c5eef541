/* converter/imageio/atomicfile.h: write a file through a temporary and rename it into place.
 * The temporary is `.NAME.XXXXXX` in the destination's folder (same file system, so the
 * rename is atomic); commit flushes it to disk before the rename, abort removes it. Plain
 * POSIX, no GLib, so the .npy code and its fuzz target can use it alone. It is not a
 * general file API: one writer per destination, no locking against other processes. */
#ifndef I2I_ATOMICFILE_H
#define I2I_ATOMICFILE_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
  char *dest;      /* owned: the file replaced on commit (a link's target when dest is one) */
  char *tmp_path;  /* owned; the temporary's path */
  int fd;          /* open descriptor of the temporary, or -1 once closed */
} i2i_atomic_file;

/* Creates the temporary for `dest` with the mode the result should have (the existing
 * destination's permissions, else 0666 minus the umask) and fills `f` (caller storage).
 * A `dest` that is a symbolic link is written through, as cp does: f->dest is the file it
 * leads to, replaced on commit, and the link stays. Fails with a readable message when the
 * folder is missing, not a folder, or not writable, when `dest` is a directory or a link
 * to nothing; then `f` holds nothing to release. */
bool i2i_atomic_open(i2i_atomic_file *f, const char *dest, char *err, size_t errlen);

/* Closes the descriptor if still open (the writer may have closed it or handed it to
 * fdopen: then set f->fd = -1 first), fsyncs the temporary, renames it over the
 * destination and fsyncs the folder. On failure removes the temporary. Either way `f` is
 * released. */
bool i2i_atomic_commit(i2i_atomic_file *f, char *err, size_t errlen);

/* Closes the descriptor if open, removes the temporary and releases `f`. Safe to call on a
 * zeroed struct or twice. */
void i2i_atomic_abort(i2i_atomic_file *f);

#endif
