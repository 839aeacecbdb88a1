// XXH3-64 over buffers and files; XXH3-128 of a buffer.
#include "checkpoint/checksum.h"

#include <xxhash.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "cluster/errors.h"

namespace lcl::checkpoint {

Xxh3::Xxh3() : state_(XXH3_createState()) { XXH3_64bits_reset(static_cast<XXH3_state_t*>(state_)); }
Xxh3::~Xxh3() { XXH3_freeState(static_cast<XXH3_state_t*>(state_)); }
void Xxh3::Update(const void* data, size_t size) { XXH3_64bits_update(static_cast<XXH3_state_t*>(state_), data, size); }
uint64_t Xxh3::Digest() const { return XXH3_64bits_digest(static_cast<XXH3_state_t*>(state_)); }

uint64_t Xxh3File(const std::string& path, uint64_t* size) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw CheckpointError("cannot open " + path + ": " + std::strerror(errno));
  Xxh3 h;
  std::vector<char> buf(8 << 20);
  uint64_t total = 0;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) {
    h.Update(buf.data(), n);
    total += n;
  }
  const bool failed = std::ferror(f);
  std::fclose(f);
  if (failed) throw CheckpointError("read error in " + path);
  if (size) *size = total;
  return h.Digest();
}

std::string HexDigest(uint64_t digest) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(digest));
  return buf;
}

std::string Xxh3Hex128(const void* data, size_t size) {
  const XXH128_hash_t h = XXH3_128bits(data, size);
  return HexDigest(h.high64) + HexDigest(h.low64);
}

}  // namespace lcl::checkpoint
