// Every CUDA runtime call of daam_fast._C goes through DAAM_CUDA_CHECK: an error becomes a
// RuntimeError in Python naming the code, its name and the failing call (never a crash).
#pragma once
#include <cuda_runtime.h>

#include <sstream>
#include <stdexcept>

#define DAAM_CUDA_CHECK(expr)                                                             \
  do {                                                                                    \
    cudaError_t err__ = (expr);                                                           \
    if (err__ != cudaSuccess) {                                                           \
      std::ostringstream os__;                                                            \
      os__ << "daam_fast._C: CUDA error " << static_cast<int>(err__) << " ("              \
           << cudaGetErrorName(err__) << ": " << cudaGetErrorString(err__) << ") at "      \
           << #expr;                                                                      \
      throw std::runtime_error(os__.str());                                               \
    }                                                                                     \
  } while (0)
