// Rank-aware glog sink: formats glog's line, inserts the rank tag, writes the per-rank file and stderr.
#include "cluster/logging.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>

#include "cluster/errors.h"
#include "cluster/log.h"

namespace lcl::cluster {
namespace {

// glog's own prefix hook (GLOG_CUSTOM_PREFIX_SUPPORT) is not compiled into every distribution's glog (Debian's
// 0.6 lacks it), so the rank tag is added by a sink that owns all output instead.
class RankSink final : public google::LogSink {
 public:
  void Configure(int rank, int size, const std::string& path) {
    std::lock_guard<std::mutex> lock(mu_);
    tag_ = "[rank " + std::to_string(rank) + "/" + std::to_string(size) + "] ";
    stderr_min_ = rank == 0 ? google::GLOG_INFO : google::GLOG_WARNING;
    if (file_) fclose(file_);
    file_ = nullptr;
    path_ = path;
    if (!path.empty()) {
      file_ = fopen(path.c_str(), "a");
      if (!file_) {
        throw ConfigError("cannot open the log file " + path + ": " + std::strerror(errno) +
                          "; make the run directory writable or choose another one.");
      }
    }
  }
  using google::LogSink::send;
  void send(google::LogSeverity severity, const char* full_filename, const char* base_filename, int line,
            const google::LogMessageTime& time, const char* message, size_t message_len) override {
    (void)full_filename;
    std::string text = ToString(severity, base_filename, line, time, message, message_len);
    // ToString gives "I1125 02:29:45.123456 tid file.cc:10] message": the tag goes after "] ".
    auto cut = text.find("] ");
    if (cut != std::string::npos) text.insert(cut + 2, tag_);
    text.push_back('\n');
    std::lock_guard<std::mutex> lock(mu_);
    if (file_) fwrite(text.data(), 1, text.size(), file_);
    if (severity >= stderr_min_) fwrite(text.data(), 1, text.size(), stderr);
    // Every line reaches the file at once: after a kill -9 the rank log must hold the last thing the rank did
    // ("checkpoint step N committed", "resumed from ..."). Ranks log a few lines a second, so this costs nothing.
    if (file_) fflush(file_);
  }
  void Flush() {
    std::lock_guard<std::mutex> lock(mu_);
    if (file_) fflush(file_);
    fflush(stderr);
  }
  std::string path() {
    std::lock_guard<std::mutex> lock(mu_);
    return path_;
  }

 private:
  std::mutex mu_;
  std::string tag_ = "[rank ?] ";
  google::LogSeverity stderr_min_ = google::GLOG_INFO;
  FILE* file_ = nullptr;
  std::string path_;
};

// Lives for the whole process: glog may log from any thread until exit.
RankSink* Sink() {
  static RankSink* sink = new RankSink();
  return sink;
}

}  // namespace

void InitLogging(const char* argv0, int rank, int size, const std::string& log_dir) {
  if (!google::IsGoogleLoggingInitialized()) {
    google::InitGoogleLogging(argv0 ? argv0 : "lcl");
    // glog's own stderr and files are switched off: the sink writes both, with the rank tag.
    FLAGS_logtostderr = false;
    FLAGS_alsologtostderr = false;
    FLAGS_stderrthreshold = google::NUM_SEVERITIES;
    for (int s = 0; s < google::NUM_SEVERITIES; ++s) google::SetLogDestination(s, "");
    google::AddLogSink(Sink());
  }
  std::string path;
  if (!log_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(log_dir, ec);
    if (ec) {
      throw ConfigError("cannot create the log directory " + log_dir + ": " + ec.message() +
                        "; make the run directory writable or choose another one.");
    }
    path = log_dir + "/rank" + std::to_string(rank) + ".log";
  }
  Sink()->Configure(rank, size, path);
}

std::string LogFilePath() { return Sink()->path(); }

void FlushLogs() { Sink()->Flush(); }

}  // namespace lcl::cluster
