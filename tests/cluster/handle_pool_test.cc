// HandlePool's bookkeeping with fake handles that count creations and destructions (the CUDA event pool of the
// NCCL backend is this pool with cudaEventCreate/cudaEventDestroy).
#include "cluster/handle_pool.h"

#include <gtest/gtest.h>

#include <set>
#include <stdexcept>
#include <utility>

namespace lcl::cluster {
namespace {

// Hands out 1, 2, 3, ... and remembers which are alive; destroying a dead handle counts as a double destroy.
struct FakeHandles {
  int Create() {
    if (fail_next_create) {
      fail_next_create = false;
      throw std::runtime_error("fake create failed");
    }
    live.insert(next);
    return next++;
  }
  void Destroy(int h) {
    if (live.erase(h) == 0) ++double_destroys;
  }

  int next = 1;
  std::set<int> live;
  int double_destroys = 0;
  bool fail_next_create = false;
};

class HandlePoolTest : public ::testing::Test {
 protected:
  HandlePool<int> MakePool() {
    return HandlePool<int>([this] { return fake_.Create(); }, [this](int h) { fake_.Destroy(h); });
  }
  FakeHandles fake_;
};

TEST_F(HandlePoolTest, ReturnedHandleIsReusedInsteadOfCreatingAnother) {
  HandlePool<int> pool = MakePool();
  int first = 0;
  {
    HandlePool<int>::Lease lease = pool.Acquire();
    first = lease.get();
    EXPECT_EQ(pool.leased(), 1u);
  }
  EXPECT_EQ(pool.idle(), 1u);
  EXPECT_EQ(pool.Acquire().get(), first);
  EXPECT_EQ(pool.created(), 1u);
  EXPECT_EQ(fake_.live.size(), 1u);
}

TEST_F(HandlePoolTest, LeasesOutAtTheSameTimeHoldDistinctHandles) {
  HandlePool<int> pool = MakePool();
  {
    HandlePool<int>::Lease done = pool.Acquire();
    HandlePool<int>::Lease ready = pool.Acquire();
    EXPECT_NE(done.get(), ready.get());
    EXPECT_EQ(pool.leased(), 2u);
    EXPECT_EQ(pool.idle(), 0u);
  }
  EXPECT_EQ(pool.leased(), 0u);
  EXPECT_EQ(pool.idle(), 2u);
  EXPECT_EQ(pool.created(), 2u);
}

TEST_F(HandlePoolTest, ExceptionAfterAcquireReturnsTheHandles) {
  // What a collective does: lease two events, then the launch throws.
  HandlePool<int> pool = MakePool();
  for (int collective = 0; collective < 3; ++collective) {
    try {
      HandlePool<int>::Lease done = pool.Acquire();
      HandlePool<int>::Lease ready = pool.Acquire();
      throw std::runtime_error("launch failed");
    } catch (const std::runtime_error&) {
    }
  }
  EXPECT_EQ(pool.leased(), 0u);
  EXPECT_EQ(pool.idle(), 2u);
  EXPECT_EQ(pool.created(), 2u);  // the failed collectives reused the same two, none leaked
}

TEST_F(HandlePoolTest, FailedCreateLeavesThePoolUnchanged) {
  HandlePool<int> pool = MakePool();
  fake_.fail_next_create = true;
  EXPECT_THROW(pool.Acquire(), std::runtime_error);
  EXPECT_EQ(pool.created(), 0u);
  EXPECT_EQ(pool.leased(), 0u);
  EXPECT_EQ(pool.idle(), 0u);
  EXPECT_EQ(pool.Acquire().get(), 1);
}

TEST_F(HandlePoolTest, DestroyingThePoolDestroysEveryHandleOnce) {
  {
    HandlePool<int> pool = MakePool();
    HandlePool<int>::Lease a = pool.Acquire();
    { HandlePool<int>::Lease b = pool.Acquire(); }
    HandlePool<int>::Lease c = pool.Acquire();  // reuses b's handle
    EXPECT_EQ(fake_.live.size(), 2u);
  }
  EXPECT_TRUE(fake_.live.empty());
  EXPECT_EQ(fake_.double_destroys, 0);
}

TEST_F(HandlePoolTest, LeaseOutlivingThePoolDestroysItsHandleOnReturn) {
  HandlePool<int>::Lease survivor;
  {
    HandlePool<int> pool = MakePool();
    { HandlePool<int>::Lease idle = pool.Acquire(); }
    survivor = pool.Acquire();
    EXPECT_EQ(fake_.live.size(), 1u);
  }
  EXPECT_EQ(fake_.live.count(survivor.get()), 1u);
  survivor = HandlePool<int>::Lease();
  EXPECT_TRUE(fake_.live.empty());
  EXPECT_EQ(fake_.double_destroys, 0);
}

TEST_F(HandlePoolTest, MovedLeaseLeavesTheSourceEmptyAndReturnsOnce) {
  HandlePool<int> pool = MakePool();
  HandlePool<int>::Lease source = pool.Acquire();
  const int handle = source.get();
  HandlePool<int>::Lease target(std::move(source));
  EXPECT_FALSE(source);
  EXPECT_TRUE(target);
  EXPECT_EQ(target.get(), handle);
  source = HandlePool<int>::Lease();  // resetting the empty source returns nothing
  EXPECT_EQ(pool.leased(), 1u);
  EXPECT_EQ(pool.idle(), 0u);

  // Assigning over a lease returns the handle it held.
  HandlePool<int>::Lease other = pool.Acquire();
  target = std::move(other);
  EXPECT_FALSE(other);
  EXPECT_EQ(pool.leased(), 1u);
  EXPECT_EQ(pool.idle(), 1u);
  target = HandlePool<int>::Lease();
  EXPECT_EQ(pool.leased(), 0u);
  EXPECT_EQ(pool.idle(), 2u);
}

}  // namespace
}  // namespace lcl::cluster
