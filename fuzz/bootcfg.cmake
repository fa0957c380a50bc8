cl_fuzz_target(bootcfg ${CMAKE_CURRENT_LIST_DIR}/fuzz_bootcfg.c cl_wire cl_core)
