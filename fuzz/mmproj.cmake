cl_fuzz_target(mmproj ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_mmproj.c cl_infer_vision cl_infer_model cl_infer_text cl_infer_kern cl_core)
