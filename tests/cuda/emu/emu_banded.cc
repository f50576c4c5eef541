/* tests/cuda/emu/emu_banded.cc: engine/src/cuda/banded.cu compiled as host C++ for the emulated
 * module (emu.h): the real module's source, unchanged, linked against the host emulations of
 * the CUDA runtime and cuDNN instead of libcudart and libcudnn. */
#include "banded.cu"
