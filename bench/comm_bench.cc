// `lcl bench comm`: lcl's MpiCommunicator against raw MPI collectives, same buffers, same run.
#include "bench/comm_bench.h"

#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <sstream>

#include "cluster/check.h"
#include "cluster/errors.h"
#include "cluster/mpi_communicator.h"

namespace lcl::bench {
namespace {

using cluster::MpiCommunicator;
using cluster::ReduceOp;

// nccl-tests' bus-bandwidth factors: the fraction of the data each rank must move over the slowest link.
double BusFactor(const std::string& op, int n) {
  if (op == "allreduce") return 2.0 * (n - 1) / n;
  return static_cast<double>(n - 1) / n;  // reducescatter, allgather
}

// Buffers of one measurement. `bytes` is the size nccl-tests reports: the all-reduce buffer, the reduce-scatter
// input and the all-gather output.
struct Buffers {
  torch::Tensor big, small;  // float32
};

Buffers MakeBuffers(const std::string& op, int64_t bytes, int n, int rank) {
  const int64_t count = std::max<int64_t>(n, bytes / 4 / n * n);  // divisible by n
  Buffers b;
  if (op == "allreduce") {
    b.big = torch::full({count}, static_cast<float>(rank + 1));
  } else if (op == "reducescatter") {
    b.big = torch::full({count}, static_cast<float>(rank + 1));
    b.small = torch::zeros({count / n});
  } else {
    b.small = torch::full({count / n}, static_cast<float>(rank + 1));
    b.big = torch::zeros({count});
  }
  return b;
}

void RunLcl(const std::string& op, MpiCommunicator& comm, Buffers& b, bool async) {
  if (op == "allreduce") {
    if (async)
      comm.AllReduceAsync(b.big, ReduceOp::kSum)->Wait();
    else
      comm.AllReduce(b.big, ReduceOp::kSum);
  } else if (op == "reducescatter") {
    if (async)
      comm.ReduceScatterAsync(b.big, b.small, ReduceOp::kSum)->Wait();
    else
      comm.ReduceScatter(b.big, b.small, ReduceOp::kSum);
  } else {
    if (async)
      comm.AllGatherAsync(b.small, b.big)->Wait();
    else
      comm.AllGather(b.small, b.big);
  }
}

void RunRaw(const std::string& op, MPI_Comm comm, Buffers& b) {
  if (op == "allreduce") {
    LCL_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, b.big.data_ptr(), b.big.numel(), MPI_FLOAT, MPI_SUM, comm));
  } else if (op == "reducescatter") {
    LCL_MPI_CHECK(
        MPI_Reduce_scatter_block(b.big.data_ptr(), b.small.data_ptr(), b.small.numel(), MPI_FLOAT, MPI_SUM, comm));
  } else {
    LCL_MPI_CHECK(MPI_Allgather(b.small.data_ptr(), b.small.numel(), MPI_FLOAT, b.big.data_ptr(), b.small.numel(),
                                MPI_FLOAT, comm));
  }
}

// Seconds per collective, the slowest rank's (a collective is as fast as its slowest member).
template <class F>
double TimeLoop(MPI_Comm comm, int iters, F&& body) {
  LCL_MPI_CHECK(MPI_Barrier(comm));
  const double t0 = MPI_Wtime();
  for (int i = 0; i < iters; ++i) body();
  double mine = (MPI_Wtime() - t0) / iters, slowest = 0;
  LCL_MPI_CHECK(MPI_Allreduce(&mine, &slowest, 1, MPI_DOUBLE, MPI_MAX, comm));
  return slowest;
}

// After timing, one fresh collective through lcl must give the closed-form answer (nccl-tests checks data too).
bool CheckData(const std::string& op, MpiCommunicator& comm, int64_t bytes, int n, int rank) {
  Buffers b = MakeBuffers(op, bytes, n, rank);
  RunLcl(op, comm, b, /*async=*/false);
  const float sum = n * (n + 1) / 2.0f;
  bool ok;
  if (op == "allreduce") {
    ok = b.big.eq(sum).all().item<bool>();
  } else if (op == "reducescatter") {
    ok = b.small.eq(sum).all().item<bool>();
  } else {
    auto expect = torch::arange(1, n + 1, torch::kFloat).repeat_interleave(b.small.numel());
    ok = b.big.equal(expect);
  }
  int mine = ok ? 1 : 0, all = 0;
  LCL_MPI_CHECK(MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_LAND, comm.comm()));
  return all != 0;
}

std::string HumanBytes(int64_t b) {
  char buf[32];
  if (b >= (1 << 20))
    snprintf(buf, sizeof(buf), "%lldM", static_cast<long long>(b >> 20));
  else if (b >= (1 << 10))
    snprintf(buf, sizeof(buf), "%lldK", static_cast<long long>(b >> 10));
  else
    snprintf(buf, sizeof(buf), "%lld", static_cast<long long>(b));
  return buf;
}

