cl_fuzz_target(kms_blob fuzz_kms_blob.c cl_kms)
