/* tests/cuda/emu/simt.h: a lock-step warp emulator for kernels built on warp-wide instructions
 * (thin_bodies.h's mma.sync kernels), so their fragment layouts, index arithmetic and edge
 * handling are checked on the host. Each of a warp's 32 threads runs the kernel's own code in a
 * context of its own; at an mma every thread stops, the product is formed from all 32 threads'
 * registers by PTX's fragment layout, and the threads go on. Blocks and warps run one at a time
 * (the kernels checked here use no shared memory or __syncthreads). Not a performance model. */
#ifndef I2I_SIMT_H
#define I2I_SIMT_H

#include <cuda_runtime.h>
#include <stdint.h>

#include <functional>

/* The built-in variables of the calling emulated thread. */
uint3 simt_thread_idx(void);
uint3 simt_block_idx(void);
dim3 simt_block_dim(void);
dim3 simt_grid_dim(void);

/* mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 and m16n8k8 (the same with k 8: a2, a3 and
 * b1 unused), d += a b; every thread of the warp must call it together. */
void simt_mma_16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1);
void simt_mma_1688(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t b0);

/* Runs `body` as the kernel <<<grid, block>>>: every thread of every block, warp by warp.
 * Returns 0, or -1 after printing why (threads of a warp reached an mma apart, or a warp ended
 * with threads still waiting at one). */
int simt_launch(dim3 grid, dim3 block, const std::function<void()> &body);

#endif
