/* tests/cuda/emu/emu_backend.cc: engine/src/cuda/backend.cu compiled as host C++ for the emulated
 * module (emu.h): the real module's source, unchanged, linked against the host emulations of
 * the CUDA runtime and cuDNN instead of libcudart and libcudnn. */
#include "backend.cu"
