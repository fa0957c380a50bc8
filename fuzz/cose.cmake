cl_fuzz_target(cose ${CMAKE_CURRENT_LIST_DIR}/fuzz_cose.c cl_attest cl_cbor cl_crypto cl_core)
