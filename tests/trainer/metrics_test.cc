// Metrics outputs: CRC32C vectors, TensorBoard event files written then read back (and every
// corrupted byte caught), metrics.jsonl / eval.jsonl contents and resume truncation, and the
// progress line's formatting.
#include "trainer/metrics.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cluster/errors.h"
#include "tests/test_util.h"
#include "trainer/tensorboard.pb.h"
#include "trainer/tfevents.h"

namespace lcl::trainer {
namespace {

namespace fs = std::filesystem;
using lcl::testing::ExpectErrorMentions;
using lcl::testing::TempDir;
using nlohmann::json;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

std::vector<json> ReadJsonl(const std::string& path) {
  std::vector<json> rows;
  std::ifstream in(path);
  std::string line;
  // json::parse throws on a bad line, which fails the test.
  while (std::getline(in, line)) rows.push_back(json::parse(line));
  return rows;
}

std::vector<int64_t> Steps(const std::vector<json>& rows) {
  std::vector<int64_t> steps;
  for (const auto& r : rows) steps.push_back(r.at("step").get<int64_t>());
  return steps;
}

StepMetrics MetricsAt(int64_t step) {
  StepMetrics m;
  m.step = step;
  m.loss = 3.0 / static_cast<double>(step + 1);
  m.lr = 3e-4 * static_cast<double>(step) / 10.0;
  m.grad_norm = 1.5 + 0.01 * static_cast<double>(step);
  m.tokens_per_sec = 5230.0 + static_cast<double>(step);
  m.images_per_sec = 40.0;
  m.step_time_ms = 250.0;
  m.bad_images = step % 3 == 0 ? 1 : 0;
  m.extra["mfu"] = 0.41;
  m.extra["data_wait_ms"] = 1.25;
  return m;
}

// Byte offsets of the records of a TFRecord file (reading only the length fields).
std::vector<size_t> RecordOffsets(const std::string& bytes) {
  std::vector<size_t> offsets;
  for (size_t offset = 0; offset + 12 <= bytes.size();) {
    offsets.push_back(offset);
    uint64_t length = 0;
    for (int i = 0; i < 8; ++i) {
      length |= uint64_t{static_cast<unsigned char>(bytes[offset + i])} << (8 * i);
    }
    offset += 12 + length + 4;
  }
  return offsets;
}

// --- CRC32C ---

TEST(Crc32c, MatchesPublishedVectors) {
  EXPECT_EQ(Crc32c("123456789", 9), 0xE3069283u);
  const std::string zeros(32, '\0');
  EXPECT_EQ(Crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);  // RFC 3720 B.4
  const std::string ones(32, '\xff');
  EXPECT_EQ(Crc32c(ones.data(), ones.size()), 0x62A8AB43u);  // RFC 3720 B.4
  std::string ascending(32, '\0');
  for (int i = 0; i < 32; ++i) ascending[i] = static_cast<char>(i);
  EXPECT_EQ(Crc32c(ascending.data(), ascending.size()), 0x46DD794Eu);  // RFC 3720 B.4
  EXPECT_EQ(Crc32c("", 0), 0u);
}

TEST(Crc32c, ContinuingMatchesOneShot) {
  const std::string text = "The quick brown fox jumps over the lazy dog";
  const uint32_t whole = Crc32c(text.data(), text.size());
  for (size_t split = 0; split <= text.size(); ++split) {
    EXPECT_EQ(Crc32c(text.data() + split, text.size() - split, Crc32c(text.data(), split)), whole);
  }
}

TEST(Crc32c, MaskRotatesAndAddsTheTfRecordDelta) {
  EXPECT_EQ(MaskCrc32c(0), 0xa282ead8u);
  const uint32_t crc = 0xE3069283u;
  EXPECT_EQ(MaskCrc32c(crc), static_cast<uint32_t>(((crc >> 15) | (crc << 17)) + 0xa282ead8u));
}

// --- event files ---

TEST(TfEvents, ScalarsReadBackWithTagsStepsAndValues) {
  TempDir dir;
  std::string path;
  {
    TfEventsWriter writer(dir / "tb", "rank0");
    path = writer.path();
    writer.AddScalar("train/loss", 1, 2.5, 1000.25);
    writer.AddScalar("train/loss", 2, 0.0, 1001.5);  // a zero must survive proto3's default elision
    writer.AddScalar("train/lr", 2, 3e-4, 1001.5);
    writer.AddScalar("eval/acc", 0, -1.75, 1002.0);
    writer.Flush(/*sync=*/true);
  }
  const std::string name = fs::path(path).filename().string();
  EXPECT_EQ(name.rfind("events.out.tfevents.", 0), 0u) << name;
  EXPECT_NE(name.find(".rank0"), std::string::npos) << name;
  EXPECT_EQ(FindTfEventsFiles(dir / "tb"), std::vector<std::string>{path});

  const std::vector<TfScalar> scalars = ReadTfEvents(path);
  ASSERT_EQ(scalars.size(), 4u);
  EXPECT_EQ(scalars[0].tag, "train/loss");
  EXPECT_EQ(scalars[0].step, 1);
  EXPECT_EQ(scalars[0].value, 2.5f);
  EXPECT_EQ(scalars[0].wall_time, 1000.25);
  EXPECT_EQ(scalars[1].step, 2);
  EXPECT_EQ(scalars[1].value, 0.0f);
  EXPECT_EQ(scalars[2].tag, "train/lr");
  EXPECT_EQ(scalars[2].value, static_cast<float>(3e-4));
  EXPECT_EQ(scalars[3].tag, "eval/acc");
  EXPECT_EQ(scalars[3].step, 0);
  EXPECT_EQ(scalars[3].value, -1.75f);
}

TEST(TfEvents, FirstRecordIsTheFileVersionEvent) {
  TempDir dir;
  TfEventsWriter writer(dir.path(), "");
  writer.AddScalar("x", 7, 1.0);
  writer.Flush();
  const std::string bytes = ReadFile(writer.path());
  const std::vector<size_t> offsets = RecordOffsets(bytes);
  ASSERT_EQ(offsets.size(), 2u);
  lcl::tensorboard::Event first;
  ASSERT_TRUE(first.ParseFromArray(bytes.data() + 12, static_cast<int>(offsets[1] - 16)));
  EXPECT_EQ(first.file_version(), "brain.Event:2");
  EXPECT_GT(first.wall_time(), 1.6e9);
}

TEST(TfEvents, EveryFlippedByteIsReportedWithFileAndRecordOffset) {
  TempDir dir;
  std::string path;
  {
    TfEventsWriter writer(dir.path(), "");
    path = writer.path();
    for (int step = 0; step < 3; ++step) writer.AddScalar("train/loss", step, 1.0 / (step + 1), 5.0);
  }
  const std::string good = ReadFile(path);
  const std::vector<size_t> offsets = RecordOffsets(good);
  ASSERT_EQ(offsets.size(), 4u);
  // Every byte of the file is under one of the two CRCs, so every single flip must be caught.
  for (size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ 0x10);
    WriteFile(path, bad);
    size_t record = 0;
    while (record + 1 < offsets.size() && offsets[record + 1] <= i) ++record;
    SCOPED_TRACE("flipped byte " + std::to_string(i));
    ExpectErrorMentions<DataError>([&] { ReadTfEvents(path); },
                                   {path, "offset " + std::to_string(offsets[record]) + ":", "CRC mismatch"});
  }
}

TEST(TfEvents, TruncatedTailIsAnErrorUnlessAllowed) {
  TempDir dir;
  std::string path;
  {
    TfEventsWriter writer(dir.path(), "");
    path = writer.path();
    writer.AddScalar("a", 1, 1.0);
    writer.AddScalar("a", 2, 2.0);
  }
  const std::string good = ReadFile(path);
  WriteFile(path, good.substr(0, good.size() - 5));  // the last record loses its footer and a byte
  EXPECT_THROW(ReadTfEvents(path), DataError);
  const std::vector<TfScalar> scalars = ReadTfEvents(path, /*allow_truncated_tail=*/true);
  ASSERT_EQ(scalars.size(), 1u);
  EXPECT_EQ(scalars[0].step, 1);
}

TEST(TfEvents, WriterInTheSameSecondMakesANewFile) {
  TempDir dir;
  TfEventsWriter first(dir.path(), "");
  TfEventsWriter second(dir.path(), "");
  EXPECT_NE(first.path(), second.path());
  EXPECT_EQ(FindTfEventsFiles(dir.path()).size(), 2u);
}

TEST(TfEvents, MissingFileIsADataErrorNamingIt) {
  ExpectErrorMentions<DataError>([] { ReadTfEvents("/nonexistent/events.out.tfevents.1"); },
                                 {"/nonexistent/events.out.tfevents.1"});
}

// --- metrics.jsonl / eval.jsonl ---

TEST(MetricsWriter, EachStepIsOneJsonLineWithTheFields) {
  TempDir run;
  {
    MetricsWriter writer(run.path());
    for (int64_t step = 1; step <= 3; ++step) writer.WriteStep(MetricsAt(step));
    // No close yet: each line must already be in the file.
    const std::vector<json> rows = ReadJsonl(run / "metrics.jsonl");
    ASSERT_EQ(rows.size(), 3u);
    for (const char* field : {"step", "loss", "lr", "grad_norm", "tokens_per_sec", "images_per_sec", "step_time_ms",
                              "bad_images", "mfu", "data_wait_ms", "wall_time"}) {
      EXPECT_TRUE(rows[2].contains(field)) << field;
    }
    EXPECT_EQ(ReadFile(run / "metrics.jsonl").rfind("{\"step\":1,", 0), 0u);  // step first
    EXPECT_EQ(rows[2]["step"].get<int64_t>(), 3);
    EXPECT_DOUBLE_EQ(rows[2]["loss"].get<double>(), MetricsAt(3).loss);
    EXPECT_DOUBLE_EQ(rows[2]["lr"].get<double>(), MetricsAt(3).lr);
    EXPECT_EQ(rows[2]["bad_images"].get<int64_t>(), 1);
    EXPECT_DOUBLE_EQ(rows[2]["mfu"].get<double>(), 0.41);
  }
  EXPECT_EQ(Steps(ReadJsonl(run / "metrics.jsonl")), (std::vector<int64_t>{1, 2, 3}));
}

TEST(MetricsWriter, NonFiniteValuesAreWrittenAsNull) {
  TempDir run;
  MetricsWriter writer(run.path());
  StepMetrics m = MetricsAt(1);
  m.loss = NAN;
  m.grad_norm = INFINITY;
  writer.WriteStep(m);
  const std::vector<json> rows = ReadJsonl(run / "metrics.jsonl");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_TRUE(rows[0]["loss"].is_null());
  EXPECT_TRUE(rows[0]["grad_norm"].is_null());
}

TEST(MetricsWriter, EvalRowsGoToEvalJsonl) {
  TempDir run;
  MetricsWriter writer(run.path());
  writer.WriteEval(100, 16, 0.8125, 512, {{"loss", 0.5}});
  writer.WriteEval(100, 2, 0.625, 512);
  const std::vector<json> rows = ReadJsonl(run / "eval.jsonl");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0]["step"].get<int64_t>(), 100);
  EXPECT_EQ(rows[0]["shots"].get<int>(), 16);
  EXPECT_DOUBLE_EQ(rows[0]["accuracy"].get<double>(), 0.8125);
  EXPECT_EQ(rows[0]["n"].get<int64_t>(), 512);
  EXPECT_DOUBLE_EQ(rows[0]["loss"].get<double>(), 0.5);
  EXPECT_EQ(rows[1]["shots"].get<int>(), 2);
}

