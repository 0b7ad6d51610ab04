// Portability macros shared by host-only and CUDA translation units. No CUDA header here.
#ifndef LOOM_CORE_MACROS_H_
#define LOOM_CORE_MACROS_H_

#if defined(__CUDACC__)
#define LOOM_HOST_DEVICE __host__ __device__
#define LOOM_INLINE __forceinline__
#else
#define LOOM_HOST_DEVICE
#define LOOM_INLINE inline
#endif

#define LOOM_DISALLOW_COPY_AND_ASSIGN(T) \
  T(const T&) = delete;                  \
  T& operator=(const T&) = delete

#endif  // LOOM_CORE_MACROS_H_
