/* tests/common/files.h: reading a whole file into memory for the C tests. Header-only; not for
 * production code (no size limit beyond what malloc gives, errors reported as NULL).
 */
#ifndef I2I_TEST_FILES_H
#define I2I_TEST_FILES_H

#include <stdio.h>
#include <stdlib.h>

/* The file's bytes (caller frees) and their count; NULL when it cannot be read. */
static inline unsigned char *read_all(const char *path, size_t *size) {
  *size = 0;
  FILE *fp = fopen(path, "rb");
  if (!fp) return NULL;
  fseek(fp, 0, SEEK_END);
  long n = ftell(fp);
  fseek(fp, 0, SEEK_SET);
  unsigned char *b = malloc(n > 0 ? (size_t)n : 1);
  if (b && n > 0 && fread(b, 1, (size_t)n, fp) != (size_t)n) {
    free(b);
    b = NULL;
  }
  fclose(fp);
  *size = n > 0 ? (size_t)n : 0;
  return b;
}

#endif
