// ProcessGrid: DP x TP layout and its MPI sub-communicators.
#include "cluster/process_grid.h"

#include <sstream>

#include "cluster/check.h"
#include "cluster/errors.h"

namespace lcl::cluster {

GridShape GridShape::Make(int world, int tp) {
  if (world < 1) throw ConfigError("world size must be at least 1, got " + std::to_string(world));
  if (tp < 1) throw ConfigError("parallel.tp must be at least 1, got " + std::to_string(tp));
  if (world % tp != 0) {
    std::ostringstream msg;
    msg << "parallel.tp=" << tp << " does not divide the world size " << world
        << " (world = dp x tp). Launch a multiple of " << tp << " ranks, or set parallel.tp to one of:";
    for (int d = 1; d <= world; ++d) {
      if (world % d == 0) msg << " " << d;
    }
    throw ConfigError(msg.str());
  }
  GridShape s;
  s.world = world;
  s.tp = tp;
  s.dp = world / tp;
  return s;
}

std::string GridShape::ToString() const {
  std::ostringstream s;
  s << "world=" << world << " (dp=" << dp << " x tp=" << tp << ")";
  return s.str();
}

ProcessGrid::ProcessGrid(MPI_Comm world, int tp) {
  int size = 0;
  LCL_MPI_CHECK(MPI_Comm_rank(world, &rank_));
  LCL_MPI_CHECK(MPI_Comm_size(world, &size));
  shape_ = GridShape::Make(size, tp);
  world_ = MpiComm::Dup(world);
  // TP group: same dp_rank, ordered by tp_rank. DP group: same tp_rank, ordered by dp_rank.
  tp_comm_ = MpiComm::Split(world_.get(), shape_.DpRankOf(rank_), shape_.TpRankOf(rank_));
  dp_comm_ = MpiComm::Split(world_.get(), shape_.TpRankOf(rank_), shape_.DpRankOf(rank_));
}

}  // namespace lcl::cluster
