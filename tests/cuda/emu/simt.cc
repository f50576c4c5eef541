/* tests/cuda/emu/simt.cc: the lock-step warp emulator of simt.h. The 32 threads of a warp are
 * ucontext coroutines switched by one scheduler: each runs until it reaches a warp-wide
 * instruction (or ends); when all 32 wait at one, the scheduler carries it out over their
 * registers and resumes them. The mma fragment layouts are PTX's (ISA, "Matrix Fragments for
 * mma.m16n8k16 / m16n8k8" with .f16 A and B, .f32 C and D). */
#include "simt.h"

#include <cuda_fp16.h>
#include <stdio.h>
#include <ucontext.h>

#include <vector>

namespace {

enum { L_RUN, L_MMA, L_DONE };
enum { MMA_16816 = 1, MMA_1688 };

struct lane {
  ucontext_t uc;
  int state;
  int kind;
  float *d;
  uint32_t a[4], b[2];
};

struct warp {
  ucontext_t sched;
  lane L[32];
  int n;   /* threads in this warp */
  int cur; /* the thread running now */
  uint3 tid[32];
  uint3 bid;
  dim3 bdim, gdim;
  const std::function<void()> *body;
};

warp W;

void lane_main() {
  (*W.body)();
  W.L[W.cur].state = L_DONE;
}

float h_lo(uint32_t v) {
  __half_raw r;
  r.x = (unsigned short)(v & 0xffffu);
  return __half2float(__half(r));
}

float h_hi(uint32_t v) { return h_lo(v >> 16); }

/* D += A B over the warp's fragments (k 16 or 8). */
void do_mma(int k) {
  float A[16][16] = {}, B[16][8] = {}, C[16][8];
  for (int l = 0; l < 32; l++) {
    const lane &q = W.L[l];
    int g = l >> 2, t = l & 3;
    A[g][2 * t] = h_lo(q.a[0]);
    A[g][2 * t + 1] = h_hi(q.a[0]);
    A[g + 8][2 * t] = h_lo(q.a[1]);
    A[g + 8][2 * t + 1] = h_hi(q.a[1]);
    B[2 * t][g] = h_lo(q.b[0]);
    B[2 * t + 1][g] = h_hi(q.b[0]);
    if (k == 16) {
      A[g][2 * t + 8] = h_lo(q.a[2]);
      A[g][2 * t + 9] = h_hi(q.a[2]);
      A[g + 8][2 * t + 8] = h_lo(q.a[3]);
      A[g + 8][2 * t + 9] = h_hi(q.a[3]);
      B[2 * t + 8][g] = h_lo(q.b[1]);
      B[2 * t + 9][g] = h_hi(q.b[1]);
    }
    C[g][2 * t] = q.d[0];
    C[g][2 * t + 1] = q.d[1];
    C[g + 8][2 * t] = q.d[2];
    C[g + 8][2 * t + 1] = q.d[3];
  }
  for (int l = 0; l < 32; l++) {
    int g = l >> 2, t = l & 3;
    int rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
    for (int e = 0; e < 4; e++) {
      float s = C[rows[e]][cols[e]];
      for (int kk = 0; kk < k; kk++) s += A[rows[e]][kk] * B[kk][cols[e]];
      W.L[l].d[e] = s;
    }
  }
}

void arrive(int kind, float *d, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  lane &q = W.L[W.cur];
  q.kind = kind;
  q.d = d;
  q.a[0] = a0;
  q.a[1] = a1;
  q.a[2] = a2;
  q.a[3] = a3;
  q.b[0] = b0;
  q.b[1] = b1;
  q.state = L_MMA;
  swapcontext(&q.uc, &W.sched);
}

/* Runs one warp to its end; -1 on divergence at an mma. */
int run_warp(std::vector<char> &stacks, size_t stack_bytes) {
  for (int l = 0; l < W.n; l++) {
    lane &q = W.L[l];
    q.state = L_RUN;
    getcontext(&q.uc);
    q.uc.uc_stack.ss_sp = stacks.data() + (size_t)l * stack_bytes;
    q.uc.uc_stack.ss_size = stack_bytes;
    q.uc.uc_link = &W.sched;
    makecontext(&q.uc, lane_main, 0);
  }
  for (;;) {
    int waiting = 0, done = 0;
    for (int l = 0; l < W.n; l++) {
      if (W.L[l].state == L_DONE) continue;
      W.cur = l;
      W.L[l].state = L_RUN;
      swapcontext(&W.sched, &W.L[l].uc);
    }
    for (int l = 0; l < W.n; l++) {
      waiting += W.L[l].state == L_MMA;
      done += W.L[l].state == L_DONE;
    }
    if (done == W.n) return 0;
    if (waiting != 32) {
      fprintf(stderr, "simt: block (%u,%u,%u): %d of %d threads of a warp at an mma, %d ended\n", W.bid.x, W.bid.y,
              W.bid.z, waiting, W.n, done);
      return -1;
    }
    int kind = W.L[0].kind;
    for (int l = 1; l < 32; l++)
      if (W.L[l].kind != kind) {
        fprintf(stderr, "simt: threads of a warp at different mma shapes\n");
        return -1;
      }
    do_mma(kind == MMA_16816 ? 16 : 8);
  }
}

} // namespace

uint3 simt_thread_idx(void) { return W.tid[W.cur]; }
uint3 simt_block_idx(void) { return W.bid; }
dim3 simt_block_dim(void) { return W.bdim; }
dim3 simt_grid_dim(void) { return W.gdim; }

void simt_mma_16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  arrive(MMA_16816, d, a0, a1, a2, a3, b0, b1);
}

void simt_mma_1688(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t b0) { arrive(MMA_1688, d, a0, a1, 0, 0, b0, 0); }

int simt_launch(dim3 grid, dim3 block, const std::function<void()> &body) {
  const size_t stack_bytes = 256 * 1024;
  std::vector<char> stacks(32 * stack_bytes);
  unsigned threads = block.x * block.y * block.z;
  W.body = &body;
  W.bdim = block;
  W.gdim = grid;
  for (unsigned bz = 0; bz < grid.z; bz++)
    for (unsigned by = 0; by < grid.y; by++)
      for (unsigned bx = 0; bx < grid.x; bx++) {
        W.bid = make_uint3(bx, by, bz);
        for (unsigned w0 = 0; w0 < threads; w0 += 32) {
          W.n = (int)(threads - w0 < 32 ? threads - w0 : 32);
          for (int l = 0; l < W.n; l++) {
            unsigned i = w0 + (unsigned)l;
            W.tid[l] = make_uint3(i % block.x, i / block.x % block.y, i / block.x / block.y);
          }
          if (run_warp(stacks, stack_bytes)) return -1;
        }
      }
  return 0;
}
