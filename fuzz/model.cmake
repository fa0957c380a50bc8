cl_fuzz_target(model ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_model.c cl_infer_model cl_infer_text cl_infer_kern cl_core)
