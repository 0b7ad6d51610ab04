# Helpers shared by every folder: one call per library, test or tool.
#
#   loom_add_library(name SRCS a.cc ... [CUDA_SRCS k.cu ...] [NOCUDA_SRCS stub.cc ...]
#                    [DEPS target ...] [PRIVATE_DEPS ...])
#       CUDA_SRCS are compiled only when the CUDA backend is on, NOCUDA_SRCS (stubs that
#       report "built without CUDA") only when it is off.
#   loom_add_test(name SRCS ... [DEPS ...] [LABELS ...] [TIMEOUT s] [CUDA])
#       A GoogleTest binary run as one ctest entry. CUDA tests report "skipped" when the
#       binary prints gtest's SKIPPED marker (no GPU), never "passed".
#   loom_add_mpi_test(name SRCS ... [DEPS ...] [RANKS 1 2 4] [LABELS ...] [TIMEOUT s])
#       One binary, one ctest entry per rank count: name_np<R>, run by mpirun --oversubscribe.
#   loom_add_tool(name SRCS ... [DEPS ...])

set(LOOM_MPI_TEST_ENV
    "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1;OMPI_MCA_btl_vader_single_copy_mechanism=none;OMP_NUM_THREADS=1;GLOG_logtostderr=1")

function(loom_target_defaults target)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${LOOM_WARNING_FLAGS}>)
  if(LOOM_CUDA_ENABLED)
    target_compile_options(${target} PRIVATE
        $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr -Xcompiler=-Wall,-Wextra>)
  endif()
endfunction()

function(loom_add_library name)
  cmake_parse_arguments(ARG "" "" "SRCS;CUDA_SRCS;NOCUDA_SRCS;DEPS;PRIVATE_DEPS" ${ARGN})
  set(srcs ${ARG_SRCS})
  if(LOOM_CUDA_ENABLED)
    list(APPEND srcs ${ARG_CUDA_SRCS})
  else()
    list(APPEND srcs ${ARG_NOCUDA_SRCS})
  endif()
  if(NOT srcs)  # a library whose sources are not written yet: header-only for now
    add_library(${name} INTERFACE)
    target_include_directories(${name} INTERFACE ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
    target_link_libraries(${name} INTERFACE ${ARG_DEPS})
    return()
  endif()
  add_library(${name} STATIC ${srcs})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
  target_link_libraries(${name} PUBLIC ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
  if(LOOM_CUDA_ENABLED)
    set_target_properties(${name} PROPERTIES CUDA_SEPARABLE_COMPILATION OFF)
  endif()
  loom_target_defaults(${name})
endfunction()

function(loom_add_tool name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SRCS})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS})
  loom_target_defaults(${name})
endfunction()

function(loom_add_test name)
  cmake_parse_arguments(ARG "CUDA" "TIMEOUT" "SRCS;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SRCS})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} loom_testing GTest::gtest)
  loom_target_defaults(${name})
  add_test(NAME ${name} COMMAND ${name})
  set(labels ${ARG_LABELS})
  if(NOT labels)
    set(labels unit)
  endif()
  if(ARG_CUDA)
    list(APPEND labels cuda)
  endif()
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  set_tests_properties(${name} PROPERTIES LABELS "${labels}" TIMEOUT ${ARG_TIMEOUT}
                       ENVIRONMENT "${LOOM_MPI_TEST_ENV}"
                       SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]")
endfunction()

function(loom_add_mpi_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SRCS;DEPS;RANKS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SRCS})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} loom_testing_mpi GTest::gtest)
  loom_target_defaults(${name})
  if(NOT ARG_RANKS)
    set(ARG_RANKS 1 2 4)
  endif()
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  foreach(np IN LISTS ARG_RANKS)
    add_test(NAME ${name}_np${np}
             COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${np} --oversubscribe
                     ${MPIEXEC_PREFLAGS} $<TARGET_FILE:${name}> ${MPIEXEC_POSTFLAGS})
    set_tests_properties(${name}_np${np} PROPERTIES LABELS "mpi;${ARG_LABELS}"
                         TIMEOUT ${ARG_TIMEOUT} PROCESSORS ${np}
                         ENVIRONMENT "${LOOM_MPI_TEST_ENV}"
                         SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]")
  endforeach()
endfunction()
