// MpiComm: the owner frees its communicator exactly once, on destruction or reassignment, and a move leaves the
// source empty. Frees are observed with an MPI attribute whose delete callback MPI runs when a communicator is freed.
#include "cluster/mpi_comm.h"

#include <gtest/gtest.h>

#include <utility>

#include "cluster/check.h"
#include "cluster/errors.h"

namespace lcl::cluster {
namespace {

int CountFree(MPI_Comm, int, void* attribute, void*) {
  ++*static_cast<int*>(attribute);
  return MPI_SUCCESS;
}

// Watch(comm, &n) makes n count the frees of comm.
class FreeCounter {
 public:
  FreeCounter() { LCL_MPI_CHECK(MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, CountFree, &key_, nullptr)); }
  ~FreeCounter() { MPI_Comm_free_keyval(&key_); }
  void Watch(MPI_Comm comm, int* frees) { LCL_MPI_CHECK(MPI_Comm_set_attr(comm, key_, frees)); }

 private:
  int key_ = MPI_KEYVAL_INVALID;
};

int Compare(MPI_Comm a, MPI_Comm b) {
  int result = MPI_UNEQUAL;
  LCL_MPI_CHECK(MPI_Comm_compare(a, b, &result));
  return result;
}

TEST(MpiComm, DupIsCongruentWithItsSourceAndFreedOnDestruction) {
  FreeCounter counter;
  int frees = 0;
  {
    const MpiComm dup = MpiComm::Dup(MPI_COMM_WORLD);
    ASSERT_TRUE(dup);
    EXPECT_EQ(Compare(dup.get(), MPI_COMM_WORLD), MPI_CONGRUENT);
    counter.Watch(dup.get(), &frees);
    EXPECT_EQ(frees, 0);
  }
  EXPECT_EQ(frees, 1);
}

TEST(MpiComm, MoveLeavesTheSourceEmptyAndTheCommunicatorIsFreedOnce) {
  FreeCounter counter;
  int frees = 0;
  {
    MpiComm source = MpiComm::Dup(MPI_COMM_WORLD);
    const MPI_Comm handle = source.get();
    counter.Watch(handle, &frees);
    {
      const MpiComm target(std::move(source));
      EXPECT_EQ(source.get(), MPI_COMM_NULL);
      EXPECT_FALSE(source);
      EXPECT_EQ(target.get(), handle);
      EXPECT_EQ(frees, 0);
    }
    EXPECT_EQ(frees, 1);
  }
  EXPECT_EQ(frees, 1);  // the moved-from source had nothing left to free
}

TEST(MpiComm, MoveAssignmentFreesTheCommunicatorItReplaces) {
  FreeCounter counter;
  int old_frees = 0, new_frees = 0;
  {
    MpiComm owner = MpiComm::Dup(MPI_COMM_WORLD);
    counter.Watch(owner.get(), &old_frees);
    MpiComm replacement = MpiComm::Dup(MPI_COMM_WORLD);
    const MPI_Comm handle = replacement.get();
    counter.Watch(handle, &new_frees);
    owner = std::move(replacement);
    EXPECT_EQ(old_frees, 1);
    EXPECT_EQ(new_frees, 0);
    EXPECT_EQ(owner.get(), handle);
    EXPECT_FALSE(replacement);
  }
  EXPECT_EQ(old_frees, 1);
  EXPECT_EQ(new_frees, 1);
}

TEST(MpiComm, SplitSharedOfOneRankWorldIsThatRank) {
  const MpiComm node = MpiComm::SplitShared(MPI_COMM_WORLD, /*key=*/0);
  EXPECT_EQ(node.size(), 1);
  EXPECT_EQ(node.rank(), 0);
  EXPECT_EQ(Compare(node.get(), MPI_COMM_WORLD), MPI_CONGRUENT);
}

TEST(MpiComm, SplitWithUndefinedColorOwnsNothing) {
  const MpiComm none = MpiComm::Split(MPI_COMM_WORLD, MPI_UNDEFINED, 0);
  EXPECT_FALSE(none);
  EXPECT_THROW(none.rank(), CommError);
  const MpiComm empty;
  EXPECT_THROW(empty.size(), CommError);
}

TEST(MpiComm, OwnedCommunicatorsReturnErrorsAsCodes) {
  // MPI_COMM_SELF keeps MPI's default, fatal errors; its duplicate must report them as CommErrors instead.
  MPI_Errhandler self_handler = MPI_ERRHANDLER_NULL;
  LCL_MPI_CHECK(MPI_Comm_get_errhandler(MPI_COMM_SELF, &self_handler));
  ASSERT_NE(self_handler, MPI_ERRORS_RETURN) << "premise: MPI_COMM_SELF's errors are fatal by default";
  MPI_Errhandler_free(&self_handler);

  const MpiComm self = MpiComm::Dup(MPI_COMM_SELF);
  int value = 0;
  EXPECT_THROW(LCL_MPI_CHECK(MPI_Bcast(&value, 1, MPI_INT, /*root=*/3, self.get())), CommError);
}

}  // namespace
}  // namespace lcl::cluster
