// Snapshot: the bytes of an async save, which the writer thread reads from the caller's own tensors until the
// caller needs them back, and from host copies after that. Release() is the fence the training loop calls before
// it modifies the saved tensors (the optimizer step): it copies only the chunks the writer has not written yet,
// so the forward and backward of the next step overlap with the write and the stall is what is left to copy,
// not the whole state. The copy runs alone (the writer waits for it to finish), split over torch's intra-op threads.
//
//   Snapshot snap({w}, {w_copy});    // w: the caller's CPU tensor; w_copy: a host tensor of w's size
//   // writer thread:
//   snap.Read(0, [&](const void* p, size_t n) { write(fd, p, n); });
//   double blocked_ms = snap.Close();
//   // training thread, before w changes:
//   snap.Release();
#pragma once

#include <torch/types.h>

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <vector>

namespace lcl::checkpoint {

class Snapshot {
 public:
  // `live[i]` is a contiguous CPU tensor the writer may read until Release(); `copies[i]` is a host tensor of
  // the same byte size that receives what is not written by then. An undefined `live[i]` means `copies[i]`
  // holds the data already (a GPU tensor copied to the host at save time).
  Snapshot(std::vector<torch::Tensor> live, std::vector<torch::Tensor> copies, size_t chunk_bytes = size_t{16} << 20);
  Snapshot(const Snapshot&) = delete;
  Snapshot& operator=(const Snapshot&) = delete;

  // Writer thread: hands tensor i's bytes to `sink` in order, chunk by chunk, each from memory that cannot
  // change while `sink` runs (the caller's tensor before Release, the copy after).
  void Read(size_t i, const std::function<void(const void*, size_t)>& sink);
  // Writer thread, once it reads nothing more (all written, or failed): a later Release() returns at once.
  // Waits for a Release() in progress; returns how long Release() blocked its caller, in ms.
  double Close();
  // Owner thread; blocks. On return the writer never reads the live tensors again: every chunk not yet written
  // has been copied, and a write from live memory in progress has finished. Returns the ms it blocked;
  // a second call returns 0.
  double Release();

 private:
  enum class ChunkState { kLive, kWriting, kCopying, kCopied, kDone };
  struct Chunk {
    size_t tensor = 0;
    size_t offset = 0, size = 0;  // bytes within the tensor
    ChunkState state = ChunkState::kLive;
  };
  bool AnyWriting() const;

  std::vector<torch::Tensor> live_, copies_;
  std::vector<Chunk> chunks_;        // all tensors' chunks, in write order
  std::vector<size_t> first_chunk_;  // [tensors + 1]: tensor i owns chunks [first_chunk_[i], first_chunk_[i+1])
  std::mutex mu_;
  std::condition_variable cv_;
  bool released_ = false;   // no chunk may be read live any more
  bool releasing_ = false;  // Release() is copying
  bool closed_ = false;     // the writer reads nothing more
  double release_ms_ = 0;
};

}  // namespace lcl::checkpoint
