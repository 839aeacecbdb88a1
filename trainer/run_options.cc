// Config -> options of each part; see run_options.h.
#include "trainer/run_options.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "optim/lr_schedule.h"
#include "sampler/templates.h"

namespace lcl::trainer {
namespace {

std::vector<std::string> TemplatesOf(const TrainConfig& config) {
  if (config.data().templates().empty()) return {};  // the built-in templates
  return sampler::LoadTemplates(config.data().templates());
}

}  // namespace

DataPaths DataPathsOf(const TrainConfig& config) {
  DataPaths p;
  const std::string& root = config.data().root();
  const std::string& model = config.model().path();
  p.train_pairs = config.data().train_pairs().empty() ? root + "/train_pairs.jsonl" : config.data().train_pairs();
  p.test_pairs = config.eval().test_pairs().empty() ? root + "/test_pairs.jsonl" : config.eval().test_pairs();
  p.tokenizer = config.model().tokenizer().empty() ? model + "/tokenizer.model" : config.model().tokenizer();
  p.model_config = model + "/config.json";
  return p;
}

sampler::EpisodeConfig EpisodeOptionsOf(const TrainConfig& config) {
  sampler::EpisodeConfig e;
  e.policy = sampler::ParsePolicy(config.data().policy());
  e.shot = config.data().shot();
  e.seed = config.seed();
  e.made_up_negative = config.data().made_up_negative();
  e.made_up_max_letters = config.data().made_up_max_letters();
  e.templates = TemplatesOf(config);
  return e;
}

EvalEpisodeOptions EvalEpisodeOptionsOf(const TrainConfig& config) {
  EvalEpisodeOptions e;
  e.shots.assign(config.eval().shots().begin(), config.eval().shots().end());
  if (e.shots.empty()) e.shots.push_back(config.data().shot());
  e.seed = config.eval().seed();
  e.labels =
      config.eval().labels() == "class_names" ? sampler::EvalLabels::kClassNames : sampler::EvalLabels::kMadeUpWords;
  e.templates = TemplatesOf(config);
  e.made_up_max_letters = config.data().made_up_max_letters();
  return e;
}

sampler::PromptConfig PromptOptionsOf(const TrainConfig& config, int image_tokens, EpisodeUse use) {
  sampler::PromptConfig prompt;
  prompt.image_tokens = image_tokens;
  prompt.max_length = config.data().max_length();
  prompt.layout = sampler::ParsePromptLayout(config.data().prompt_layout());
  prompt.image_markers = config.data().image_markers();
  prompt.support_names = config.data().support_names() && use == EpisodeUse::kTraining;
  return prompt;
}

lcl::optim::OptimizerOptions OptimizerOptionsOf(const TrainConfig& config) {
  lcl::optim::OptimizerOptions o;
  o.beta1 = config.optimizer().beta1();
  o.beta2 = config.optimizer().beta2();
  o.eps = config.optimizer().eps();
  o.weight_decay = config.optimizer().weight_decay();
  o.clip_norm = config.optimizer().clip_norm();
  o.zero1 = config.parallel().zero1();
  o.bucket_bytes = static_cast<int64_t>(config.parallel().bucket_mb() * (1 << 20));
  o.overlap = config.parallel().overlap_grad_sync();
  return o;
}

double LearningRateAt(const TrainConfig& config, int64_t step, int64_t total_steps) {
  const OptimizerSection& o = config.optimizer();
  return lcl::optim::LrAt(step, total_steps, o.lr(), o.min_lr(), o.warmup_ratio());
}

checkpoint::CheckpointOptions CheckpointOptionsOf(const TrainConfig& config, const cluster::GridShape& grid) {
  checkpoint::CheckpointOptions co;
  co.run_dir = config.run_dir();
  co.keep_last = config.checkpoint().keep_last();
  co.keep_every = config.checkpoint().keep_every();
  co.async = config.checkpoint().async();
  co.fail_on_error = config.checkpoint().fail_on_error();
  co.grid.set_world(grid.world);
  co.grid.set_tp(grid.tp);
  co.grid.set_dp(grid.dp);
  // A fault test widens each commit-protocol window so that a kill -9 can land inside it.
  co.phase_delay = std::chrono::milliseconds(config.checkpoint().test_phase_delay_ms());
  return co;
}

cluster::ClusterOptions ClusterOptionsOf(const TrainConfig& config) {
  cluster::ClusterOptions o;
  o.tp = config.parallel().tp();
  o.collective_timeout =
      std::chrono::milliseconds(static_cast<int64_t>(config.parallel().collective_timeout_s() * 1e3));
  o.use_cuda = config.parallel().device() != "cpu";
  return o;
}

int RankThreads(const TrainConfig& config, const cluster::MpiSession& mpi) {
  if (config.parallel().threads() > 0) return config.parallel().threads();
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, cores / std::max(1, mpi.local_size()));
}

}  // namespace lcl::trainer
