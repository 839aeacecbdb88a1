// Shared by every gtest binary of the project (tests/test_main.cc is their main): the MPI session the test
// process runs in. Single-process tests run as a 1-rank MPI world.
#pragma once

#include "cluster/mpi_session.h"

namespace lcl::testing {

const cluster::MpiSession& Mpi();

}  // namespace lcl::testing
