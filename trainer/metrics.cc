// metrics.jsonl / eval.jsonl writers with resume truncation, their TensorBoard mirror, and the
// progress line.
#include "trainer/metrics.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "cluster/errors.h"
#include "cluster/log.h"
#include "trainer/tfevents.h"

namespace lcl::trainer {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;  // keeps "step" first, as a reader scanning the file expects

const std::set<std::string>& ReservedStepKeys() {
  static const std::set<std::string> keys = {
      "step", "loss", "lr", "grad_norm", "tokens_per_sec", "images_per_sec", "step_time_ms", "bad_images", "wall_time"};
  return keys;
}

const std::set<std::string>& ReservedEvalKeys() {
  static const std::set<std::string> keys = {"step", "shots", "accuracy", "n", "wall_time"};
  return keys;
}

std::FILE* OpenForAppend(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "ab");
  if (f == nullptr) {
    throw Error("cannot open " + path + " for appending: " + std::strerror(errno) +
                "; check that the run directory is writable");
  }
  return f;
}

}  // namespace

// --- MetricsWriter ---

void MetricsWriter::FileCloser::operator()(std::FILE* f) const {
  if (f != nullptr) std::fclose(f);
}

MetricsWriter::MetricsWriter(const std::string& run_dir, const MetricsOptions& options)
    : options_(options),
      metrics_path_((fs::path(run_dir) / "metrics.jsonl").string()),
      eval_path_((fs::path(run_dir) / "eval.jsonl").string()) {
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  if (ec) {
    throw Error("cannot create the run directory " + run_dir + ": " + ec.message() +
                "; check the path and its permissions");
  }
  for (const std::string* path : {&metrics_path_, &eval_path_}) {
    const int64_t dropped = TruncateJsonlAfterStep(*path, options_.resume_step);
    if (dropped > 0) {
      LOG(WARNING) << "dropped " << dropped << " line(s) of " << *path << " past the resume step "
                   << options_.resume_step << " (or torn by a kill), keeping one consistent history";
    }
  }
  metrics_file_.reset(OpenForAppend(metrics_path_));
  eval_file_.reset(OpenForAppend(eval_path_));
  if (options_.tensorboard) {
    tb_ = std::make_unique<TfEventsWriter>((fs::path(run_dir) / "tb").string(), "");
  }
}

MetricsWriter MetricsWriter::Open(const std::string& run_dir, int64_t resume_step, MetricsOptions options) {
  options.resume_step = resume_step;
  return MetricsWriter(run_dir, options);
}

MetricsWriter::~MetricsWriter() = default;
MetricsWriter::MetricsWriter(MetricsWriter&&) noexcept = default;
MetricsWriter& MetricsWriter::operator=(MetricsWriter&&) noexcept = default;

std::string MetricsWriter::tensorboard_path() const { return tb_ ? tb_->path() : std::string(); }

void MetricsWriter::AppendLine(std::FILE* file, const std::string& path, const std::string& line) {
  // One fwrite per line then a flush: the kernel has the whole line before we return, so a killed
  // process loses at most the line being written, which TruncateJsonlAfterStep drops on the next
  // open.
  const std::string text = line + "\n";
  if (std::fwrite(text.data(), 1, text.size(), file) != text.size() || std::fflush(file) != 0 ||
      (options_.fsync && ::fsync(::fileno(file)) != 0)) {
    throw Error("cannot write " + path + ": " + std::strerror(errno) + "; check free space in the run directory");
  }
}

void MetricsWriter::WriteStep(const StepMetrics& m) {
  const double now = WallTimeNow();
  Json j;
  j["step"] = m.step;
  j["loss"] = m.loss;
  j["lr"] = m.lr;
  j["grad_norm"] = m.grad_norm;
  j["tokens_per_sec"] = m.tokens_per_sec;
  j["images_per_sec"] = m.images_per_sec;
  j["step_time_ms"] = m.step_time_ms;
  j["bad_images"] = m.bad_images;
  for (const auto& [key, value] : m.extra) {
    CHECK(ReservedStepKeys().count(key) == 0) << "StepMetrics::extra key '" << key << "' is a fixed field";
    j[key] = value;
  }
  j["wall_time"] = now;
  AppendLine(metrics_file_.get(), metrics_path_, j.dump());

  if (tb_) {
    for (const auto& [key, value] : j.items()) {
      if (key == "step" || key == "wall_time") continue;
      tb_->AddScalar("train/" + key, m.step, value.is_null() ? NAN : value.get<double>(), now);
    }
    tb_->Flush(options_.fsync);
  }
}

void MetricsWriter::WriteEval(int64_t step, int shots, double accuracy, int64_t n,
                              const std::map<std::string, double>& extra) {
  const double now = WallTimeNow();
  Json j;
  j["step"] = step;
  j["shots"] = shots;
  j["accuracy"] = accuracy;
  j["n"] = n;
  for (const auto& [key, value] : extra) {
    CHECK(ReservedEvalKeys().count(key) == 0) << "WriteEval extra key '" << key << "' is a fixed field";
    j[key] = value;
  }
  j["wall_time"] = now;
  AppendLine(eval_file_.get(), eval_path_, j.dump());

  if (tb_) {
    const std::string prefix = "eval/" + std::to_string(shots) + "shot/";
    tb_->AddScalar(prefix + "accuracy", step, accuracy, now);
    for (const auto& [key, value] : extra) tb_->AddScalar(prefix + key, step, value, now);
    tb_->Flush(options_.fsync);
  }
}

