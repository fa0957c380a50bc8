cl_fuzz_target(sigv4_authz fuzz_sigv4_authz.c cl_aws cl_crypto cl_core)