// A run killed after step 10 that resumes from its step-6 checkpoint must leave the same step
// history as a run that was never interrupted.
TEST(MetricsWriter, ResumeDropsRowsPastTheResumeStepMatchingAnUninterruptedRun) {
  TempDir interrupted;
  {
    MetricsWriter writer(interrupted.path());
    for (int64_t step = 1; step <= 10; ++step) {
      writer.WriteStep(MetricsAt(step));
      if (step % 5 == 0) writer.WriteEval(step, 16, 0.5, 64);
    }
  }
  {
    MetricsWriter writer = MetricsWriter::Open(interrupted.path(), 6);
    EXPECT_EQ(Steps(ReadJsonl(interrupted / "metrics.jsonl")), (std::vector<int64_t>{1, 2, 3, 4, 5, 6}));
    EXPECT_EQ(Steps(ReadJsonl(interrupted / "eval.jsonl")), (std::vector<int64_t>{5}));
    for (int64_t step = 7; step <= 12; ++step) {
      writer.WriteStep(MetricsAt(step));
      if (step % 5 == 0) writer.WriteEval(step, 16, 0.5, 64);
    }
  }
  TempDir uninterrupted;
  {
    MetricsWriter writer(uninterrupted.path());
    for (int64_t step = 1; step <= 12; ++step) {
      writer.WriteStep(MetricsAt(step));
      if (step % 5 == 0) writer.WriteEval(step, 16, 0.5, 64);
    }
  }
  const std::vector<json> resumed = ReadJsonl(interrupted / "metrics.jsonl");
  const std::vector<json> reference = ReadJsonl(uninterrupted / "metrics.jsonl");
  ASSERT_EQ(Steps(resumed), Steps(reference));
  for (size_t i = 0; i < resumed.size(); ++i) {
    EXPECT_EQ(resumed[i]["loss"], reference[i]["loss"]) << "row " << i;
    EXPECT_EQ(resumed[i]["lr"], reference[i]["lr"]) << "row " << i;
  }
  EXPECT_EQ(Steps(ReadJsonl(interrupted / "eval.jsonl")), Steps(ReadJsonl(uninterrupted / "eval.jsonl")));
  // TensorBoard: one event file per writer; the newest holds steps 7..12 only.
  const std::vector<std::string> tb_files = FindTfEventsFiles(interrupted / "tb");
  ASSERT_EQ(tb_files.size(), 2u);
  int64_t min_step = 1 << 30;
  for (const TfScalar& s : ReadTfEvents(tb_files.back())) min_step = std::min(min_step, s.step);
  EXPECT_EQ(min_step, 7);
}

