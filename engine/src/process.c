/* process.c: process-wide setup a program using the engine does first thing in main(): how
 * OpenMP's idle threads wait (see i2i.h, i2i_openmp_reexec).
 */
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"

/* Rounds an idle OpenMP thread spins before it sleeps. libgomp's default (300,000 rounds when
 * OMP_WAIT_POLICY is unset) kept the ResNet at 0.17 s on two idle cores but took it to 0.84 s
 * (U-Net: 0.061 -> 0.239 s) with one core busy elsewhere, as each barrier waited for a thread the
 * kernel had put aside; 10,000 rounds: 0.17 / 0.38 s (U-Net 0.061 / 0.132); OMP_WAIT_POLICY=passive
 * 0.19 / 0.33 s (bench/NOTES.md). */
#define SPIN_ROUNDS "10000"

void i2i_openmp_reexec(char *argv[]) {
  if (!argv || !argv[0] || getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
  if (setenv("GOMP_SPINCOUNT", SPIN_ROUNDS, 1) != 0) return;
  execv("/proc/self/exe", argv);
  unsetenv("GOMP_SPINCOUNT"); /* not executed again: this process keeps libgomp's default */
}
