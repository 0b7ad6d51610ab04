// The single place where op code chooses a backend.
//
//   void LayerNormForward(const ExecContext& ctx, ...args) {
//     LOOM_DISPATCH(ctx, LayerNormForward, args...);
//   }
//
// calls internal::LayerNormForwardCpu(args...) on the CPU and
// internal::LayerNormForwardCuda(args..., ctx.stream) on CUDA. In a build without the CUDA
// backend the CUDA branch is a fatal error naming the op, so the Cuda symbols need not exist.
#ifndef LOOM_CORE_DISPATCH_H_
#define LOOM_CORE_DISPATCH_H_

#include <glog/logging.h>

#include "csrc/core/device.h"

#if LOOM_WITH_CUDA
#define LOOM_DISPATCH(ctx, name, ...)                  \
  do {                                                 \
    if ((ctx).device.is_cpu()) {                       \
      internal::name##Cpu(__VA_ARGS__);                \
    } else {                                           \
      internal::name##Cuda(__VA_ARGS__, (ctx).stream); \
    }                                                  \
  } while (0)
#else
#define LOOM_DISPATCH(ctx, name, ...)                                                   \
  do {                                                                                  \
    if ((ctx).device.is_cpu()) {                                                        \
      internal::name##Cpu(__VA_ARGS__);                                                 \
    } else {                                                                            \
      LOG(FATAL) << #name << ": CUDA device requested but this Loom build has no CUDA " \
                 << "backend (configured with LOOM_WITH_CUDA=OFF)";                     \
    }                                                                                   \
  } while (0)
#endif

#endif  // LOOM_CORE_DISPATCH_H_