TEST(MetricsWriter, LineTornByAKillIsDroppedOnOpen) {
  TempDir run;
  {
    MetricsWriter writer(run.path());
    for (int64_t step = 1; step <= 4; ++step) writer.WriteStep(MetricsAt(step));
  }
  {
    std::ofstream out(run / "metrics.jsonl", std::ios::app | std::ios::binary);
    out << R"({"step":5,"loss":1.2)";  // no closing brace, no newline
  }
  MetricsWriter writer = MetricsWriter::Open(run.path(), 100);
  writer.WriteStep(MetricsAt(5));
  EXPECT_EQ(Steps(ReadJsonl(run / "metrics.jsonl")), (std::vector<int64_t>{1, 2, 3, 4, 5}));
}

TEST(MetricsWriter, CompleteLastLineWithoutNewlineIsKeptAndTerminated) {
  TempDir run;
  WriteFile(run / "metrics.jsonl", "{\"step\":1,\"loss\":2.0}\n{\"step\":2,\"loss\":1.0}");
  EXPECT_EQ(TruncateJsonlAfterStep(run / "metrics.jsonl", 10), 0);
  EXPECT_EQ(ReadFile(run / "metrics.jsonl"), "{\"step\":1,\"loss\":2.0}\n{\"step\":2,\"loss\":1.0}\n");
  EXPECT_EQ(TruncateJsonlAfterStep(run / "missing.jsonl", 10), 0);
  EXPECT_FALSE(fs::exists(run / "missing.jsonl"));
}

