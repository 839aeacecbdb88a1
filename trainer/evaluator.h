// 2-way LCL evaluation (the paper's protocol): for each held-out test image, a support set of `shot` images of its
// class and of its paired class, each side under its label; the model answers the query image by greedy
// generation, and the answer is right when it contains the positive label and not the negative one. DP ranks split
// the episodes; TP ranks generate together.
//
//   Evaluator eval(ctx, run_model, loaded);
//   std::vector<EvalRow> rows = eval.Run({0, 2, 4});   // one row per shot setting, identical on every rank
//   PrintEvalTable(rows, std::cout);
#pragma once

#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "cluster/cluster_context.h"
#include "sampler/image_io.h"
#include "sampler/pairs_file.h"
#include "trainer/run_setup.h"

namespace lcl::trainer {

struct EvalRow {
  int shots = 0;
  int64_t correct = 0;
  int64_t n = 0;
  int64_t unanswered = 0;  // answers that named neither label (or both)
  double accuracy() const { return n > 0 ? static_cast<double>(correct) / n : 0.0; }
  std::string example_answer;  // the first episode's generated text (for the log)
};

// The official rule: the answer contains the positive label and not the negative one (case-insensitive).
bool AnswerIsCorrect(const std::string& answer, const std::string& positive, const std::string& negative);

class Evaluator {
 public:
  // Reads eval.test_pairs (default <data.root>/test_pairs.jsonl). Throws DataError naming the file.
  Evaluator(cluster::ClusterContext& ctx, RunModel& model, const LoadedConfig& loaded);
  ~Evaluator();
  // Collective over the world. Rows in the order of `shots`.
  std::vector<EvalRow> Run(const std::vector<int>& shots);
  const std::string& test_pairs() const { return test_pairs_; }

 private:
  EvalRow RunShot(int shot);

  cluster::ClusterContext& ctx_;
  RunModel& model_;
  const TrainConfig& config_;
  std::string test_pairs_;
  std::vector<sampler::TestClass> classes_;
  std::unique_ptr<sampler::ImageLoader> loader_;
  std::vector<std::string> templates_;
};

// A plain table: shots | accuracy | correct/n.
void PrintEvalTable(const std::vector<EvalRow>& rows, const std::string& title, std::ostream& out);

}  // namespace lcl::trainer