int64_t TruncateJsonlAfterStep(const std::string& path, int64_t max_step) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return 0;  // nothing logged yet
  std::string kept;
  std::string line;
  int64_t dropped = 0;
  bool ends_with_newline = true;
  while (std::getline(in, line)) {
    ends_with_newline = !in.eof();
    const Json j = Json::parse(line, nullptr, /*allow_exceptions=*/false);
    const bool keep = !j.is_discarded() && j.is_object() && j.contains("step") && j["step"].is_number_integer() &&
                      j["step"].get<int64_t>() <= max_step;
    if (keep) {
      kept += line;
      kept += '\n';
    } else {
      ++dropped;
    }
  }
  in.close();
  // A complete last line without its '\n' would glue itself to the next appended line: rewrite then
  // too.
  if (dropped == 0 && ends_with_newline) return 0;

  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  bool ok = f != nullptr && std::fwrite(kept.data(), 1, kept.size(), f) == kept.size() && std::fflush(f) == 0 &&
            ::fsync(::fileno(f)) == 0;
  if (f != nullptr) ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    std::remove(tmp.c_str());
    throw Error("cannot rewrite " + path + " to drop rows past step " + std::to_string(max_step) + ": " + reason +
                "; check that the run directory is writable");
  }
  return dropped;
}

// --- formatting ---

std::string FormatThousands(double value) {
  if (!std::isfinite(value)) return "-";
  const long long rounded = std::llround(value);
  std::string digits = std::to_string(rounded < 0 ? -rounded : rounded);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return rounded < 0 ? "-" + out : out;
}

std::string FormatLr(double lr) {
  if (lr == 0.0) return "0";
  if (!std::isfinite(lr)) return std::isnan(lr) ? "nan" : (lr > 0 ? "inf" : "-inf");
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1e", lr);  // "3.0e-04"
  const std::string s = buf;
  const size_t e = s.find('e');
  return s.substr(0, e + 1) + std::to_string(std::stoi(s.substr(e + 1)));
}

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--";
  const long long s = std::llround(seconds);
  char buf[48];
  if (s < 60) {
    std::snprintf(buf, sizeof(buf), "%llds", s);
  } else if (s < 3600) {
    std::snprintf(buf, sizeof(buf), "%lldm%02llds", s / 60, s % 60);
  } else if (s < 86400) {
    std::snprintf(buf, sizeof(buf), "%lldh%02lldm", s / 3600, (s % 3600) / 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%lldd%02lldh", s / 86400, (s % 86400) / 3600);
  }
  return buf;
}

std::string FormatProgressLine(const StepMetrics& m, int64_t total_steps, double eta_seconds) {
  std::string step = "step " + std::to_string(m.step);
  if (total_steps > 0) step += "/" + std::to_string(total_steps);
  char loss[48];
  std::snprintf(loss, sizeof(loss), "%.4f", m.loss);
  return step + " | loss " + loss + " | lr " + FormatLr(m.lr) + " | " + FormatThousands(m.tokens_per_sec) +
         " tok/s | ETA " + FormatDuration(eta_seconds);
}

// --- ProgressLine ---

void StepTimeAverage::Add(double seconds) {
  times_.push_back(seconds);
  sum_ += seconds;
  if (times_.size() > window_) {
    sum_ -= times_.front();
    times_.pop_front();
  }
}

double StepTimeAverage::Mean() const { return times_.empty() ? -1.0 : sum_ / static_cast<double>(times_.size()); }

ProgressLine::ProgressLine(int64_t total_steps, const ProgressOptions& options, std::FILE* out)
    : total_steps_(total_steps),
      options_(options),
      out_(out),
      tty_(options.mode == ProgressMode::kTty || (options.mode == ProgressMode::kAuto && ::isatty(::fileno(out)) == 1)),
      step_times_(options.eta_window) {}

double ProgressLine::EtaSeconds(int64_t step) const {
  const double mean = step_times_.Mean();
  if (mean < 0 || total_steps_ <= 0) return -1.0;
  return mean * static_cast<double>(std::max<int64_t>(0, total_steps_ - step));
}

void ProgressLine::Update(const StepMetrics& m) {
  if (std::isfinite(m.step_time_ms) && m.step_time_ms > 0) step_times_.Add(m.step_time_ms / 1000.0);
  const std::string line = FormatProgressLine(m, total_steps_, EtaSeconds(m.step));
  if (tty_) {
    // "\r" back to column 0, then the line, then ESC[K to clear what a longer previous line left
    // behind.
    std::fprintf(out_, "\r%s\x1b[K", line.c_str());
    line_open_ = true;
    if (total_steps_ > 0 && m.step >= total_steps_) Finish();
  } else {
    const int64_t every = std::max<int64_t>(1, options_.plain_every);
    if (m.step % every == 0 || (total_steps_ > 0 && m.step == total_steps_)) {
      std::fprintf(out_, "%s\n", line.c_str());
    }
  }
  std::fflush(out_);
}

void ProgressLine::Finish() {
  if (line_open_) {
    std::fputc('\n', out_);
    std::fflush(out_);
    line_open_ = false;
  }
}

}  // namespace lcl::trainer
