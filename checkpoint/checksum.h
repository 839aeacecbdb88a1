// XXH3-64 checksums (libxxhash) of byte streams and files: fast enough to hash a shard while it is written; XXH3-128
// content addresses.
//
//   Xxh3 h; h.Update(data, n); uint64_t sum = h.Digest();
//   uint64_t file_sum = Xxh3File("/ckpt/step_00000100/shard-r00000.safetensors");
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace lcl::checkpoint {

class Xxh3 {
 public:
  Xxh3();
  ~Xxh3();
  Xxh3(const Xxh3&) = delete;
  Xxh3& operator=(const Xxh3&) = delete;
  void Update(const void* data, size_t size);
  uint64_t Digest() const;

 private:
  void* state_;  // XXH3_state_t, kept out of the header
};

// The checksum of a whole file; throws lcl::CheckpointError if it cannot be read. `size` gets the byte count.
uint64_t Xxh3File(const std::string& path, uint64_t* size = nullptr);
std::string HexDigest(uint64_t digest);
// XXH3-128 of one buffer as 32 hex digits: a content address (the tower-feature cache keys images by it), where a
// 64-bit sum's collision odds would grow with the number of keys.
std::string Xxh3Hex128(const void* data, size_t size);

}  // namespace lcl::checkpoint
