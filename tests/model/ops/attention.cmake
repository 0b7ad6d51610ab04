# Tests of the attention op.
loom_add_test(ops_attention_test SRCS attention_test.cc DEPS loom_ops OpenMP::OpenMP_CXX
              LABELS unit gradcheck)
# The CUDA kernels' own code, run on the CPU by a fiber emulator (no GPU needed).
loom_add_test(ops_attention_emulation_test SRCS attention_emulation_test.cc
              DEPS loom_ops OpenMP::OpenMP_CXX)
target_compile_options(ops_attention_emulation_test PRIVATE -Wno-unknown-pragmas
                       -fno-strict-aliasing)
loom_add_test(ops_attention_cuda_test SRCS attention_cuda_test.cc DEPS loom_ops OpenMP::OpenMP_CXX
              CUDA)
