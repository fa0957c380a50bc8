cl_fuzz_target(seal_header ${CMAKE_CURRENT_LIST_DIR}/fuzz_seal_header.c cl_seal cl_crypto cl_core)
