cl_fuzz_target(client ${CMAKE_CURRENT_LIST_DIR}/fuzz_client.c cl_client)
