cl_fuzz_target(image ${CMAKE_CURRENT_LIST_DIR}/fuzz_image.c cl_image cl_core)
