// `lcl data ...`: synthetic ImageNet trees, ImageNet indexing, rendered episodes for inspection, neighbour tables,
// and the tower-feature cache filled ahead of training.
#include <algorithm>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "cluster/errors.h"
#include "launch/cli.h"
#include "sampler/class_index.h"
#include "sampler/episode.h"
#include "sampler/instruct.h"
#include "sampler/mix.h"
#include "sampler/neighbors.h"
#include "sampler/pairs_file.h"
#include "sampler/prompt.h"
#include "sampler/sampler_state.h"
#include "sampler/synth.h"
#include "sampler/templates.h"
#include "sampler/tokenizer.h"
#include "trainer/class_features.h"
#include "trainer/precompute_features.h"
#include "model/model_config.h"
#include "checkpoint/safetensors.h"
#include "trainer/run_options.h"
#include "trainer/train_config.h"

namespace lcl::launch {
namespace {

// "WxH" -> (W, H); a clear error otherwise.
std::pair<int, int> ParseSize(const std::string& s) {
  size_t x = s.find('x');
  try {
    if (x != std::string::npos) return {std::stoi(s.substr(0, x)), std::stoi(s.substr(x + 1))};
  } catch (const std::exception&) {
  }
  throw ConfigError("--size " + s + ": expected WIDTHxHEIGHT, e.g. 500x375");
}

void RegisterSynth(CLI::App& data, Launch& launch) {
  auto* cmd = data.add_subcommand("synth", "write a small ImageNet-format JPEG tree with families of similar classes");
  struct Args {
    sampler::SynthOptions opt;
    std::string size = "128x128";
  };
  auto args = std::make_shared<Args>();
  cmd->add_option("--out", args->opt.out, "output directory (created)")->required();
  cmd->add_option("--classes", args->opt.classes, "number of classes")->capture_default_str();
  cmd->add_option("--images-per-class", args->opt.images_per_class, "JPEGs per class")->capture_default_str();
  cmd->add_option("--seed", args->opt.seed, "seed: the same seed writes the same bytes")->capture_default_str();
  cmd->add_option("--size", args->size, "image size WxH (ImageNet-like: 500x375)")->capture_default_str();
  cmd->add_option("--family-size", args->opt.family_size, "classes per family of similar classes")
      ->capture_default_str();
  cmd->add_option("--test-fraction", args->opt.test_fraction, "share of families held out as test classes")
      ->capture_default_str();
  cmd->callback([&launch, args] {
    launch.action = [args]() -> int {
      std::tie(args->opt.width, args->opt.height) = ParseSize(args->size);
      sampler::SynthResult r = sampler::Synthesize(args->opt);
      size_t test = 0;
      for (const auto& c : r.classes) test += c.test;
      std::cout << "wrote " << r.images << " images of " << r.classes.size() << " classes in " << r.families
                << " families (" << r.classes.size() - test << " train, " << test << " test classes) to "
                << args->opt.out << "\n  " << r.synset_mapping << "\n  " << r.train_pairs << "\n  " << r.test_pairs
                << "\n  " << r.split << "\n  " << r.instruct << "\n";
      return 0;
    };
  });
}

// A split file: {"train": [ids], "test": [ids]} with 1-based class ids, each class in exactly one list.
sampler::ClassSplit ReadClassSplit(const std::string& path, size_t num_classes) {
  std::ifstream in(path);
  if (!in) throw ConfigError("class split '" + path + "' cannot be read; give the class_split.json of the tree");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw DataError(path + ": not JSON (" + e.what() + ")");
  }
  sampler::ClassSplit split;
  std::vector<int> seen(num_classes + 1, 0);
  for (const char* side : {"train", "test"}) {
    if (!j.contains(side) || !j[side].is_array()) {
      throw DataError(path + ": needs a \"" + side + "\" list of class ids");
    }
    std::vector<int>& ids = std::string(side) == "train" ? split.train_ids : split.test_ids;
    for (const auto& v : j[side]) {
      // Integers, or digit strings as the official files write ids.
      const std::string text = v.is_number_integer() ? std::to_string(v.get<int64_t>())
                               : v.is_string()       ? v.get<std::string>()
                                                     : v.dump();
      if (text.empty() || text.size() > 9 || text.find_first_not_of("0123456789") != std::string::npos) {
        throw DataError(path + ": \"" + side + "\" holds " + text + ", not a class id (a positive integer)");
      }
      const int id = std::stoi(text);
      if (id < 1 || size_t(id) > num_classes) {
        throw DataError(path + ": class id " + std::to_string(id) + " in \"" + side + "\" is outside 1.." +
                        std::to_string(num_classes) + " (the root's synset mapping)");
      }
      if (seen[size_t(id)]++) throw DataError(path + ": class id " + std::to_string(id) + " is listed twice");
      ids.push_back(id);
    }
    std::sort(ids.begin(), ids.end());
  }
  return split;
}

void RegisterIndex(CLI::App& data, Launch& launch) {
  auto* cmd = data.add_subcommand("index", "index an ImageNet root: classes, image counts, train/test class split");
  struct Args {
    std::string root, out;
    sampler::IndexOptions opt;
    int test_classes = -1;  // -1: a tenth of the classes (the paper's 100 of 1000)
    uint64_t seed = 0;
    std::string split;  // a given split ({"train": [ids], "test": [ids]}, e.g. data synth's class_split.json)
  };
  auto args = std::make_shared<Args>();
  cmd->add_option("--root", args->root, "ImageNet root with train/<wnid>/ (and val/)")->required();
  cmd->add_option("--out", args->out, "write the index JSON here (default: print a summary only)");
  cmd->add_option("--synsets", args->opt.synset_path, "synset mapping (default: <root>/LOC_synset_mapping.txt)");
  cmd->add_option("--val-solution", args->opt.val_solution, "CSV labelling a flat val/ (LOC_val_solution.csv)");
  cmd->add_option("--test-classes", args->test_classes, "classes held out for testing (default: a tenth, 100 of 1000)");
  cmd->add_option("--seed", args->seed, "seed of the class split")->capture_default_str();
  cmd->add_option("--split", args->split,
                  "use this split instead of a seeded one: JSON with \"train\" and \"test\" class-id lists "
                  "(e.g. the class_split.json `lcl data synth` writes)");
  cmd->callback([&launch, args] {
    launch.action = [args]() -> int {
      sampler::ImageNetIndex index = sampler::IndexImageNetRoot(args->root, args->opt);
      const size_t test = args->test_classes < 0 ? index.classes.size() / 10 : size_t(args->test_classes);
      sampler::ClassSplit split = args->split.empty() ? sampler::SplitClasses(index.classes.size(), test, args->seed)
                                                      : ReadClassSplit(args->split, index.classes.size());
      if (!args->out.empty()) sampler::WriteIndexJson(index, split, args->out);
      std::cout << nlohmann::json({{"root", index.root},
                                   {"classes", index.classes.size()},
                                   {"train_images", index.num_train},
                                   {"val_images", index.num_val},
                                   {"train_classes", split.train_ids.size()},
                                   {"test_classes", split.test_ids.size()}})
                       .dump()
                << "\n";
      return 0;
    };
  });
}

nlohmann::json ImageJson(const sampler::ImageRef& ref, const std::string& label, bool positive) {
  nlohmann::json j = {{"path", ref.path}, {"label", label}, {"positive", positive}};
  if (!ref.tile.whole()) {  // a jigsaw piece
    j["tile"] = {{"cols", ref.tile.cols}, {"rows", ref.tile.rows}, {"col", ref.tile.col}, {"row", ref.tile.row}};
  }
  return j;
}

nlohmann::json EpisodeJson(const sampler::Episode& e, const sampler::PromptConfig& prompt,
                           const sampler::Tokenizer* tok) {
  nlohmann::json examples = nlohmann::json::array();
  for (const auto& t : e.examples) examples.push_back(ImageJson(t.image, t.label, t.positive));
  nlohmann::json j = {{"epoch", e.epoch},
                      {"index", e.index},
                      {"policy", e.policy},
                      {"shot", e.shot},
                      {"positive_label", e.positive_label},
                      {"negative_label", e.negative_label},
                      {"examples", examples},
                      {"query", ImageJson(e.query, e.query_label, e.query_positive)},
                      {"question", e.question},
                      {"text", sampler::RenderText(e, prompt)}};
  if (!e.conversation.empty()) {  // an LCL-Mix conversation: its turns, its image as the query
    nlohmann::json turns = nlohmann::json::array();
    for (const sampler::Turn& t : e.conversation) turns.push_back({{"user", t.user}, {"assistant", t.assistant}});
    j["conversation"] = turns;
  }
  if (tok != nullptr) {
    sampler::TokenizedPrompt p = sampler::TokenizeEpisode(e, *tok, prompt);
    size_t labelled = 0;
    for (int l : p.labels) labelled += l != sampler::kIgnoreIndex;
    j["tokens"] = {{"total", p.input_ids.size()},
                   {"text", p.text_tokens},
                   {"image", p.input_ids.size() - size_t(p.text_tokens)},
                   {"labelled", labelled},
                   {"shot_after_length_limit", p.shot}};
  }
  return j;
}

// `lcl data episodes --config`: the options a training config determines, for every option not given on the
// command line (so the rendered episodes are the ones `lcl train` or `lcl eval` builds from that config). The
// config is read by the same functions the trainer uses (trainer/run_options.h).
template <typename Args>
void FillEpisodeArgsFromConfig(const CLI::App& cmd, Args* a) {
  const trainer::LoadedConfig loaded = trainer::LoadTrainConfig(a->train_config, a->overrides);
  const trainer::TrainConfig& c = loaded.config;
  auto given = [&cmd](const char* flag) { return cmd.count(flag) > 0; };
  const trainer::DataPaths paths = trainer::DataPathsOf(c);
  const sampler::EpisodeConfig train = trainer::EpisodeOptionsOf(c);
  const trainer::EvalEpisodeOptions eval = trainer::EvalEpisodeOptionsOf(c);
  if (!given("--pairs") && !given("--test-pairs")) {
    if (a->eval) {
      a->test_pairs = paths.test_pairs;
    } else {
      a->pairs = paths.train_pairs;
    }
  }
  if (!given("--tokenizer")) a->tokenizer = paths.tokenizer;
  if (!given("--templates")) {
    a->templates.clear();  // the action reads only a --templates file; the config's are read here
    a->config.templates = train.templates;
  }
  if (!given("--policy")) a->policy = sampler::PolicyName(train.policy);
  if (!given("--shot")) {
    a->config.shot = a->eval ? *std::max_element(eval.shots.begin(), eval.shots.end()) : train.shot;
  }
  if (!given("--seed")) a->config.seed = a->eval ? eval.seed : train.seed;
  a->config.made_up_negative = train.made_up_negative;
  a->config.made_up_max_letters = train.made_up_max_letters;
  a->config.draw_with_replacement = train.draw_with_replacement;
  a->config.lowercase_names = train.lowercase_names;
  const int image_tokens = given("--image-tokens")
                               ? a->prompt.image_tokens
                               : lcl::model::ModelConfig::FromJsonFile(paths.model_config).vision.num_patches();
  const int max_length = a->prompt.max_length;
  a->prompt = trainer::PromptOptionsOf(c, image_tokens,
                                       a->eval ? trainer::EpisodeUse::kEvaluation : trainer::EpisodeUse::kTraining);
  if (given("--max-length")) a->prompt.max_length = max_length;
  if (!given("--prompt-layout")) a->layout = c.data().prompt_layout();  // the action parses it into a->prompt
  if (!given("--made-up-eval-labels")) a->made_up_eval_labels = eval.labels == sampler::EvalLabels::kMadeUpWords;
  if (!a->eval) {
    a->mix = trainer::MixFilesOf(c);
    a->mix_image_root = c.data().mix_image_root();
  }
}

void RegisterEpisodes(CLI::App& data, Launch& launch) {
  auto* cmd = data.add_subcommand("episodes", "print rendered episodes as JSON lines (text, images, token counts)");
  struct Args {
    std::string pairs, test_pairs, templates, tokenizer, policy = "2way_weight", layout = "vicuna";
    sampler::EpisodeConfig config;
    sampler::PromptConfig prompt;
    uint64_t epoch = 0, start = 0, count = 4;
    bool made_up_eval_labels = false;
    std::string train_config;  // --config: a training config fills every option not given
    std::vector<std::string> overrides;
    bool eval = false;
    std::vector<trainer::MixFileOption> mix;  // the config's LCL-Mix files: training episodes interleave them
    std::string mix_image_root;
  };
  auto args = std::make_shared<Args>();
  cmd->add_option("--config", args->train_config,
                  "training config (.pbtxt): its data, model and eval fields fill every option not given "
                  "(the episodes `lcl train` sees, or with --eval those `lcl eval` sees)");
  cmd->add_option("--set", args->overrides, "with --config: override a field, a.b=c (repeatable)");
  cmd->add_flag("--eval", args->eval,
                "with --config: evaluation episodes (eval.test_pairs, eval.labels, the largest eval shot)");
  cmd->add_option("--pairs", args->pairs, "train pairs jsonl (official train900_pairs.jsonl format)");
  cmd->add_option("--test-pairs", args->test_pairs, "evaluation pairs jsonl (test100 format): eval episodes");
  cmd->add_option("--templates", args->templates, "final-question templates JSON (e.g. ICL.json)");
  cmd->add_option("--tokenizer", args->tokenizer, "SentencePiece model: adds token counts");
  cmd->add_option("--policy", args->policy, "2way_weight | 2way_random_shot | 2way_ref | jigsaw")
      ->capture_default_str();
  cmd->add_option("--shot", args->config.shot, "example images per side")->capture_default_str();
  cmd->add_option("--seed", args->config.seed, "episode seed")->capture_default_str();
  cmd->add_option("--epoch", args->epoch, "epoch")->capture_default_str();
  cmd->add_option("--start", args->start, "first episode index")->capture_default_str();
  cmd->add_option("--count", args->count, "number of episodes")->capture_default_str();
  cmd->add_option("--image-tokens", args->prompt.image_tokens, "patch tokens per image")->capture_default_str();
  cmd->add_option("--max-length", args->prompt.max_length, "maximum tokens per episode")->capture_default_str();
  cmd->add_option("--prompt-layout", args->layout, "vicuna | official | compact (see data.prompt_layout)")
      ->capture_default_str();
  cmd->add_flag("--made-up-eval-labels", args->made_up_eval_labels, "eval episodes use made-up words as labels");
  cmd->callback([&launch, args, cmd] {
    launch.action = [args, cmd]() -> int {
      if (!args->train_config.empty()) {
        FillEpisodeArgsFromConfig(*cmd, args.get());
      } else if (args->eval || !args->overrides.empty()) {
        throw ConfigError("lcl data episodes: --eval and --set need --config");
      }
      if (args->pairs.empty() == args->test_pairs.empty()) {
        throw ConfigError(
            "lcl data episodes: give exactly one of --pairs (training) or --test-pairs "
            "(evaluation)");
      }
      args->config.policy = sampler::ParsePolicy(args->policy);
      args->prompt.layout = sampler::ParsePromptLayout(args->layout);
      if (!args->templates.empty()) args->config.templates = sampler::LoadTemplates(args->templates);
      std::unique_ptr<sampler::Tokenizer> tok;
      if (!args->tokenizer.empty())
        tok = std::make_unique<sampler::Tokenizer>(sampler::Tokenizer::Load(args->tokenizer));
      if (!args->pairs.empty()) {
        sampler::PairsTable table = sampler::PairsTable::Read(args->pairs);
        sampler::TrainEpisodes episodes(table, args->config);
        std::vector<sampler::InstructFile> files;
        files.reserve(args->mix.size());
        std::vector<sampler::MixSource> sources;
        for (const trainer::MixFileOption& f : args->mix) {
          files.push_back(sampler::InstructFile::Read(f.path, args->mix_image_root));
          sources.push_back({&files.back(), f.probability});
        }
        sampler::MixedEpisodes stream(episodes, std::move(sources), args->config.seed);  // no files: the episodes
        for (uint64_t k = 0; k < args->count; ++k) {
          sampler::EpisodeKey key = sampler::KeyAt({args->epoch, args->start}, k, episodes.EpisodesPerEpoch());
          std::cout << EpisodeJson(stream.Build(key.epoch, key.index), args->prompt, tok.get()).dump() << "\n";
        }
        return 0;
      }
      std::vector<sampler::TestClass> classes = sampler::ReadTestPairs(args->test_pairs);
      sampler::EvalEpisodes eval(
          classes, args->config.shot, args->config.seed,
          args->made_up_eval_labels ? sampler::EvalLabels::kMadeUpWords : sampler::EvalLabels::kClassNames,
          args->config.templates, args->config.made_up_max_letters, args->config.lowercase_names);
      for (uint64_t i = args->start; i < std::min<uint64_t>(eval.size(), args->start + args->count); ++i) {
        std::cout << EpisodeJson(eval.Build(i), args->prompt, tok.get()).dump() << "\n";
      }
      return 0;
    };
  });
}

// Keeps the feature rows of `ids` (1-based class ids = row + 1).
sampler::FeatureMatrix SelectRows(const sampler::FeatureMatrix& m, const std::vector<int>& ids) {
  sampler::FeatureMatrix out{int64_t(ids.size()), m.cols, {}};
  for (int id : ids) {
    if (id < 1 || id > m.rows) {
      throw DataError("class id " + std::to_string(id) + " has no feature row (features have " +
                      std::to_string(m.rows) + " rows, one per class in synset order)");
    }
    out.data.insert(out.data.end(), m.data.begin() + (id - 1) * m.cols, m.data.begin() + id * m.cols);
  }
  return out;
}

struct NeighborsArgs {
  std::string root, image_features, text_features, index, out, image_tensor = "image_features",
                                                               text_tensor = "text_features";
  // --model: image features from the model's frozen tower (optionally saved for reuse).
  std::string model, save_features;
  trainer::ClassFeatureOptions tower;
  std::vector<double> weights = {0.5, 0.8, 0.5};
  int neighbors = 36, samples = 36;
  uint64_t seed = 0;
};

// `lcl data neighbors`: index -> features -> similarity -> interval draws -> pairs file.
int RunNeighbors(const NeighborsArgs* args) {
  if (args->image_features.empty() == args->model.empty()) {
    throw ConfigError(
        "lcl data neighbors: give exactly one of --image-features (a safetensors file) or --model "
        "(a model directory whose vision tower computes them)");
  }
  sampler::ImageNetIndex index = sampler::IndexImageNetRoot(args->root, {});
  std::vector<int> ids;
  if (!args->index.empty()) {
    nlohmann::json doc = nlohmann::json::parse(std::ifstream(args->index), nullptr, false);
    if (doc.is_discarded() || !doc.contains("split")) {
      throw DataError(args->index + ": not an index JSON from `lcl data index` (no \"split\")");
    }
    ids = doc["split"]["train"].get<std::vector<int>>();
  } else {
    for (const auto& c : index.classes) ids.push_back(c.synset.id);
  }
  std::vector<sampler::ClassImages> classes;
  for (int id : ids) classes.push_back(index.classes.at(size_t(id - 1)));
  sampler::FeatureMatrix image;
  if (!args->model.empty()) {
    torch::Tensor f = trainer::ComputeClassImageFeatures(args->model, index.root, classes, args->tower);
    if (!args->save_features.empty()) {
      checkpoint::WriteSafetensors(args->save_features, {{args->image_tensor, f}});
    }
    image = trainer::ToFeatureMatrix(f);
  } else {
    image = SelectRows(trainer::ReadFeatureMatrix(args->image_features, args->image_tensor), ids);
  }
  sampler::FeatureMatrix text;
  if (!args->text_features.empty()) {
    text = SelectRows(trainer::ReadFeatureMatrix(args->text_features, args->text_tensor), ids);
  }
  sampler::SimilarityWeights w{args->weights[0], args->weights[1], args->weights[2]};
  auto sim = sampler::ClassSimilarity(image, args->text_features.empty() ? nullptr : &text, w);
  auto nbrs = sampler::DrawNeighbors(sim, args->neighbors, args->seed);
  sampler::MakePairsTable(classes, nbrs, args->samples, args->seed).Write(args->out);
  std::cout << "wrote " << classes.size() << " classes with " << std::min<size_t>(args->neighbors, ids.size() - 1)
            << " neighbours each to " << args->out
            << (args->model.empty() ? ""
                                    : " (image features from " + args->model + "'s vision tower, up to " +
                                          std::to_string(args->tower.images_per_class) + " images per class)")
            << (args->text_features.empty() ? " (image-image similarity only: no text features)" : "") << "\n";
  return 0;
}

void RegisterNeighbors(CLI::App& data, Launch& launch) {
  using Args = NeighborsArgs;
  auto* cmd =
      data.add_subcommand("neighbors",
                          "build a train pairs table from per-class image (and text) features, given or computed by "
                          "a model's vision tower");
  auto args = std::make_shared<Args>();
  cmd->add_option("--root", args->root, "ImageNet root (class order = synset mapping)")->required();
  cmd->add_option("--image-features", args->image_features,
                  "safetensors with [classes, dim] mean image features (or --model)");
  cmd->add_option("--model", args->model,
                  "model directory: compute the image features with its frozen vision tower "
                  "(patch mean of the projector's layer; mean of L2-normalised images per class)");
  cmd->add_option("--images-per-class", args->tower.images_per_class,
                  "with --model: images averaged per class (spread over its sorted files)")
      ->capture_default_str();
  cmd->add_option("--save-features", args->save_features,
                  "with --model: also write the [classes, dim] features here (safetensors, "
                  "tensor named by --image-tensor) for later --image-features runs");
  cmd->add_option("--text-features", args->text_features, "safetensors with [classes, dim] class text features");
  cmd->add_option("--image-tensor", args->image_tensor, "tensor name")->capture_default_str();
  cmd->add_option("--text-tensor", args->text_tensor, "tensor name")->capture_default_str();
  cmd->add_option("--index", args->index, "index JSON from `lcl data index`: use its train split only");
  cmd->add_option("--weights", args->weights, "tt it ii similarity weights")->expected(3)->capture_default_str();
  cmd->add_option("--neighbors", args->neighbors, "intervals = neighbours per class")->capture_default_str();
  cmd->add_option("--samples", args->samples, "sample images listed per class")->capture_default_str();
  cmd->add_option("--seed", args->seed, "seed of the draws")->capture_default_str();
  cmd->add_option("--out", args->out, "output pairs jsonl")->required();
  cmd->callback([&launch, args] { launch.action = [args]() -> int { return RunNeighbors(args.get()); }; });
}

void RegisterFeatures(CLI::App& data, Launch& launch) {
  auto* cmd = data.add_subcommand("features",
                                  "fill the tower-feature cache (data.feature_cache) for a training config's images, "
                                  "spread over the ranks (run under mpirun/srun like `lcl train`)");
  struct Args {
    std::string config;
    std::vector<std::string> overrides;
    int batch = 16;
  };
  auto args = std::make_shared<Args>();
  cmd->add_option("--config", args->config, "the training config (its model, data and precision)")->required();
  cmd->add_option("--set", args->overrides, "override a config field: path.to.field=value (repeatable)");
  cmd->add_option("--batch", args->batch, "images per tower call")->capture_default_str();
  cmd->callback([&launch, args] {
    launch.action = [&launch, args]() -> int {
      const trainer::LoadedConfig loaded = trainer::LoadTrainConfig(args->config, args->overrides);
      cluster::MpiSession& mpi = launch.Mpi();
      const trainer::PrecomputeResult r = trainer::PrecomputeFeatures(mpi, loaded, args->batch);
      if (mpi.rank() == 0) {
        const int64_t done = r.computed + r.cached;
        std::cout << "feature cache " << r.dir << " (tower " << r.fingerprint << "): " << r.images
                  << " images of the train pairs table, " << r.computed << " computed, " << r.cached
                  << " already cached, " << r.corrupt << " corrupt entries replaced, " << r.bad_images
                  << " unreadable images replaced from their class; " << r.entry_bytes << " bytes per image on disk; "
                  << mpi.size() << " ranks, " << r.seconds << " s (" << (r.seconds > 0 ? double(done) / r.seconds : 0.0)
                  << " images/s)\n";
      }
      return 0;  // a write that fails is a DataError here (the cache is required), so nothing is left half-filled
    };
  });
}

}  // namespace

void RegisterDataCommands(CLI::App& data, Launch& launch) {
  RegisterSynth(data, launch);
  RegisterIndex(data, launch);
  RegisterEpisodes(data, launch);
  RegisterNeighbors(data, launch);
  RegisterFeatures(data, launch);
}

}  // namespace lcl::launch
