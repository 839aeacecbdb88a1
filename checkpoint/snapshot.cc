// Snapshot: chunk states shared by the writer thread (Read, Close) and the owner thread (Release).
#include "checkpoint/snapshot.h"

#include <chrono>

#include "cluster/log.h"

namespace lcl::checkpoint {
namespace {

// A contiguous tensor's memory as a flat byte tensor.
torch::Tensor Bytes(const torch::Tensor& t) {
  return torch::from_blob(t.data_ptr(), {static_cast<int64_t>(t.numel() * t.element_size())},
                          torch::TensorOptions().dtype(torch::kByte));
}

}  // namespace

Snapshot::Snapshot(std::vector<torch::Tensor> live, std::vector<torch::Tensor> copies, size_t chunk_bytes)
    : live_(std::move(live)), copies_(std::move(copies)) {
  CHECK_EQ(live_.size(), copies_.size());
  CHECK_GT(chunk_bytes, 0u);
  for (size_t i = 0; i < copies_.size(); ++i) {
    first_chunk_.push_back(chunks_.size());
    const size_t bytes = copies_[i].numel() * copies_[i].element_size();
    const bool live_here = live_[i].defined();
    if (live_here) {
      CHECK(live_[i].device().is_cpu() && live_[i].is_contiguous());
      CHECK_EQ(static_cast<size_t>(live_[i].numel() * live_[i].element_size()), bytes);
    }
    for (size_t off = 0; off < bytes; off += chunk_bytes) {
      Chunk c;
      c.tensor = i;
      c.offset = off;
      c.size = std::min(chunk_bytes, bytes - off);
      c.state = live_here ? ChunkState::kLive : ChunkState::kCopied;
      chunks_.push_back(c);
    }
  }
  first_chunk_.push_back(chunks_.size());
}

bool Snapshot::AnyWriting() const {
  for (const Chunk& c : chunks_) {
    if (c.state == ChunkState::kWriting) return true;
  }
  return false;
}

void Snapshot::Read(size_t i, const std::function<void(const void*, size_t)>& sink) {
  CHECK_LT(i, copies_.size());
  for (size_t k = first_chunk_[i]; k < first_chunk_[i + 1]; ++k) {
    Chunk& c = chunks_[k];
    std::unique_lock<std::mutex> lock(mu_);
    const char* src;
    if (c.state == ChunkState::kLive && !released_) {
      c.state = ChunkState::kWriting;  // Release() waits for this chunk before it returns
      src = static_cast<const char*>(live_[i].data_ptr()) + c.offset;
    } else {
      // Wait for the whole Release(), not just this chunk: writing while the owner copies halves the copy's
      // speed on a machine whose cores the ranks already fill, and the owner is blocked until the copy ends.
      cv_.wait(lock, [&] { return c.state == ChunkState::kCopied && !releasing_; });
      src = static_cast<const char*>(copies_[i].data_ptr()) + c.offset;
    }
    lock.unlock();
    try {
      sink(src, c.size);
    } catch (...) {
      lock.lock();
      c.state = ChunkState::kDone;
      cv_.notify_all();
      throw;
    }
    lock.lock();
    c.state = ChunkState::kDone;
    cv_.notify_all();
  }
}

double Snapshot::Close() {
  std::unique_lock<std::mutex> lock(mu_);
  closed_ = true;
  cv_.notify_all();
  cv_.wait(lock, [&] { return !releasing_; });
  return release_ms_;
}

double Snapshot::Release() {
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  if (released_) return 0;
  released_ = true;
  releasing_ = true;
  // In write order, so the writer writes chunk k while this copies chunk k+1.
  for (Chunk& c : chunks_) {
    if (closed_) break;  // the writer failed: nobody will read the rest
    if (c.state != ChunkState::kLive) continue;
    c.state = ChunkState::kCopying;
    lock.unlock();
    // torch's copy: split over the intra-op threads, as the whole-tensor copy_ this replaces was.
    const int64_t at = static_cast<int64_t>(c.offset), n = static_cast<int64_t>(c.size);
    Bytes(copies_[c.tensor]).narrow(0, at, n).copy_(Bytes(live_[c.tensor]).narrow(0, at, n));
    lock.lock();
    c.state = ChunkState::kCopied;
    cv_.notify_all();
  }
  cv_.wait(lock, [&] { return closed_ || !AnyWriting(); });
  release_ms_ = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  releasing_ = false;
  cv_.notify_all();
  return release_ms_;
}

}  // namespace lcl::checkpoint
