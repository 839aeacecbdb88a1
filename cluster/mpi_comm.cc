// MpiComm: creating and freeing owned MPI communicators.
#include "cluster/mpi_comm.h"

#include "cluster/log.h"

#include <utility>

#include "cluster/check.h"
#include "cluster/errors.h"

namespace lcl::cluster {

MpiComm::~MpiComm() { Free(); }

MpiComm::MpiComm(MpiComm&& other) noexcept : comm_(std::exchange(other.comm_, MPI_COMM_NULL)) {}

MpiComm& MpiComm::operator=(MpiComm&& other) noexcept {
  if (this != &other) {
    Free();
    comm_ = std::exchange(other.comm_, MPI_COMM_NULL);
  }
  return *this;
}

void MpiComm::Free() noexcept {
  if (comm_ == MPI_COMM_NULL) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  // After MPI_Finalize the handle is gone with the library (an owner may outlive MpiSession at exit).
  if (!finalized) {
    const int rc = MPI_Comm_free(&comm_);
    // No throw from a destructor: a failed free costs one handle, which is worth a line in the log.
    if (rc != MPI_SUCCESS) LOG(WARNING) << "MPI_Comm_free failed with code " << rc << "; the communicator leaks";
  }
  comm_ = MPI_COMM_NULL;
}

MpiComm MpiComm::Adopt(MPI_Comm comm) {
  CHECK(comm != MPI_COMM_WORLD && comm != MPI_COMM_SELF) << "the predefined communicators are MPI's to free";
  MpiComm owner(comm);
  if (comm != MPI_COMM_NULL) LCL_MPI_CHECK(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN));
  return owner;
}

MpiComm MpiComm::Dup(MPI_Comm comm) {
  MPI_Comm out = MPI_COMM_NULL;
  LCL_MPI_CHECK(MPI_Comm_dup(comm, &out));
  return Adopt(out);
}

MpiComm MpiComm::Split(MPI_Comm comm, int color, int key) {
  MPI_Comm out = MPI_COMM_NULL;
  LCL_MPI_CHECK(MPI_Comm_split(comm, color, key, &out));
  return Adopt(out);
}

MpiComm MpiComm::SplitShared(MPI_Comm comm, int key) {
  MPI_Comm out = MPI_COMM_NULL;
  LCL_MPI_CHECK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, key, MPI_INFO_NULL, &out));
  return Adopt(out);
}

int MpiComm::rank() const {
  if (comm_ == MPI_COMM_NULL) throw CommError("MpiComm::rank() on an empty communicator owner");
  int r = 0;
  LCL_MPI_CHECK(MPI_Comm_rank(comm_, &r));
  return r;
}

int MpiComm::size() const {
  if (comm_ == MPI_COMM_NULL) throw CommError("MpiComm::size() on an empty communicator owner");
  int n = 0;
  LCL_MPI_CHECK(MPI_Comm_size(comm_, &n));
  return n;
}

}  // namespace lcl::cluster
