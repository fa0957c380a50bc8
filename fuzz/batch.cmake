cl_fuzz_target(batch ${CMAKE_CURRENT_LIST_DIR}/fuzz_batch.c cl_batch cl_wire cl_attest cl_cbor cl_crypto cl_core)
