cl_fuzz_target(bhttp ${CMAKE_CURRENT_LIST_DIR}/fuzz_bhttp.c cl_ohttp cl_crypto cl_core)
