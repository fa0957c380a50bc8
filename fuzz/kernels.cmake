cl_fuzz_target(kernels ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_kernels.c cl_infer_kern cl_core)
