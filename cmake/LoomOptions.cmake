# User-facing build options. Each one is documented in docs/building.md.
option(LOOM_BUILD_TESTS "Build the GoogleTest suites and register them with ctest" ON)
option(LOOM_BUILD_BENCH "Build the benchmark programs in bench/" ON)
option(LOOM_WERROR "Treat compiler warnings as errors (the ci preset turns this on)" OFF)
option(LOOM_SANITIZE "Build with AddressSanitizer and UndefinedBehaviorSanitizer" OFF)
# CUDA is enabled automatically when nvcc is found; -DLOOM_WITH_CUDA=OFF forces a CPU-only build.
set(LOOM_WITH_CUDA "AUTO" CACHE STRING "Build the CUDA backend: AUTO (when nvcc exists), ON or OFF")
set_property(CACHE LOOM_WITH_CUDA PROPERTY STRINGS AUTO ON OFF)
set(LOOM_CUDA_ARCHITECTURES "80;90" CACHE STRING "CUDA architectures to build for")

set(LOOM_WARNING_FLAGS -Wall -Wextra -Wshadow -Wnon-virtual-dtor -Wcast-align -Wunused
    -Woverloaded-virtual -Wformat=2 -Wimplicit-fallthrough)
# Floating-point contraction (a*b+c -> fma) is off for host code so the CPU reference rounds
# every operation as written; bit-identical CPU/CUDA random draws rely on it (philox.h).
add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-ffp-contract=off>)
option(LOOM_NATIVE "Tune host code for this machine's CPU (-march=native)" OFF)
if(LOOM_NATIVE)
  add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-march=native>)
endif()

if(LOOM_WERROR)
  list(APPEND LOOM_WARNING_FLAGS -Werror)
endif()

if(LOOM_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer
                      -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()
