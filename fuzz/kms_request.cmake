cl_fuzz_target(kms_request fuzz_kms_request.c cl_kms)
