cl_fuzz_target(attest ${CMAKE_CURRENT_LIST_DIR}/fuzz_attest.c cl_attest cl_cbor cl_crypto cl_core)
# Regenerates fuzz/corpus/{cbor,cose,attest}: attest_seedgen fuzz/corpus
add_executable(attest_seedgen ${CMAKE_CURRENT_LIST_DIR}/attest_seedgen.c)
target_link_libraries(attest_seedgen PRIVATE cl_attest cl_cbor cl_crypto cl_core)
