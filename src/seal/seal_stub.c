int cl_seal_stub_(void); int cl_seal_stub_(void){return 0;}
