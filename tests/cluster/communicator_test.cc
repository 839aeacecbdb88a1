// MpiCommunicator on 2 and 4 ranks: every collective, dtype, blocking and async form, sizes 0, 1, odd and
// 64 MB, many async ops in flight, non-contiguous tensors, against closed-form results computed from every
// rank's (reproducible) input; and every bad input giving its clear error.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sys/resource.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "cluster/errors.h"
#include "cluster/mpi_communicator.h"
#include "tests/test_main.h"
#include "tests/test_util.h"

namespace lcl::cluster {
namespace {

const torch::ScalarType kDtypes[] = {torch::kFloat, torch::kDouble, torch::kBFloat16,
                                     torch::kHalf,  torch::kInt,    torch::kLong};
const int64_t kSizes[] = {0, 1, 17, 4099};
const ReduceOp kOps[] = {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin};

// Rank r's input for one case; any rank can rebuild any other rank's input.
torch::Tensor Input(int rank, int64_t n, torch::ScalarType dt, int64_t case_id) {
  torch::manual_seed(case_id * 131 + rank);
  torch::Tensor t = c10::isIntegralType(dt, false) ? torch::randint(-1000, 1000, {n}, torch::kLong)
                                                   : torch::randn({n}, torch::kDouble) * 10;
  return t.to(dt);
}

// The reduction of every rank's input, in double (then rounded to dt like the collective's single rounding).
torch::Tensor Expected(int size, int64_t n, torch::ScalarType dt, int64_t case_id, ReduceOp op) {
  torch::Tensor acc;
  for (int r = 0; r < size; ++r) {
    torch::Tensor x = Input(r, n, dt, case_id).to(torch::kDouble);
    if (r == 0)
      acc = x;
    else if (op == ReduceOp::kMax)
      acc = torch::maximum(acc, x);
    else if (op == ReduceOp::kMin)
      acc = torch::minimum(acc, x);
    else
      acc = acc + x;
  }
  if (op == ReduceOp::kAvg) acc = acc / size;
  return acc.to(dt);
}

void ExpectClose(const torch::Tensor& got, const torch::Tensor& want, const std::string& what) {
  ASSERT_EQ(got.scalar_type(), want.scalar_type()) << what;
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  const auto dt = got.scalar_type();
  if (c10::isIntegralType(dt, false)) {
    EXPECT_TRUE(got.equal(want)) << what;
    return;
  }
  // fp32 accumulation then one rounding: bf16/fp16 may differ from the double reference by one ulp.
  const double tol = dt == torch::kBFloat16 ? 1e-2 : dt == torch::kHalf ? 2e-3 : dt == torch::kFloat ? 1e-5 : 1e-12;
  EXPECT_TRUE(torch::allclose(got.to(torch::kDouble), want.to(torch::kDouble), tol, tol)) << what;
}

class CommunicatorTest : public ::testing::Test {
 protected:
  CommunicatorTest() : comm_(MPI_COMM_WORLD, "world") {}
  MpiCommunicator comm_;
  int rank() const { return comm_.rank(); }
  int size() const { return comm_.size(); }
};

TEST_F(CommunicatorTest, AllReduceMatchesClosedFormForEveryDtypeOpSizeAndForm) {
  int64_t case_id = 0;
  for (bool async : {false, true}) {
    for (auto dt : kDtypes) {
      for (auto op : kOps) {
        if (op == ReduceOp::kAvg && c10::isIntegralType(dt, false)) continue;
        for (int64_t n : kSizes) {
          ++case_id;
          torch::Tensor t = Input(rank(), n, dt, case_id);
          if (async) {
            auto work = comm_.AllReduceAsync(t, op);
            work->Wait();
            EXPECT_TRUE(work->IsCompleted());
          } else {
            comm_.AllReduce(t, op);
          }
          std::ostringstream what;
          what << "AllReduce " << ReduceOpName(op) << " " << dt << " n=" << n << (async ? " async" : "");
          ExpectClose(t, Expected(size(), n, dt, case_id, op), what.str());
        }
      }
    }
  }
}

TEST_F(CommunicatorTest, ReduceScatterGivesEachRankItsChunkOfTheReduction) {
  int64_t case_id = 1000;
  for (bool async : {false, true}) {
    for (auto dt : kDtypes) {
      for (auto op : {ReduceOp::kSum, ReduceOp::kMax, ReduceOp::kAvg}) {
        if (op == ReduceOp::kAvg && c10::isIntegralType(dt, false)) continue;
        for (int64_t chunk : {int64_t{0}, int64_t{1}, int64_t{33}}) {
          ++case_id;
          torch::Tensor in = Input(rank(), chunk * size(), dt, case_id);
          torch::Tensor out = torch::empty({chunk}, in.options());
          if (async)
            comm_.ReduceScatterAsync(in, out, op)->Wait();
          else
            comm_.ReduceScatter(in, out, op);
          torch::Tensor want = Expected(size(), chunk * size(), dt, case_id, op).narrow(0, rank() * chunk, chunk);
          ExpectClose(out, want, std::string("ReduceScatter ") + ReduceOpName(op) + " " + c10::toString(dt));
        }
      }
    }
  }
}

TEST_F(CommunicatorTest, AllGatherConcatenatesEveryRanksInputInRankOrder) {
  int64_t case_id = 2000;
  for (bool async : {false, true}) {
    for (auto dt : {torch::kFloat, torch::kDouble, torch::kBFloat16, torch::kHalf, torch::kInt, torch::kLong,
                    torch::kByte, torch::kBool}) {
      for (int64_t n : kSizes) {
        ++case_id;
        torch::Tensor in =
            Input(rank(), n, dt == torch::kBool || dt == torch::kByte ? torch::kInt : dt, case_id).to(dt);
        torch::Tensor out = torch::empty({n * size()}, in.options());
        if (async)
          comm_.AllGatherAsync(in, out)->Wait();
        else
          comm_.AllGather(in, out);
        std::vector<torch::Tensor> parts;
        for (int r = 0; r < size(); ++r) {
          parts.push_back(Input(r, n, dt == torch::kBool || dt == torch::kByte ? torch::kInt : dt, case_id).to(dt));
        }
        EXPECT_TRUE(out.equal(torch::cat(parts))) << "AllGather " << dt << " n=" << n;
      }
    }
  }
}

TEST_F(CommunicatorTest, BroadcastCopiesTheRootsTensorToEveryRank) {
  int64_t case_id = 3000;
  for (bool async : {false, true}) {
    for (auto dt : kDtypes) {
      for (int root = 0; root < size(); ++root) {
        ++case_id;
        torch::Tensor t = Input(rank(), 257, dt, case_id);
        if (async)
          comm_.BroadcastAsync(t, root)->Wait();
        else
          comm_.Broadcast(t, root);
        EXPECT_TRUE(t.equal(Input(root, 257, dt, case_id))) << "Broadcast " << dt << " root " << root;
      }
    }
  }
}

TEST_F(CommunicatorTest, NonContiguousTensorsAreStagedAndWrittenBack) {
  // [3, 5] viewed transposed: the logical element order differs from memory order.
  torch::Tensor base = torch::arange(15, torch::kFloat).reshape({3, 5}) * (rank() + 1);
  torch::Tensor view = base.t();
  ASSERT_FALSE(view.is_contiguous());
  torch::Tensor want = torch::arange(15, torch::kFloat).reshape({3, 5}).t() * (size() * (size() + 1) / 2);
  comm_.AllReduce(view, ReduceOp::kSum);
  EXPECT_TRUE(view.equal(want));
  EXPECT_TRUE(base.t().equal(want));  // written back into the caller's storage

  torch::Tensor bview = torch::full({4, 3}, static_cast<float>(rank())).t();
  comm_.BroadcastAsync(bview, size() - 1)->Wait();
  EXPECT_TRUE(bview.eq(static_cast<float>(size() - 1)).all().item<bool>());

  // Gather into a non-contiguous [size, 2] output: row r is rank r's input.
  torch::Tensor in = torch::full({2}, static_cast<float>(rank()));
  torch::Tensor out = torch::empty({2, size()}).t();
  comm_.AllGather(in, out);
  for (int r = 0; r < size(); ++r) EXPECT_TRUE(out[r].eq(static_cast<float>(r)).all().item<bool>());
}

TEST_F(CommunicatorTest, SixtyFourMegabyteAllReduceIsExact) {
  const int64_t n = (64 << 20) / 4;
  // Integers below 2^24 keep float32 sums exact, so the check is bitwise.
  torch::Tensor pattern = torch::arange(n, torch::kLong).remainder(1000).to(torch::kFloat);
  torch::Tensor t = pattern + rank();
  comm_.AllReduce(t, ReduceOp::kSum);
  EXPECT_TRUE(t.equal(pattern * size() + size() * (size() - 1) / 2));
  torch::Tensor a = pattern + rank();
  comm_.AllReduceAsync(a, ReduceOp::kMax)->Wait();
  EXPECT_TRUE(a.equal(pattern + (size() - 1)));
}

TEST_F(CommunicatorTest, ManyAsyncCollectivesInFlightCompleteCorrectlyInAnyWaitOrder) {
  const int k = 32;
  std::vector<torch::Tensor> tensors, gathered;
  std::vector<WorkPtr> works;
  for (int i = 0; i < k; ++i) {
    tensors.push_back(torch::full({1 + 97 * i}, static_cast<double>(rank() + i)));
    works.push_back(comm_.AllReduceAsync(tensors.back(), ReduceOp::kSum));
    torch::Tensor in = torch::full({i + 1}, static_cast<int>(rank() * 100 + i), torch::kInt);
    gathered.push_back(torch::empty({(i + 1) * size()}, torch::kInt));
    works.push_back(comm_.AllGatherAsync(in, gathered.back()));
  }
  // Reverse order, mixing the three ways of waiting.
  for (int i = 2 * k - 1; i >= 0; --i) {
    if (i % 3 == 0) {
      works[i]->Wait();
    } else if (i % 3 == 1) {
      EXPECT_TRUE(works[i]->Wait(std::chrono::seconds(60)));
    } else {
      while (!works[i]->IsCompleted()) std::this_thread::yield();
    }
  }
  for (int i = 0; i < k; ++i) {
    const double want = size() * (size() - 1) / 2.0 + size() * i;
    EXPECT_TRUE(tensors[i].eq(want).all().item<bool>()) << "tensor " << i;
    for (int r = 0; r < size(); ++r) {
      EXPECT_TRUE(gathered[i].narrow(0, r * (i + 1), i + 1).eq(r * 100 + i).all().item<bool>());
    }
  }
}

TEST_F(CommunicatorTest, WaitWithTimeoutReturnsFalseWhileAPeerIsLateThenCompletes) {
  if (rank() != 0) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto work = comm_.BarrierAsync();
  if (rank() == 0) {
    EXPECT_FALSE(work->Wait(std::chrono::milliseconds(20)));
  }
  EXPECT_TRUE(work->Wait(std::chrono::seconds(60)));
  EXPECT_TRUE(work->IsCompleted());
  comm_.Barrier();
}

// CPU seconds the calling thread has used.
double ThreadCpuSeconds() {
  struct rusage u {};
  getrusage(RUSAGE_THREAD, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// parallel.wait=sleep: a rank that waits for a late peer (here rank 0 arrives 400 ms before the others) leaves its
// core. The bound is on the ratio CPU time / wall time of the wait, which a busy wait keeps near 1 and which load
// on the machine can only lower; no step races the clock (the late ranks only make the wait long).
TEST(CommunicatorWaitTest, AWaitingRankLeavesItsCoreInSleepModeForEveryBlockingForm) {
  MpiCommunicator comm(MPI_COMM_WORLD, "world", nullptr, WaitMode::kSleep);
  const auto late = std::chrono::milliseconds(400);
  for (const std::string form : {"AllReduce", "Barrier", "AsyncWait"}) {
    comm.Barrier();
    torch::Tensor t = torch::ones({1024});
    if (comm.rank() != 0) std::this_thread::sleep_for(late);
    const double cpu0 = ThreadCpuSeconds();
    const auto wall0 = std::chrono::steady_clock::now();
    if (form == "AllReduce") {
      comm.AllReduce(t, ReduceOp::kSum);
    } else if (form == "Barrier") {
      comm.Barrier();
    } else {
      comm.AllReduceAsync(t, ReduceOp::kSum)->Wait();
    }
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
    const double cpu = ThreadCpuSeconds() - cpu0;
    if (form != "Barrier") EXPECT_TRUE(t.eq(comm.size()).all().item<bool>()) << form;
    if (comm.rank() == 0) {
      EXPECT_GE(wall, 0.2) << form << ": rank 0 should have waited for the late ranks";
      EXPECT_LT(cpu, 0.5 * wall) << form << ": rank 0 used " << cpu << " s of CPU in a " << wall
                                 << " s wait (a busy wait uses about all of it)";
    }
  }
}

TEST(CommunicatorWaitTest, SpinModeGivesTheSameResults) {
  MpiCommunicator comm(MPI_COMM_WORLD, "world", nullptr, WaitMode::kSpin);
  torch::Tensor t = torch::full({17}, double(comm.rank() + 1));
  comm.AllReduce(t, ReduceOp::kSum);
  EXPECT_TRUE(t.eq(comm.size() * (comm.size() + 1) / 2).all().item<bool>());
  comm.AllReduceAsync(t, ReduceOp::kAvg)->Wait();
  EXPECT_TRUE(t.eq(comm.size() * (comm.size() + 1) / 2).all().item<bool>());
  comm.Barrier();
}

// With a tracer enabled every collective is on the timeline: a blocking one as a span, an async one from launch
// to completion.
TEST(CommunicatorTraceTest, CollectivesAppearOnTheTimeline) {
  Tracer trace(0);
  MpiCommunicator comm(MPI_COMM_WORLD, "dp", nullptr, WaitMode::kSleep, &trace);
  torch::Tensor t = torch::ones({256});
  comm.AllReduce(t, ReduceOp::kSum);  // disabled: not recorded
  EXPECT_EQ(trace.size(), 0u);
  trace.SetEnabled(true);
  comm.AllReduce(t, ReduceOp::kSum);
  comm.AllReduceAsync(t, ReduceOp::kSum)->Wait();
  const nlohmann::json j = nlohmann::json::parse(trace.Json());
  std::vector<std::string> phases;
  for (const auto& e : j.at("traceEvents")) {
    if (e.at("ph") == "M") continue;
    EXPECT_EQ(e.at("name"), "dp AllReduce 1.0 KiB") << e.dump();
    EXPECT_EQ(e.at("cat"), "comm");
    phases.push_back(e.at("ph").get<std::string>());
  }
  EXPECT_EQ(phases, (std::vector<std::string>{"X", "b", "e"}));
}

TEST_F(CommunicatorTest, SequenceNumbersCountIssuedCollectives) {
  const uint64_t before = comm_.sequence();
  torch::Tensor t = torch::ones({3});
  comm_.AllReduce(t, ReduceOp::kSum);
  comm_.Barrier();
  comm_.AllReduceAsync(t, ReduceOp::kSum)->Wait();
  EXPECT_EQ(comm_.sequence(), before + 3);
}

// Each bad input is rejected before any MPI call, identically on every rank, so the ranks stay in step.
TEST_F(CommunicatorTest, BadInputsGiveClearErrors) {
  torch::Tensor f = torch::ones({4});
  torch::Tensor small = torch::ones({3});
  std::string msg = lcl::testing::ErrorOf<CommError>([&] { comm_.ReduceScatter(f, small, ReduceOp::kSum); });
  EXPECT_NE(msg.find("ReduceScatter on 'world'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("4 Float in and 3 Float out"), std::string::npos) << msg;

  torch::Tensor big_double = torch::ones({4 * size()}, torch::kDouble);
  msg = lcl::testing::ErrorOf<CommError>([&] { comm_.AllGather(f, big_double); });
  EXPECT_NE(msg.find("same dtype"), std::string::npos) << msg;

  torch::Tensor ints = torch::ones({4}, torch::kLong);
  msg = lcl::testing::ErrorOf<CommError>([&] { comm_.AllReduce(ints, ReduceOp::kAvg); });
  EXPECT_NE(msg.find("avg needs a floating-point tensor"), std::string::npos) << msg;

  torch::Tensor flags = torch::ones({4}, torch::kBool);
  msg = lcl::testing::ErrorOf<CommError>([&] { comm_.AllReduceAsync(flags, ReduceOp::kSum); });
  EXPECT_NE(msg.find("cannot be reduced"), std::string::npos) << msg;

  msg = lcl::testing::ErrorOf<CommError>([&] { comm_.Broadcast(f, size()); });
  EXPECT_NE(msg.find("root " + std::to_string(size()) + " is not a rank"), std::string::npos) << msg;

  torch::Tensor undefined;
  msg = lcl::testing::ErrorOf<CommError>([&] { comm_.AllReduce(undefined, ReduceOp::kSum); });
  EXPECT_NE(msg.find("undefined"), std::string::npos) << msg;

  torch::Tensor meta = torch::empty({4}, torch::TensorOptions().device(torch::kMeta));
  msg = lcl::testing::ErrorOf<CommError>([&] { comm_.AllReduce(meta, ReduceOp::kSum); });
  EXPECT_NE(msg.find("takes CPU tensors"), std::string::npos) << msg;

  // The communicator still works after the rejected calls.
  comm_.AllReduce(f, ReduceOp::kSum);
  EXPECT_TRUE(f.eq(static_cast<float>(size())).all().item<bool>());
}

}  // namespace
}  // namespace lcl::cluster
