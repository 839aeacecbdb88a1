// MappedFile: a file opened read-only and mapped into memory, both given back (munmap, close) when the owner
// dies. The safetensors readers view tensors in the mapping and copy byte ranges with pread(2).
//
//   MappedFile f("/ckpt/step_00000100/shard-r00000.safetensors");  // CheckpointError naming the path if it fails
//   const uint8_t* bytes = f.data();  f.ReadAt(offset, n, dst);
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace lcl::checkpoint {

class MappedFile {
 public:
  // Opens and maps all of `path`; an empty file has no mapping (data() is null). Throws CheckpointError.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  const uint8_t* data() const { return static_cast<const uint8_t*>(map_); }
  uint64_t size() const { return size_; }
  // Copies bytes [offset, offset + n) of the file into `dst` with pread(2): no page faults on the mapping,
  // which matters on machines where faults are slow. Throws CheckpointError past the end or on an I/O error.
  void ReadAt(uint64_t offset, uint64_t n, void* dst) const;

 private:
  void Release() noexcept;

  std::string path_;
  int fd_ = -1;
  void* map_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace lcl::checkpoint
