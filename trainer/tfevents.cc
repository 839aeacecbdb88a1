// TFRecord framing, CRC32C, and the Event protos of TensorBoard event files.
#include "trainer/tfevents.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "cluster/errors.h"
#include "trainer/tensorboard.pb.h"

namespace lcl::trainer {
namespace {

namespace fs = std::filesystem;

constexpr uint32_t kCrc32cPoly = 0x82F63B78u;  // Castagnoli, bit-reflected
constexpr uint32_t kCrcMaskDelta = 0xa282ead8u;
constexpr char kFileVersion[] = "brain.Event:2";
constexpr size_t kHeaderBytes = 8 + 4;  // uint64 length, masked CRC of the length
constexpr size_t kFooterBytes = 4;      // masked CRC of the data

// Byte-at-a-time table: event files are a few bytes per scalar, so slicing-by-8 would buy nothing
// here.
std::array<uint32_t, 256> MakeCrc32cTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t crc = i;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1u) ? kCrc32cPoly : 0u);
    table[i] = crc;
  }
  return table;
}

void PutLittleEndian(uint64_t value, int bytes, char* out) {
  for (int i = 0; i < bytes; ++i) out[i] = static_cast<char>((value >> (8 * i)) & 0xffu);
}

uint64_t GetLittleEndian(const char* in, int bytes) {
  uint64_t value = 0;
  for (int i = 0; i < bytes; ++i) value |= uint64_t{static_cast<unsigned char>(in[i])} << (8 * i);
  return value;
}

std::string HostName() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

std::string Hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", v);
  return buf;
}

[[noreturn]] void ThrowCorrupt(const std::string& path, size_t offset, const std::string& what) {
  throw DataError("TensorBoard event file " + path + ": record at byte offset " + std::to_string(offset) + ": " + what +
                  "; the file is corrupted (TensorBoard stops reading it there): move it aside or delete it");
}

}  // namespace

uint32_t Crc32c(const void* data, size_t size, uint32_t crc) {
  static const std::array<uint32_t, 256> table = MakeCrc32cTable();
  const auto* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  for (size_t i = 0; i < size; ++i) crc = table[(crc ^ p[i]) & 0xffu] ^ (crc >> 8);
  return ~crc;
}

uint32_t MaskCrc32c(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + kCrcMaskDelta; }

double WallTimeNow() {
  using namespace std::chrono;
  return duration_cast<duration<double>>(system_clock::now().time_since_epoch()).count();
}

TfEventsWriter::TfEventsWriter(const std::string& dir, const std::string& rank_tag) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    throw Error("cannot create the TensorBoard directory " + dir + ": " + ec.message() +
                "; check that the run directory is writable");
  }
  const double now = WallTimeNow();
  char seconds[32];
  std::snprintf(seconds, sizeof(seconds), "%010lld", static_cast<long long>(now));
  std::string base = (fs::path(dir) / "events.out.tfevents.").string() + seconds + "." + HostName();
  if (!rank_tag.empty()) base += "." + rank_tag;

  // O_EXCL: a restart in the same second must not truncate the previous run's file.
  int fd = -1;
  for (int attempt = 0; fd < 0; ++attempt) {
    path_ = attempt == 0 ? base : base + "." + std::to_string(attempt);
    fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 && (errno != EEXIST || attempt >= 1000)) {
      throw Error("cannot create TensorBoard event file " + path_ + ": " + std::strerror(errno) +
                  "; check that the run directory is writable and not full");
    }
  }
  file_ = ::fdopen(fd, "wb");
  if (file_ == nullptr) {
    ::close(fd);
    throw Error("fdopen failed for TensorBoard event file " + path_ + ": " + std::strerror(errno));
  }

  lcl::tensorboard::Event event;
  event.set_wall_time(now);
  event.set_file_version(kFileVersion);
  WriteRecord(event.SerializeAsString());
  Flush();
}

TfEventsWriter::~TfEventsWriter() {
  if (file_ != nullptr) std::fclose(file_);  // errors are ignored: nothing throws from a destructor
}

