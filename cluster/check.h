// One check wrapper per foreign API (STYLE.md 6): the call text, file:line and the library's own error string go
// into a lcl::CommError. MPI calls only report errors this way because MpiSession sets MPI_ERRORS_RETURN.
//
//   LCL_MPI_CHECK(MPI_Barrier(comm));
#pragma once

#include <string>

#include "cluster/errors.h"

namespace lcl::cluster::internal {
[[noreturn]] void ThrowMpiError(int code, const char* call, const char* file, int line);
}  // namespace lcl::cluster::internal

#define LCL_MPI_CHECK(call)                                                            \
  do {                                                                                 \
    int lcl_mpi_rc_ = (call);                                                          \
    if (lcl_mpi_rc_ != 0 /* MPI_SUCCESS */) {                                          \
      ::lcl::cluster::internal::ThrowMpiError(lcl_mpi_rc_, #call, __FILE__, __LINE__); \
    }                                                                                  \
  } while (0)
