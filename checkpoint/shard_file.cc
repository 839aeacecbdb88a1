// Shard files: the safetensors codec's stream into a descriptor, hashed on the way and fsynced; the reader.
#include "checkpoint/shard_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "checkpoint/checksum.h"
#include "checkpoint/snapshot.h"
#include "cluster/errors.h"

namespace lcl::checkpoint {
namespace {

std::string Errno(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

// Writes all of `size` bytes, hashing them; throws on a short write (disk full, I/O error).
void WriteAll(int fd, const void* data, size_t size, Xxh3* hash, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  hash->Update(p, size);
  while (size > 0) {
    ssize_t n = ::write(fd, p, std::min<size_t>(size, size_t{1} << 30));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw CheckpointError(Errno("cannot write", path));
    p += n;
    size -= static_cast<size_t>(n);
  }
}

}  // namespace

FileEntry WriteShardFile(const std::string& path, const TensorList& tensors, Snapshot* bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw CheckpointError(Errno("cannot create", path));
  Xxh3 hash;
  uint64_t size = 0;
  try {
    const ByteSink sink = [&](const void* p, size_t n) { WriteAll(fd, p, n, &hash, path); };
    TensorBytes from_snapshot;
    if (bytes != nullptr) from_snapshot = [&](size_t i, const ByteSink& to) { bytes->Read(i, to); };
    size = EncodeSafetensors(path, tensors, {{"format", "lcl-checkpoint-shard"}}, sink, from_snapshot);
    // The data must be on disk before rank 0 may commit the manifest that points at it.
    if (::fsync(fd) != 0) throw CheckpointError(Errno("cannot fsync", path));
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (::close(fd) != 0) throw CheckpointError(Errno("cannot close", path));
  FileEntry e;
  e.set_name(std::filesystem::path(path).filename().string());
  e.set_size(size);
  e.set_xxh3(hash.Digest());
  return e;
}

ShardFile::ShardFile(const std::string& path) : file_(path) {
  // Refused at open, not at the first read: a resume learns that a shard is unusable before it loads anything.
  for (const std::string& name : file_.Names()) {
    const SafetensorInfo& info = file_.Info(name);
    entries_[name] = {DtypeFromName(info.dtype, path + ": tensor '" + name + "'"), info.shape, info.begin, info.end};
  }
}

}  // namespace lcl::checkpoint