void TfEventsWriter::AddScalar(const std::string& tag, int64_t step, double value, double wall_time) {
  lcl::tensorboard::Event event;
  event.set_wall_time(wall_time);
  event.set_step(step);
  auto* v = event.mutable_summary()->add_value();
  v->set_tag(tag);
  v->set_simple_value(static_cast<float>(value));  // TensorBoard scalars are float32
  WriteRecord(event.SerializeAsString());
}

void TfEventsWriter::Flush(bool sync) {
  if (std::fflush(file_) != 0 || (sync && ::fsync(::fileno(file_)) != 0)) {
    throw Error("cannot flush TensorBoard event file " + path_ + ": " + std::strerror(errno) +
                "; check free space in the run directory");
  }
}

void TfEventsWriter::WriteRecord(const std::string& data) {
  char header[kHeaderBytes];
  PutLittleEndian(data.size(), 8, header);
  PutLittleEndian(MaskCrc32c(Crc32c(header, 8)), 4, header + 8);
  char footer[kFooterBytes];
  PutLittleEndian(MaskCrc32c(Crc32c(data.data(), data.size())), 4, footer);
  if (std::fwrite(header, 1, sizeof(header), file_) != sizeof(header) ||
      std::fwrite(data.data(), 1, data.size(), file_) != data.size() ||
      std::fwrite(footer, 1, sizeof(footer), file_) != sizeof(footer)) {
    throw Error("cannot write TensorBoard event file " + path_ + ": " + std::strerror(errno) +
                "; check free space in the run directory");
  }
}

std::vector<TfScalar> ReadTfEvents(const std::string& path, bool allow_truncated_tail) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw DataError("cannot open TensorBoard event file " + path + ": " + std::strerror(errno));
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  const std::string bytes = buffer.str();

  std::vector<TfScalar> scalars;
  size_t offset = 0;
  while (offset < bytes.size()) {
    const size_t left = bytes.size() - offset;
    const char* record = bytes.data() + offset;
    if (left < kHeaderBytes) {
      if (allow_truncated_tail) break;
      ThrowCorrupt(path, offset, "only " + std::to_string(left) + " bytes left for a 12-byte header");
    }
    const uint32_t length_crc = MaskCrc32c(Crc32c(record, 8));
    const uint32_t stored_length_crc = static_cast<uint32_t>(GetLittleEndian(record + 8, 4));
    if (length_crc != stored_length_crc) {
      ThrowCorrupt(path, offset,
                   "length CRC mismatch (stored " + Hex32(stored_length_crc) + ", computed " + Hex32(length_crc) + ")");
    }
    const uint64_t length = GetLittleEndian(record, 8);
    if (length > left - kHeaderBytes || left - kHeaderBytes - length < kFooterBytes) {
      if (allow_truncated_tail) break;
      ThrowCorrupt(path, offset,
                   "record of " + std::to_string(length) + " bytes runs past the end of the file (" +
                       std::to_string(left) + " bytes left)");
    }
    const char* data = record + kHeaderBytes;
    const uint32_t data_crc = MaskCrc32c(Crc32c(data, length));
    const uint32_t stored_data_crc = static_cast<uint32_t>(GetLittleEndian(data + length, 4));
    if (data_crc != stored_data_crc) {
      ThrowCorrupt(path, offset,
                   "data CRC mismatch (stored " + Hex32(stored_data_crc) + ", computed " + Hex32(data_crc) + ")");
    }
    lcl::tensorboard::Event event;
    if (length > static_cast<uint64_t>(INT_MAX) || !event.ParseFromArray(data, static_cast<int>(length))) {
      ThrowCorrupt(path, offset, "the record's CRCs match but its bytes are not an Event proto");
    }
    if (event.has_summary()) {
      for (const auto& v : event.summary().value()) {
        if (!v.has_simple_value()) continue;  // images, histograms, ... from other writers
        scalars.push_back({v.tag(), event.step(), v.simple_value(), event.wall_time()});
      }
    }
    offset += kHeaderBytes + length + kFooterBytes;
  }
  return scalars;
}

std::vector<std::string> FindTfEventsFiles(const std::string& dir) {
  std::vector<std::string> files;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_regular_file() && it->path().filename().string().find("tfevents") != std::string::npos) {
      files.push_back(it->path().string());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace lcl::trainer
