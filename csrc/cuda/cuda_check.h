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

namespace daam {

// Runs a launch on the tensors' device: sets `device` current if it is not, restores the
// previous device on exit (flash-attention's CUDAGuard, without linking libtorch).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    DAAM_CUDA_CHECK(cudaGetDevice(&prev_));
    if (prev_ != device) {
      DAAM_CUDA_CHECK(cudaSetDevice(device));
      restore_ = true;
    }
  }
  ~DeviceGuard() {
    if (restore_) cudaSetDevice(prev_);               // best effort: a destructor must not throw
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
  bool restore_ = false;
};

}  // namespace daam
