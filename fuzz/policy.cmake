cl_fuzz_target(policy fuzz_policy.c cl_kms)
