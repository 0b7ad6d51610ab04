// Where computation runs. Headers never include CUDA headers: a Stream is an opaque handle
// that only .cu files turn back into a cudaStream_t (cuda_check.cuh: AsCudaStream).
#ifndef LOOM_CORE_DEVICE_H_
#define LOOM_CORE_DEVICE_H_

#include <string>

namespace loom {

enum class DeviceType { kCpu = 0, kCuda = 1 };

struct Device {
  DeviceType type = DeviceType::kCpu;
  int index = 0;  // CUDA ordinal; 0 for the CPU

  static Device Cpu() { return Device{DeviceType::kCpu, 0}; }
  static Device Cuda(int index) { return Device{DeviceType::kCuda, index}; }
  bool is_cpu() const { return type == DeviceType::kCpu; }
  bool is_cuda() const { return type == DeviceType::kCuda; }
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string ToString() const;  // "cpu" or "cuda:<index>"
};

// A CUDA stream (cudaStream_t) as an opaque pointer; nullptr is the legacy default stream.
// Meaningless on the CPU.
struct Stream {
  void* handle = nullptr;
};

// What every op receives: the device to run on and, on CUDA, the stream to enqueue on.
// Ops never allocate inside a step; scratch memory is planned by the caller.
struct ExecContext {
  Device device;
  Stream stream;

  static ExecContext Cpu() { return ExecContext{Device::Cpu(), Stream{}}; }
  static ExecContext Cuda(int index, Stream stream = {}) {
    return ExecContext{Device::Cuda(index), stream};
  }
};

}  // namespace loom

#endif  // LOOM_CORE_DEVICE_H_