void Report(const CommBenchOptions& o, const CommBenchRow& r, int n, std::ostream& out) {
  const double ratio = r.mpi_busbw > 0 ? r.lcl_busbw / r.mpi_busbw : 0;
  if (o.json) {
    std::ostringstream cfg;
    cfg << "{\"op\":\"" << r.op << "\",\"bytes\":" << r.bytes << ",\"ranks\":" << n << ",\"dtype\":\"float32\""
        << ",\"form\":\"" << (o.async ? "async" : "blocking") << "\",\"time_us\":" << r.lcl_us
        << ",\"ref_time_us\":" << r.mpi_us << ",\"algbw_gbps\":" << r.lcl_algbw << "}";
    out << "{\"name\":\"comm." << r.op << ".busbw\",\"value\":" << r.lcl_busbw
        << ",\"unit\":\"GB/s\",\"reference\":" << r.mpi_busbw << ",\"reference_name\":\"raw MPI\",\"ratio\":" << ratio
        << ",\"config\":" << cfg.str() << "}\n";
  } else {
    char line[256];
    snprintf(line, sizeof(line), "%-14s %8s %12.1f %10.3f %10.3f %12.1f %10.3f %7.3f  %s\n", r.op.c_str(),
             HumanBytes(r.bytes).c_str(), r.lcl_us, r.lcl_algbw, r.lcl_busbw, r.mpi_us, r.mpi_busbw, ratio,
             r.data_ok ? "ok" : "WRONG");
    out << line;
  }
  out.flush();
}

}  // namespace

int64_t ParseBytes(const std::string& text, const std::string& what) {
  size_t pos = 0;
  while (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos]))) ++pos;
  std::string unit = text.substr(pos);
  std::transform(unit.begin(), unit.end(), unit.begin(), ::toupper);
  int64_t mult = -1;
  if (unit.empty() || unit == "B")
    mult = 1;
  else if (unit == "K" || unit == "KB" || unit == "KIB")
    mult = 1 << 10;
  else if (unit == "M" || unit == "MB" || unit == "MIB")
    mult = 1 << 20;
  else if (unit == "G" || unit == "GB" || unit == "GIB")
    mult = int64_t{1} << 30;
  if (pos == 0 || mult < 0) {
    throw ConfigError(what + ": '" + text + "' is not a size; write e.g. 1024, 64K, 256MB or 1G");
  }
  return std::stoll(text.substr(0, pos)) * mult;
}

std::vector<CommBenchRow> RunCommBench(const CommBenchOptions& o, MPI_Comm raw_comm, std::ostream& out) {
  if (o.min_bytes < 4 || o.max_bytes < o.min_bytes) {
    throw ConfigError("bench comm: need 4 <= --min-bytes <= --max-bytes, got " + std::to_string(o.min_bytes) + " and " +
                      std::to_string(o.max_bytes));
  }
  MpiCommunicator comm(raw_comm, "bench");
  const int n = comm.size(), rank = comm.rank();
  std::ostream& sink = out;
  if (rank == 0 && !o.json) {
    sink << "# lcl bench comm: " << n << " ranks, float32, " << (o.async ? "async" : "blocking")
         << " form; time = slowest rank; busbw factors as nccl-tests; reference = raw MPI in the same run\n";
    if (!o.single_copy.empty()) sink << "# shared-memory single copy: " << o.single_copy << "\n";
    sink << "# op            size      lcl_us  lcl_algbw  lcl_busbw       mpi_us  mpi_busbw   ratio  data\n";
  }
  std::vector<CommBenchRow> rows;
  for (const std::string& op : o.ops) {
    if (op != "allreduce" && op != "reducescatter" && op != "allgather") {
      throw ConfigError("bench comm: unknown op '" + op + "'; choose allreduce, reducescatter, allgather");
    }
    for (int64_t bytes = o.min_bytes; bytes <= o.max_bytes; bytes *= 2) {
      Buffers b = MakeBuffers(op, bytes, n, rank);
      const int64_t real_bytes = b.big.numel() * 4;  // all-reduce buffer, RS input, AG output
      const int iters =
          static_cast<int>(std::clamp<int64_t>((int64_t{64} << 20) / real_bytes * 4, o.min_iters, o.max_iters));
      for (int i = 0; i < o.warmup; ++i) {
        RunLcl(op, comm, b, o.async);
        RunRaw(op, raw_comm, b);
      }
      double best_lcl = 1e30, best_mpi = 1e30;
      for (int round = 0; round < o.rounds; ++round) {
        best_lcl = std::min(best_lcl, TimeLoop(raw_comm, iters, [&] { RunLcl(op, comm, b, o.async); }));
        best_mpi = std::min(best_mpi, TimeLoop(raw_comm, iters, [&] { RunRaw(op, raw_comm, b); }));
      }
      CommBenchRow r;
      r.op = op;
      r.bytes = real_bytes;
      r.lcl_us = best_lcl * 1e6;
      r.mpi_us = best_mpi * 1e6;
      r.lcl_algbw = real_bytes / best_lcl / 1e9;
      r.lcl_busbw = r.lcl_algbw * BusFactor(op, n);
      r.mpi_busbw = real_bytes / best_mpi / 1e9 * BusFactor(op, n);
      r.data_ok = CheckData(op, comm, bytes, n, rank);
      if (rank == 0) Report(o, r, n, sink);
      if (!r.data_ok) {
        throw CommError("bench comm: " + op + " of " + std::to_string(bytes) +
                        " bytes gave a wrong result through lcl's communicator");
      }
      rows.push_back(r);
    }
  }
  return rows;
}

}  // namespace lcl::bench
