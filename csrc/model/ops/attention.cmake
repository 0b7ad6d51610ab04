# Sources of the attention op, appended to LOOM_OPS_SRCS / LOOM_OPS_CUDA_SRCS.
list(APPEND LOOM_OPS_SRCS attention.cc attention_cpu.cc)
list(APPEND LOOM_OPS_CUDA_SRCS attention_cuda.cu)
# No FP-exception semantics (Loom never reads the flags): lets GCC if-convert, and so vectorize,
# the branch-free expf of attention_cpu.cc. Results are unchanged (no reassociation).
set_source_files_properties(attention_cpu.cc PROPERTIES COMPILE_OPTIONS -fno-trapping-math)
