/* tests/common/check.h: the smallest test harness: CHECK(cond, fmt...) inside test functions
 * run with RUN(fn); check_summary() prints "N passed, N failed" and gives the exit status.
 * Header-only so each test program stays one file. Not a framework: no fixtures, no forking.
 */
#ifndef I2I_TEST_CHECK_H
#define I2I_TEST_CHECK_H

#include <stdio.h>

static int check_passed, check_failed, check_cur;

#define CHECK(cond, ...)                                                             \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      check_cur = 1;                                                                 \
      printf("    check failed at %s:%d: %s: ", __FILE__, __LINE__, #cond);         \
      printf(__VA_ARGS__);                                                           \
      printf("\n");                                                                  \
    }                                                                                \
  } while (0)

#define RUN(fn)                                                                      \
  do {                                                                               \
    check_cur = 0;                                                                   \
    fn();                                                                            \
    if (check_cur) check_failed++;                                                   \
    else check_passed++;                                                             \
    printf("%s %s\n", check_cur ? "FAIL" : "ok  ", #fn);                             \
    fflush(stdout);                                                                  \
  } while (0)

static inline int check_summary(void) {
  printf("%d passed, %d failed\n", check_passed, check_failed);
  return check_failed ? 1 : 0;
}

#endif
