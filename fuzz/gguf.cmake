cl_fuzz_target(gguf ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_gguf.c cl_infer_text cl_core)
