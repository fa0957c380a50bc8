cl_fuzz_target(host_json ${CMAKE_CURRENT_LIST_DIR}/fuzz_host_json.c cl_host cl_core)
