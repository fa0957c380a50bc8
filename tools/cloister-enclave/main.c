/* Stand-alone executable (Nitro EIF entry point); cloister-sim loads the
 * shared-object build instead and calls cloister_enclave_main. */
int cloister_enclave_main(int argc, char **argv);

int main(int argc, char **argv) { return cloister_enclave_main(argc, argv); }
