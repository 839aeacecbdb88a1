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
  LCL_MPI_CHECK(MPI_Comm_dup(world, &world_));
  MPI_Comm_set_errhandler(world_, MPI_ERRORS_RETURN);
  // TP group: same dp_rank, ordered by tp_rank. DP group: same tp_rank, ordered by dp_rank.
  LCL_MPI_CHECK(MPI_Comm_split(world_, shape_.DpRankOf(rank_), shape_.TpRankOf(rank_), &tp_comm_));
  LCL_MPI_CHECK(MPI_Comm_split(world_, shape_.TpRankOf(rank_), shape_.DpRankOf(rank_), &dp_comm_));
}

ProcessGrid::~ProcessGrid() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  if (tp_comm_ != MPI_COMM_NULL) MPI_Comm_free(&tp_comm_);
  if (dp_comm_ != MPI_COMM_NULL) MPI_Comm_free(&dp_comm_);
  if (world_ != MPI_COMM_NULL) MPI_Comm_free(&world_);
}

}  // namespace lcl::cluster
