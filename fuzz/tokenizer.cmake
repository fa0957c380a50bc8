cl_fuzz_target(tokenizer ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_tokenizer.c cl_infer_text cl_core)
