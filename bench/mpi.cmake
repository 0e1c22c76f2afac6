# The MPI benchmark (bench/mpi/) needs lorakit::mpi, defined when MPI is found.
if(TARGET lorakit::mpi)
  add_subdirectory(mpi)
endif()
