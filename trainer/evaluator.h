// 2-way LCL evaluation (the paper's protocol): for each held-out test image, a support set of `shot` images of its
// class and of its paired class, each side under its label; the model answers the query image by greedy
// generation, and the answer is right when it contains the positive label and not the negative one. DP ranks split
// the episodes; TP ranks generate together. Three inputs (eval.format): ImageNet-100-style test pairs, ISEKAI-style
// files (one episode per line), and the held-out classes of an index from `lcl data index`.
//
//   Evaluator eval(ctx, run_model, loaded);
//   std::vector<EvalRow> rows = eval.Run();   // one row per eval.shots setting, identical on every rank
//   PrintEvalTable(rows, "eval", std::cout);
#pragma once

#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "cluster/cluster_context.h"
#include "sampler/image_io.h"
#include "sampler/isekai.h"
#include "sampler/pairs_file.h"
#include "sampler/prompt.h"
#include "trainer/run_options.h"
#include "trainer/run_setup.h"

namespace lcl::trainer {

struct EvalRow {
  int shots = 0;
  int64_t correct = 0;
  int64_t n = 0;
  int64_t unanswered = 0;  // answers that named neither label (or both)
  // Episodes shown fewer than `shots` support images on a side (ISEKAI lines with short lists use what they have).
  int64_t short_support = 0;
  // Episodes longer than data.max_length, evaluated at fewer shots (data.too_long=drop_shots).
  int64_t too_long = 0;
  double accuracy() const { return n > 0 ? static_cast<double>(correct) / n : 0.0; }
  std::string example_answer;  // the first episode's generated text (for the log)
};

// How an answer is scored, case-insensitively in both.
//   kOfficial: the official rule as written: the answer contains the positive label and not the negative one, as
//     substrings. It scores some answers wrongly: with nested labels ("cat" / "wildcat") the right answer
//     "wildcat" contains the other label and is scored wrong; "tomcat" counts as naming "cat".
//   kLcl: a label counts only where it stands as a whole word or phrase (no letter or digit right before or after
//     it; its own "'", "." or "-" are part of it), and of two nested labels the longer is matched first and its
//     occurrences are blanked before the shorter is looked for. Right when the positive is named and the negative
//     is not.
enum class AnswerMetric { kOfficial, kLcl };
bool AnswerIsCorrect(const std::string& answer, const std::string& positive, const std::string& negative,
                     AnswerMetric metric = AnswerMetric::kLcl);

// The extra eval.jsonl fields of a row (besides step, shots, accuracy, n).
std::map<std::string, double> EvalRowExtras(const EvalRow& row);

class Evaluator {
 public:
  // Reads the input eval.format names: eval.test_pairs (default <data.root>/test_pairs.jsonl), eval.isekai, or
  // the held-out classes of eval.index. Throws DataError naming the file (and line or class).
  Evaluator(cluster::ClusterContext& ctx, RunModel& model, const LoadedConfig& loaded);
  ~Evaluator();
  // Collective over the world. One row per shot setting of eval.shots (data.shot when empty), in that order.
  std::vector<EvalRow> Run();
  // What is evaluated, for titles and logs ("isekai FILE", "held-out classes of INDEX", "test pairs FILE").
  const std::string& input() const { return input_; }

 private:
  EvalRow RunShot(int shot);

  cluster::ClusterContext& ctx_;
  RunModel& model_;
  const TrainConfig& config_;
  std::string input_;
  std::vector<sampler::TestClass> classes_;      // formats test_pairs and index
  std::unique_ptr<sampler::IsekaiFile> isekai_;  // format isekai
  std::unique_ptr<sampler::ImageLoader> loader_;
  EvalEpisodeOptions episodes_;
  sampler::PromptConfig prompt_;
};

// A plain table: shots | accuracy | correct/n | named neither (| short support, when any row has some).
void PrintEvalTable(const std::vector<EvalRow>& rows, const std::string& title, std::ostream& out);

}  // namespace lcl::trainer
