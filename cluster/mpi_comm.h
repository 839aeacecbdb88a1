// MpiComm: the move-only owner of one MPI communicator (MPI_Comm_free on destruction), so a throw between
// creating a communicator and storing it leaks nothing. Every communicator it makes reports errors as return codes
// (MPI_ERRORS_RETURN), which LCL_MPI_CHECK turns into lcl::CommError.
//
//   MpiComm mine = MpiComm::Dup(MPI_COMM_WORLD);                // traffic on `mine` never matches the world's
//   MpiComm node = MpiComm::SplitShared(MPI_COMM_WORLD, rank);  // the ranks of this node
//   MPI_Bcast(buf, n, MPI_BYTE, 0, mine.get());
#pragma once

#include <mpi.h>

namespace lcl::cluster {

class MpiComm {
 public:
  // Empty: owns nothing (get() is MPI_COMM_NULL).
  MpiComm() = default;
  // Frees the communicator, unless MPI is already finalized (then there is nothing left to free) or it is empty.
  ~MpiComm();
  MpiComm(MpiComm&& other) noexcept;
  MpiComm& operator=(MpiComm&& other) noexcept;
  MpiComm(const MpiComm&) = delete;
  MpiComm& operator=(const MpiComm&) = delete;

  // MPI_Comm_dup of `comm`: same group, a separate message space.
  static MpiComm Dup(MPI_Comm comm);
  // MPI_Comm_split of `comm`: ranks with the same `color`, ordered by `key`.
  static MpiComm Split(MPI_Comm comm, int color, int key);
  // MPI_Comm_split_type(MPI_COMM_TYPE_SHARED) of `comm`: the ranks that share this node's memory, ordered by `key`.
  static MpiComm SplitShared(MPI_Comm comm, int key);
  // Takes ownership of `comm`, a communicator this process created (never MPI_COMM_WORLD or MPI_COMM_SELF).
  static MpiComm Adopt(MPI_Comm comm);

  MPI_Comm get() const { return comm_; }
  explicit operator bool() const { return comm_ != MPI_COMM_NULL; }
  // This process's rank in, and the size of, the communicator. Throw CommError on an empty owner.
  int rank() const;
  int size() const;

 private:
  explicit MpiComm(MPI_Comm comm) : comm_(comm) {}
  void Free() noexcept;

  MPI_Comm comm_ = MPI_COMM_NULL;
};

}  // namespace lcl::cluster