TEST(MetricsWriter, ScalarsAreMirroredToTensorBoard) {
  TempDir run;
  std::string tb_path;
  {
    MetricsWriter writer(run.path());
    tb_path = writer.tensorboard_path();
    for (int64_t step = 1; step <= 3; ++step) writer.WriteStep(MetricsAt(step));
    writer.WriteEval(3, 16, 0.75, 128);
  }
  ASSERT_FALSE(tb_path.empty());
  EXPECT_EQ(fs::path(tb_path).parent_path(), fs::path(run / "tb"));
  std::map<std::string, std::map<int64_t, float>> by_tag;
  for (const TfScalar& s : ReadTfEvents(tb_path)) by_tag[s.tag][s.step] = s.value;
  for (int64_t step = 1; step <= 3; ++step) {
    const StepMetrics m = MetricsAt(step);
    EXPECT_EQ(by_tag["train/loss"][step], static_cast<float>(m.loss));
    EXPECT_EQ(by_tag["train/lr"][step], static_cast<float>(m.lr));
    EXPECT_EQ(by_tag["train/tokens_per_sec"][step], static_cast<float>(m.tokens_per_sec));
    EXPECT_EQ(by_tag["train/bad_images"][step], static_cast<float>(m.bad_images));
    EXPECT_EQ(by_tag["train/mfu"][step], 0.41f);
  }
  EXPECT_EQ(by_tag["eval/16shot/accuracy"][3], 0.75f);
  EXPECT_EQ(by_tag.count("train/step"), 0u);
}

