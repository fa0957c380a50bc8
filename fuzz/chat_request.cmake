cl_fuzz_target(chat_request ${CMAKE_CURRENT_LIST_DIR}/fuzz_chat_request.c cl_enclave cl_core)
