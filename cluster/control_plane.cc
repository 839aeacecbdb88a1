// ControlPlane: gather-to-root, broadcast-from-root and agreement over a dedicated communicator.
#include "cluster/control_plane.h"

#include <google/protobuf/message_lite.h>

#include <climits>
#include <numeric>

#include "cluster/check.h"
#include "cluster/errors.h"

namespace lcl::cluster {

ControlPlane::ControlPlane(MPI_Comm comm, Watchdog* watchdog, WaitMode wait)
    : comm_(MpiComm::Dup(comm)), watchdog_(watchdog), wait_(wait), rank_(comm_.rank()), size_(comm_.size()) {}

// Every operation is nonblocking + WaitForRequest: the rank that reaches the per-step agreement first (the others
// still in their step) waits without holding a core.
void ControlPlane::Complete(int start_rc, MPI_Request* req, const char* call) {
  int rc = start_rc;
  if (rc == MPI_SUCCESS) rc = WaitForRequest(req, wait_);
  if (rc != MPI_SUCCESS) internal::ThrowMpiError(rc, call, __FILE__, __LINE__);
}

std::vector<std::string> ControlPlane::GatherBytes(const std::string& mine) {
  if (mine.size() > static_cast<size_t>(INT_MAX)) {
    throw CommError("control message of " + std::to_string(mine.size()) + " bytes is too large to gather");
  }
  Watchdog::Scope scope(watchdog_, "control", "Gather", seq_++, static_cast<int64_t>(mine.size()));
  int my_len = static_cast<int>(mine.size());
  std::vector<int> lens(rank_ == 0 ? size_ : 0);
  MPI_Request req = MPI_REQUEST_NULL;
  Complete(MPI_Igather(&my_len, 1, MPI_INT, lens.data(), 1, MPI_INT, 0, comm_.get(), &req), &req, "MPI_Igather");
  std::vector<int> displs(lens.size());
  int64_t total = 0;
  for (size_t r = 0; r < lens.size(); ++r) {
    displs[r] = static_cast<int>(total);
    total += lens[r];
  }
  if (total > INT_MAX) throw CommError("gathered control messages exceed 2 GiB");
  std::string all(static_cast<size_t>(total), '\0');
  Complete(MPI_Igatherv(mine.data(), my_len, MPI_BYTE, all.data(), lens.data(), displs.data(), MPI_BYTE, 0, comm_.get(),
                        &req),
           &req, "MPI_Igatherv");
  std::vector<std::string> out;
  for (size_t r = 0; r < lens.size(); ++r) out.emplace_back(all.substr(displs[r], lens[r]));
  return out;
}

std::string ControlPlane::BroadcastBytes(const std::string& from_root) {
  Watchdog::Scope scope(watchdog_, "control", "Broadcast", seq_++, static_cast<int64_t>(from_root.size()));
  int64_t len = static_cast<int64_t>(from_root.size());
  MPI_Request req = MPI_REQUEST_NULL;
  Complete(MPI_Ibcast(&len, 1, MPI_INT64_T, 0, comm_.get(), &req), &req, "MPI_Ibcast");
  if (len > INT_MAX) throw CommError("control broadcast of " + std::to_string(len) + " bytes is too large");
  std::string buf = rank_ == 0 ? from_root : std::string(static_cast<size_t>(len), '\0');
  Complete(MPI_Ibcast(buf.data(), static_cast<int>(len), MPI_BYTE, 0, comm_.get(), &req), &req, "MPI_Ibcast");
  return buf;
}

bool ControlPlane::AnyTrue(bool flag) {
  Watchdog::Scope scope(watchdog_, "control", "AnyTrue", seq_++, sizeof(int));
  int in = flag ? 1 : 0, out = 0;
  MPI_Request req = MPI_REQUEST_NULL;
  Complete(MPI_Iallreduce(&in, &out, 1, MPI_INT, MPI_LOR, comm_.get(), &req), &req, "MPI_Iallreduce");
  return out != 0;
}

int64_t ControlPlane::Max(int64_t value) {
  Watchdog::Scope scope(watchdog_, "control", "Max", seq_++, sizeof(int64_t));
  int64_t out = 0;
  MPI_Request req = MPI_REQUEST_NULL;
  Complete(MPI_Iallreduce(&value, &out, 1, MPI_INT64_T, MPI_MAX, comm_.get(), &req), &req, "MPI_Iallreduce");
  return out;
}

void ControlPlane::Parse(const std::string& raw, google::protobuf::MessageLite* msg, int from_rank) {
  if (!msg->ParseFromString(raw)) {
    throw CommError("control message from rank " + std::to_string(from_rank) + " (" + std::to_string(raw.size()) +
                    " bytes) does not parse as " + msg->GetTypeName() + "; are all ranks running the same lcl binary?");
  }
}

}  // namespace lcl::cluster
