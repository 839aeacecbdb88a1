// MappedFile: open + fstat + mmap with every failure a CheckpointError, and the descriptor kept for pread.
#include "checkpoint/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "cluster/errors.h"

namespace lcl::checkpoint {
namespace {

CheckpointError ErrnoError(const std::string& what, const std::string& path) {
  return CheckpointError("cannot " + what + " '" + path + "': " + std::strerror(errno));
}

}  // namespace

MappedFile::MappedFile(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw ErrnoError("open", path);
  // A constructor that throws runs no destructor: give the descriptor back before each throw.
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    const CheckpointError error = ErrnoError("stat", path);
    Release();
    throw error;
  }
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ == 0) return;  // mmap refuses a zero length; the format check reports the empty file
  void* map = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
  if (map == MAP_FAILED) {
    const CheckpointError error = ErrnoError("mmap", path);
    Release();
    throw error;
  }
  map_ = map;
}

MappedFile::~MappedFile() { Release(); }

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path_(std::move(other.path_)),
      fd_(std::exchange(other.fd_, -1)),
      map_(std::exchange(other.map_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    Release();
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
    map_ = std::exchange(other.map_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void MappedFile::Release() noexcept {
  if (map_ != nullptr) ::munmap(map_, size_);
  if (fd_ >= 0) ::close(fd_);
  map_ = nullptr;
  fd_ = -1;
}

void MappedFile::ReadAt(uint64_t offset, uint64_t n, void* dst) const {
  if (offset > size_ || n > size_ - offset) {
    throw CheckpointError("cannot read bytes [" + std::to_string(offset) + ", " + std::to_string(offset + n) +
                          ") of '" + path_ + "', which holds " + std::to_string(size_) +
                          " bytes; the file changed since it was opened");
  }
  char* out = static_cast<char*>(dst);
  while (n > 0) {
    const ssize_t got = ::pread(fd_, out, std::min<uint64_t>(n, uint64_t{1} << 30), static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) throw ErrnoError("read", path_);
    if (got == 0) {
      throw CheckpointError("cannot read '" + path_ + "': it ended at byte " + std::to_string(offset) +
                            " (truncated since it was opened)");
    }
    out += got;
    offset += static_cast<uint64_t>(got);
    n -= static_cast<uint64_t>(got);
  }
}

}  // namespace lcl::checkpoint
