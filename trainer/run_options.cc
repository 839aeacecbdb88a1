// Config -> options of each part; see run_options.h.
#include "trainer/run_options.h"

#include <algorithm>
#include <chrono>
#include <sstream>
#include <thread>

#include "cluster/errors.h"
#include "optim/lr_schedule.h"
#include "sampler/templates.h"

namespace lcl::trainer {
namespace {

std::vector<std::string> TemplatesOf(const TrainConfig& config) {
  if (config.data().templates().empty()) return {};  // the built-in templates
  return sampler::LoadTemplates(config.data().templates());
}

// data.too_long: "drop_shots" reduces an over-long episode, "reject" stops the run.
bool ReduceShotsOf(const TrainConfig& config) {
  const std::string& v = config.data().too_long();
  if (v == "drop_shots") return true;
  if (v == "reject") return false;
  throw ConfigError("data.too_long = '" + v + "' is not one of drop_shots | reject");
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
  e.draw_with_replacement = config.data().draw_with_replacement();
  e.lowercase_names = config.data().lowercase_names();
  e.templates = TemplatesOf(config);
  return e;
}

void CheckTrainingTemplates(const TrainConfig& config) {
  if (config.data().templates().empty() && config.data().recipe() == "official") {
    throw ConfigError(
        "data.recipe is official but data.templates is empty: the official recipe asks its training question from "
        "the official ICL.json, which lcl does not ship; set data.templates to it (e.g. ../shared/data/lcl/ICL.json)");
  }
}

EvalEpisodeOptions EvalEpisodeOptionsOf(const TrainConfig& config) {
  EvalEpisodeOptions e;
  e.shots.assign(config.eval().shots().begin(), config.eval().shots().end());
  if (e.shots.empty()) e.shots.push_back(config.data().shot());
  e.seed = config.eval().seed();
  e.labels =
      config.eval().labels() == "class_names" ? sampler::EvalLabels::kClassNames : sampler::EvalLabels::kMadeUpWords;
  // The official evaluation asks one fixed question; lcl's draws from the training templates.
  e.templates = config.data().eval_question().empty() ? TemplatesOf(config)
                                                      : std::vector<std::string>{config.data().eval_question()};
  e.made_up_max_letters = config.data().made_up_max_letters();
  e.lowercase_names = config.data().lowercase_names();
  e.official = config.eval().protocol() == "official";
  if (e.official) e.labels = sampler::EvalLabels::kClassNames;  // ValidateConfig refuses an explicit other choice
  return e;
}

sampler::ImageSpec ImageSpecOf(const TrainConfig& config, int image_size) {
  sampler::ImageSpec spec;
  spec.size = image_size;
  spec.pad = sampler::ParsePadColor(config.data().pad_color());
  return spec;
}

FeatureCacheOptions FeatureCacheOptionsOf(const TrainConfig& config, bool* enabled) {
  FeatureCacheOptions o;
  o.dir = config.data().feature_cache();
  o.memory_bytes = int64_t(config.data().feature_cache_memory_mb()) << 20;
  o.required = config.data().feature_cache_required();
  *enabled = !o.dir.empty() || (config.data().has_feature_cache_memory_mb() && o.memory_bytes > 0);
  return o;
}

std::vector<MixFileOption> MixFilesOf(const TrainConfig& config) {
  auto split = [](const std::string& text) {
    std::vector<std::string> out;
    std::stringstream in(text);
    std::string item;
    while (std::getline(in, item, ',')) {
      const size_t b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
      out.push_back(b == std::string::npos ? std::string() : item.substr(b, e - b + 1));
    }
    if (!text.empty() && text.back() == ',') out.emplace_back();  // getline drops a trailing empty entry
    return out;
  };
  const std::vector<std::string> files = split(config.data().mix_files());
  const std::vector<std::string> weights = split(config.data().mix_weights());
  if (files.size() != weights.size()) {
    throw ConfigError("data.mix_files names " + std::to_string(files.size()) + " file(s) but data.mix_weights gives " +
                      std::to_string(weights.size()) + " probabilities; give one per file (e.g. \"0.5\")");
  }
  std::vector<MixFileOption> out;
  double sum = 0;
  for (size_t i = 0; i < files.size(); ++i) {
    if (files[i].empty()) throw ConfigError("data.mix_files = '" + config.data().mix_files() + "' has an empty entry");
    MixFileOption o;
    o.path = files[i];
    size_t used = 0;
    try {
      o.probability = std::stod(weights[i], &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != weights[i].size()) {
      throw ConfigError("data.mix_weights entry '" + weights[i] + "' is not a number; give probabilities such as 0.5");
    }
    if (!(o.probability >= 0 && o.probability <= 1)) {
      throw ConfigError("data.mix_weights entry " + weights[i] + " (for " + o.path + ") is outside [0, 1]");
    }
    sum += o.probability;
    out.push_back(o);
  }
  if (sum > 1 + 1e-9) {
    throw ConfigError("data.mix_weights = '" + config.data().mix_weights() + "' sums to " + std::to_string(sum) +
                      ", over 1; the LCL episodes take 1 - the sum");
  }
  return out;
}

sampler::PromptConfig PromptOptionsOf(const TrainConfig& config, int image_tokens, EpisodeUse use) {
  sampler::PromptConfig prompt;
  prompt.image_tokens = image_tokens;
  prompt.max_length = config.data().max_length();
  prompt.reduce_shots = ReduceShotsOf(config);
  prompt.min_shot = config.data().min_shot();
  prompt.layout = sampler::ParsePromptLayout(config.data().prompt_layout());
  prompt.loss_on = sampler::ParseLossOn(config.data().loss_on());
  prompt.system = config.data().system();
  prompt.image_markers = config.data().image_markers();
  prompt.support_names = config.data().support_names() && use == EpisodeUse::kTraining;
  prompt.conversation_system = config.data().mix_system();
  return prompt;
}

lcl::optim::OptimizerOptions OptimizerOptionsOf(const TrainConfig& config, cluster::Tracer* tracer) {
  lcl::optim::OptimizerOptions o;
  o.tracer = tracer;
  o.beta1 = config.optimizer().beta1();
  o.beta2 = config.optimizer().beta2();
  o.eps = config.optimizer().eps();
  o.weight_decay = config.optimizer().weight_decay();
  o.clip_norm = config.optimizer().clip_norm();
  o.zero1 = config.parallel().zero1();
  o.bucket_bytes = static_cast<int64_t>(config.parallel().bucket_mb() * (1 << 20));
  o.overlap = config.parallel().overlap_grad_sync();
  o.fused = config.optimizer().fused();
  o.poll_in_backward = config.parallel().poll_in_backward();
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
  o.wait = cluster::ParseWaitMode(config.parallel().wait(), "parallel.wait");
  return o;
}

int RankThreads(const TrainConfig& config, const cluster::MpiSession& mpi) {
  if (config.parallel().threads() > 0) return config.parallel().threads();
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, cores / std::max(1, mpi.local_size()));
}

}  // namespace lcl::trainer