TEST(MetricsWriter, TensorBoardCanBeTurnedOff) {
  TempDir run;
  MetricsOptions options;
  options.tensorboard = false;
  MetricsWriter writer(run.path(), options);
  writer.WriteStep(MetricsAt(1));
  EXPECT_TRUE(writer.tensorboard_path().empty());
  EXPECT_FALSE(fs::exists(run / "tb"));
}

// Writes a known run for tests/trainer/check_tfevents.py (an independent Python reader) into
// $LCL_TFEVENTS_EXPORT_DIR; without it, into a temporary directory (then it only checks that it can
// write).
TEST(TfEventsExport, WritesARunForTheExternalReader) {
  TempDir tmp;
  const char* env = std::getenv("LCL_TFEVENTS_EXPORT_DIR");
  const std::string run = env != nullptr ? std::string(env) : tmp.path();
  MetricsWriter writer(run);
  for (int64_t step = 0; step <= 20; ++step) writer.WriteStep(MetricsAt(step));
  writer.WriteEval(20, 16, 0.8125, 512);
  EXPECT_FALSE(writer.tensorboard_path().empty());
}

// --- progress line ---

TEST(Format, NumbersLrAndDurations) {
  EXPECT_EQ(FormatThousands(5230.4), "5,230");
  EXPECT_EQ(FormatThousands(999), "999");
  EXPECT_EQ(FormatThousands(1000), "1,000");
  EXPECT_EQ(FormatThousands(1234567.6), "1,234,568");
  EXPECT_EQ(FormatThousands(-1234), "-1,234");
  EXPECT_EQ(FormatThousands(0), "0");
  EXPECT_EQ(FormatThousands(NAN), "-");
  EXPECT_EQ(FormatLr(3e-4), "3.0e-4");
  EXPECT_EQ(FormatLr(1.24e-5), "1.2e-5");
  EXPECT_EQ(FormatLr(2e-3), "2.0e-3");
  EXPECT_EQ(FormatLr(1.0), "1.0e0");
  EXPECT_EQ(FormatLr(0.0), "0");
  EXPECT_EQ(FormatDuration(0), "0s");
  EXPECT_EQ(FormatDuration(45), "45s");
  EXPECT_EQ(FormatDuration(252), "4m12s");
  EXPECT_EQ(FormatDuration(3600), "1h00m");
  EXPECT_EQ(FormatDuration(3725), "1h02m");
  EXPECT_EQ(FormatDuration(180000), "2d02h");
  EXPECT_EQ(FormatDuration(-1), "--");
  EXPECT_EQ(FormatDuration(NAN), "--");
}

