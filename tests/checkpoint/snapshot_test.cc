// Snapshot: whatever the interleaving of the writer and the owner's Release(), the writer sees exactly the bytes
// the tensors held when the save began, even when the owner overwrites them right after Release().
#include "checkpoint/snapshot.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>

namespace lcl::checkpoint {
namespace {

constexpr size_t kChunk = 1024;  // bytes: small chunks, so a tensor spans many

// Writer side: everything tensor i's Read() hands over, concatenated; `delay` per chunk widens the window in
// which the owner releases and overwrites.
std::string ReadAll(Snapshot& snap, size_t i, std::chrono::microseconds delay = {}) {
  std::string out;
  snap.Read(i, [&](const void* p, size_t n) {
    if (delay.count() > 0) std::this_thread::sleep_for(delay);
    out.append(static_cast<const char*>(p), n);
  });
  return out;
}

std::string Bytes(const torch::Tensor& t) {
  return std::string(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
}

TEST(Snapshot, WithoutReleaseTheWriterReadsTheLiveTensorsAndCopiesNothing) {
  torch::Tensor a = torch::arange(1000, torch::kFloat), b = torch::arange(77, torch::kLong);
  torch::Tensor ca = torch::full({1000}, -1.0f), cb = torch::full({77}, -1, torch::kLong);
  Snapshot snap({a, b}, {ca, cb}, kChunk);
  EXPECT_EQ(ReadAll(snap, 0), Bytes(a));
  EXPECT_EQ(ReadAll(snap, 1), Bytes(b));
  EXPECT_EQ(snap.Close(), 0);  // Release() never ran
  snap.Release();              // after Close: nothing left to copy
  EXPECT_TRUE(ca.eq(-1).all().item<bool>());
  EXPECT_TRUE(cb.eq(-1).all().item<bool>());
}

TEST(Snapshot, AfterReleaseTheWriterReadsTheCopiesNotTheModifiedTensors) {
  torch::Tensor a = torch::arange(5000, torch::kFloat);
  const std::string before = Bytes(a);
  Snapshot snap({a}, {torch::empty({5000})}, kChunk);
  snap.Release();
  a.add_(1.0f);  // the optimizer step
  EXPECT_EQ(ReadAll(snap, 0), before);
  snap.Close();
}

TEST(Snapshot, AReleaseDuringTheWriteKeepsTheBytesOfTheSaveStep) {
  for (int trial = 0; trial < 20; ++trial) {
    torch::Tensor a = torch::arange(20000, torch::kFloat) + trial, b = torch::arange(3000, torch::kInt);
    const std::string before_a = Bytes(a), before_b = Bytes(b);
    Snapshot snap({a, b}, {torch::empty({20000}), torch::empty({3000}, torch::kInt)}, kChunk);
    std::string got_a, got_b;
    std::thread writer([&] {
      got_a = ReadAll(snap, 0, std::chrono::microseconds(50));
      got_b = ReadAll(snap, 1, std::chrono::microseconds(50));
      snap.Close();
    });
    // Release at a different point of the write in each trial, then modify everything at once.
    std::this_thread::sleep_for(std::chrono::microseconds(200 * trial));
    snap.Release();
    a.mul_(-1.0f);
    b.fill_(7);
    writer.join();
    EXPECT_EQ(got_a, before_a) << "trial " << trial;
    EXPECT_EQ(got_b, before_b) << "trial " << trial;
  }
}

TEST(Snapshot, TensorsCopiedAtSaveTimeAreReadFromTheirCopies) {
  torch::Tensor copy = torch::arange(300, torch::kFloat);
  Snapshot snap({torch::Tensor()}, {copy}, kChunk);
  EXPECT_EQ(ReadAll(snap, 0), Bytes(copy));
  snap.Close();
}

TEST(Snapshot, AWriterThatFailsDoesNotHangRelease) {
  torch::Tensor a = torch::arange(10000, torch::kFloat);
  Snapshot snap({a}, {torch::empty({10000})}, kChunk);
  int chunks = 0;
  EXPECT_THROW(snap.Read(0,
                         [&](const void*, size_t) {
                           if (++chunks == 3) throw std::runtime_error("disk full");
                         }),
               std::runtime_error);
  snap.Close();
  EXPECT_GE(snap.Release(), 0);  // returns: the failed writer reads nothing more
}

}  // namespace
}  // namespace lcl::checkpoint
