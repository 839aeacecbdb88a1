// TensorBoard event files written natively: TFRecord framing with masked CRC32C, Event protos
// holding scalar summaries, and a reader that checks every CRC (for tests and `lcl` tooling).
//
//   lcl::trainer::TfEventsWriter tb(run_dir + "/tb", "");
//   tb.AddScalar("train/loss", step, loss);
//   tb.Flush();
//   for (const auto& s : lcl::trainer::ReadTfEvents(tb.path())) ...
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

namespace lcl::trainer {

// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), continuing from `crc` (0 to start).
// Crc32c("123456789") == 0xE3069283.
uint32_t Crc32c(const void* data, size_t size, uint32_t crc = 0);

// TFRecord's masked CRC: rotate right by 15 and add a constant, so a CRC stored next to the data it
// covers does not make the CRC of the whole record degenerate.
uint32_t MaskCrc32c(uint32_t crc);

// The current time as TensorBoard stores it: seconds since the Unix epoch.
double WallTimeNow();

// One scalar point read back from an event file.
struct TfScalar {
  std::string tag;
  int64_t step = 0;
  float value = 0.0f;
  double wall_time = 0.0;
};

// Appends Event records to a new `events.out.tfevents.<unix seconds>.<hostname>[.<rank_tag>]` file
// in `dir` (created if missing). The first record is the file_version event TensorBoard expects. If
// that name exists already (a restart within the same second), `.1`, `.2`, ... is appended, so a
// file is never overwritten; TensorBoard reads every file in `dir` in name order. Not thread-safe.
// Write failures throw lcl::Error.
class TfEventsWriter {
 public:
  TfEventsWriter(const std::string& dir, const std::string& rank_tag);
  ~TfEventsWriter();
  TfEventsWriter(const TfEventsWriter&) = delete;
  TfEventsWriter& operator=(const TfEventsWriter&) = delete;

  // Buffers one scalar event; it reaches the file at the next Flush() or when the stdio buffer
  // fills.
  void AddScalar(const std::string& tag, int64_t step, double value, double wall_time);
  void AddScalar(const std::string& tag, int64_t step, double value) { AddScalar(tag, step, value, WallTimeNow()); }

  // Hands buffered records to the OS (fflush); with `sync`, also waits for the disk (fsync).
  void Flush(bool sync = false);

  const std::string& path() const { return path_; }

 private:
  void WriteRecord(const std::string& data);

  std::string path_;
  std::FILE* file_ = nullptr;
};

// Reads every scalar (Summary.Value with simple_value) from an event file, checking both CRCs of
// every record. A bad CRC, a bad length or an undecodable Event throws lcl::DataError naming the
// file and the byte offset of the record. A record cut short at the end of the file (a writer
// killed mid-record) is an error too, unless `allow_truncated_tail`, which then ends the read there
// as TensorBoard does.
std::vector<TfScalar> ReadTfEvents(const std::string& path, bool allow_truncated_tail = false);

// The event files (names containing "tfevents") directly in `dir`, full paths, sorted by name (= by
// creation time for files this writer made). Empty if `dir` does not exist.
std::vector<std::string> FindTfEventsFiles(const std::string& dir);

}  // namespace lcl::trainer