TEST(Format, ProgressLineMatchesTheDocumentedExample) {
  StepMetrics m;
  m.step = 120;
  m.loss = 2.31449;
  m.lr = 3e-4;
  m.tokens_per_sec = 5230.2;
  EXPECT_EQ(FormatProgressLine(m, 1000, 252.0), "step 120/1000 | loss 2.3145 | lr 3.0e-4 | 5,230 tok/s | ETA 4m12s");
  EXPECT_EQ(FormatProgressLine(m, 1000, -1.0), "step 120/1000 | loss 2.3145 | lr 3.0e-4 | 5,230 tok/s | ETA --");
}

TEST(StepTimeAverage, AveragesTheLastWindowOfSteps) {
  StepTimeAverage avg(3);
  EXPECT_EQ(avg.Mean(), -1.0);
  avg.Add(10.0);  // a slow first step
  EXPECT_DOUBLE_EQ(avg.Mean(), 10.0);
  avg.Add(1.0);
  avg.Add(1.0);
  avg.Add(1.0);  // the first step has left the window
  EXPECT_DOUBLE_EQ(avg.Mean(), 1.0);
  EXPECT_EQ(avg.count(), 3u);
}

std::string RunProgress(ProgressMode mode, int64_t total, int64_t every, bool finish) {
  std::FILE* out = std::tmpfile();
  ProgressOptions options;
  options.mode = mode;
  options.plain_every = every;
  {
    ProgressLine progress(total, options, out);
    for (int64_t step = 1; step <= total; ++step) {
      StepMetrics m = MetricsAt(step);
      m.step_time_ms = 2000.0;
      progress.Update(m);
    }
    if (finish) progress.Finish();
  }
  std::rewind(out);
  std::string text;
  for (int c; (c = std::fgetc(out)) != EOF;) text += static_cast<char>(c);
  std::fclose(out);
  return text;
}

TEST(ProgressLine, PlainModePrintsWholeLinesEveryNStepsWithoutCarriageReturns) {
  const std::string text = RunProgress(ProgressMode::kPlain, 25, 10, true);
  EXPECT_EQ(text.find('\r'), std::string::npos);
  EXPECT_EQ(text.find('\x1b'), std::string::npos);
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 3u) << text;  // steps 10, 20 and the last one, 25
  EXPECT_EQ(lines[0].rfind("step 10/25 | ", 0), 0u) << lines[0];
  EXPECT_NE(lines[0].find("ETA 30s"), std::string::npos) << lines[0];  // 15 steps left at 2 s each
  EXPECT_EQ(lines[1].rfind("step 20/25 | ", 0), 0u) << lines[1];
  EXPECT_EQ(lines[2].rfind("step 25/25 | ", 0), 0u) << lines[2];
  EXPECT_NE(lines[2].find("ETA 0s"), std::string::npos) << lines[2];
}

TEST(ProgressLine, TtyModeRewritesOneLineAndEndsIt) {
  const std::string text = RunProgress(ProgressMode::kTty, 5, 10, true);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\r'), 5);
  // The last step ends the line itself; Finish after it adds nothing.
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1);
  EXPECT_EQ(text.back(), '\n');
  EXPECT_NE(text.find("\rstep 3/5 | "), std::string::npos);
}

TEST(ProgressLine, AutoModeOnAFileIsPlain) {
  std::FILE* out = std::tmpfile();
  ProgressLine progress(10, {}, out);
  EXPECT_FALSE(progress.tty());
  std::fclose(out);
}

TEST(ProgressLine, EtaUsesTheMovingAverageOfStepTimes) {
  std::FILE* out = std::tmpfile();
  ProgressLine progress(100, {}, out);
  EXPECT_EQ(progress.EtaSeconds(0), -1.0);
  for (int64_t step = 1; step <= 10; ++step) {
    StepMetrics m;
    m.step = step;
    m.step_time_ms = 1000.0;
    progress.Update(m);
  }
  EXPECT_DOUBLE_EQ(progress.EtaSeconds(10), 90.0);
  std::fclose(out);
}

}  // namespace
}  // namespace lcl::trainer
