cl_fuzz_target(cbor ${CMAKE_CURRENT_LIST_DIR}/fuzz_cbor.c cl_cbor cl_core)
