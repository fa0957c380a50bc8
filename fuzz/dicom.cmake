cl_fuzz_target(dicom ${CMAKE_CURRENT_LIST_DIR}/fuzz_dicom.c cl_image cl_core)
