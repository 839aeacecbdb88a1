// Training metrics outputs, written by rank 0: `<run_dir>/metrics.jsonl` (one JSON object per
// logged step), `<run_dir>/eval.jsonl`, TensorBoard scalars under `<run_dir>/tb/`, and the one-line
// progress display.
//
//   // Drops rows past the resumed step, so the files stay one history.
//   auto metrics = lcl::trainer::MetricsWriter::Open(run_dir, resumed_step);
//   lcl::trainer::ProgressLine progress(total_steps);
//   for (...) {
//     lcl::trainer::StepMetrics m;
//     m.step = step, m.loss = loss, m.lr = lr, m.step_time_ms = step_ms;  // ... every field
//     m.extra["mfu"] = mfu;
//     metrics.WriteStep(m);
//     progress.Update(m);
//   }
//   progress.Finish();
#pragma once

#include <cstdint>
#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <string>

namespace lcl::trainer {

class TfEventsWriter;

// One logged training step. Plain values: the loop reduces its tensors to doubles first.
struct StepMetrics {
  int64_t step = 0;
  double loss = 0.0;
  double lr = 0.0;
  double grad_norm = 0.0;
  double tokens_per_sec = 0.0;
  double images_per_sec = 0.0;
  double step_time_ms = 0.0;
  int64_t bad_images = 0;  // images that failed to decode and were replaced in this step's batch
  // Optional extras written after the fixed fields, e.g. "mfu", "data_wait_ms", "restart_count".
  std::map<std::string, double> extra;
};

struct MetricsOptions {
  // Rows with a step greater than this are dropped from metrics.jsonl and eval.jsonl when opening,
  // so the files stay one consistent history after a resume. A fresh run keeps its default 0 (an
  // earlier attempt's rows past step 0 never reached a checkpoint, so they are not part of this
  // history).
  int64_t resume_step = 0;
  bool tensorboard = true;  // mirror every scalar into <run_dir>/tb/ (a new event file per Open)
  bool fsync = false;       // fsync after each line: survives a node crash, not just a killed process
};

// Appends to `<run_dir>/metrics.jsonl` and `<run_dir>/eval.jsonl`, one JSON object per line. Each
// line is written whole and flushed before the call returns, so a killed run keeps every completed
// line. For rank 0 only (two writers on one file would interleave). Moveable, not copyable; I/O
// failures throw lcl::Error.
class MetricsWriter {
 public:
  explicit MetricsWriter(const std::string& run_dir, const MetricsOptions& options = {});
  // The writer for a run resuming at `resume_step` (0 for a fresh run).
  static MetricsWriter Open(const std::string& run_dir, int64_t resume_step, MetricsOptions options = {});
  ~MetricsWriter();
  MetricsWriter(MetricsWriter&&) noexcept;
  MetricsWriter& operator=(MetricsWriter&&) noexcept;

  // Appends {"step", "loss", "lr", "grad_norm", "tokens_per_sec", "images_per_sec",
  // "step_time_ms", "bad_images", <extras...>, "wall_time"} to metrics.jsonl; TensorBoard tags
  // "train/<field>". Non-finite values are written as null.
  void WriteStep(const StepMetrics& m);

  // {"step", "shots", "accuracy", "n", <extras...>, "wall_time"} to eval.jsonl; TensorBoard tags
  // "eval/<shots>shot/accuracy" and "eval/<shots>shot/<extra>".
  void WriteEval(int64_t step, int shots, double accuracy, int64_t n, const std::map<std::string, double>& extra = {});

  const std::string& metrics_path() const { return metrics_path_; }
  const std::string& eval_path() const { return eval_path_; }
  // The TensorBoard event file of this writer; empty without options.tensorboard.
  std::string tensorboard_path() const;

 private:
  struct FileCloser {
    void operator()(std::FILE* f) const;
  };
  void AppendLine(std::FILE* file, const std::string& path, const std::string& line);

  MetricsOptions options_;
  std::string metrics_path_;
  std::string eval_path_;
  std::unique_ptr<std::FILE, FileCloser> metrics_file_;
  std::unique_ptr<std::FILE, FileCloser> eval_file_;
  std::unique_ptr<TfEventsWriter> tb_;
};

// Rewrites a JSONL file keeping only the lines whose "step" is <= max_step, in order; lines that do
// not parse (a line torn by a kill) or lack "step" are dropped too. Atomic (temp file + rename).
// Returns the number of lines dropped; a missing file is left missing and returns 0. Used by
// MetricsWriter; public for tools.
int64_t TruncateJsonlAfterStep(const std::string& path, int64_t max_step);

// --- progress display ---

// 5230.4 -> "5,230", -1234 -> "-1,234"; non-finite -> "-".
std::string FormatThousands(double value);
// 3e-4 -> "3.0e-4", 1.24e-5 -> "1.2e-5" (Python's "%.1e" without the exponent's leading zero).
std::string FormatLr(double lr);
// 45 -> "45s", 252 -> "4m12s", 3725 -> "1h02m", 180000 -> "2d02h"; negative or non-finite -> "--".
std::string FormatDuration(double seconds);
// "step 120/1000 | loss 2.3145 | lr 3.0e-4 | 5,230 tok/s | ETA 4m12s" (eta_seconds < 0: "ETA --").
std::string FormatProgressLine(const StepMetrics& m, int64_t total_steps, double eta_seconds);

// Mean of the last `window` step times: steadier than the last step alone, and it forgets the slow
// first steps (allocator warm-up, first-batch compilation) once the window has moved past them.
class StepTimeAverage {
 public:
  explicit StepTimeAverage(int window) : window_(window < 1 ? 1 : window) {}
  void Add(double seconds);
  double Mean() const;  // -1 before the first Add
  size_t count() const { return times_.size(); }

 private:
  size_t window_;
  std::deque<double> times_;
  double sum_ = 0.0;
};

enum class ProgressMode {
  kAuto,   // kTty when the output is a terminal, else kPlain
  kTty,    // rewrite one line in place with '\r'
  kPlain,  // a full line every `plain_every` steps: what a log file should receive
};

struct ProgressOptions {
  ProgressMode mode = ProgressMode::kAuto;
  int64_t plain_every = 10;  // kPlain: print at steps divisible by this, and at the last step
  int eta_window = 20;       // steps in the moving average of step times
};

// The rank-0 progress line. Update once per step (or per logged step: ETA uses m.step_time_ms, a
// per-step time). Not thread-safe; writes to `out`, which it does not own.
class ProgressLine {
 public:
  explicit ProgressLine(int64_t total_steps, const ProgressOptions& options = {}, std::FILE* out = stderr);
  void Update(const StepMetrics& m);
  // Ends the rewritten line on a TTY so later output starts on a fresh line. Idempotent.
  void Finish();
  double EtaSeconds(int64_t step) const;  // -1 while unknown
  bool tty() const { return tty_; }

 private:
  int64_t total_steps_;
  ProgressOptions options_;
  std::FILE* out_;
  bool tty_;
  bool line_open_ = false;
  StepTimeAverage step_times_;
};

}  // namespace lcl::trainer
