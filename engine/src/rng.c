/* rng.c: Philox4x32-10 (Salmon et al. 2011, as in Random123) and the dropout mask contract.
 *
 * A dropout mask is a pure function of (seed, Dropout ordinal, channel, y, x) and, in training,
 * of the step and the image's index in the batch, so CPU, CUDA, whole and tiled runs agree.
 * tests/fixtures/philox.py is the same function in numpy; the golden tests compare the two.
 */
#include "internal.h"

void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3], k0 = key[0], k1 = key[1];
  for (int r = 0; r < 10; r++) {
    if (r) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0, hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

bool dropout_keep(uint64_t seed, uint32_t x, uint32_t y, uint32_t channel, uint32_t batch_index,
                  uint32_t ordinal, uint64_t step, uint32_t threshold) {
  uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  uint32_t ctr[4] = {x, y, (channel & 0xffffu) | ((batch_index & 0xffffu) << 16),
                     (ordinal & 0xffu) | ((uint32_t)(step & 0xffffffu) << 8)};
  uint32_t o[4];
  philox4x32_10(ctr, key, o);
  return o[0] >= threshold;
}
