// `lcl model ...`: create a random model in Hugging Face layout (`init`), export a model as HF safetensors with
// its TP shards merged (`export-hf`, LLaVA v1 or llava-hf layout), run a model on given inputs and write its logits,
// tower features and greedy tokens (`forward`: what the Hugging Face parity tests compare), and turn PyTorch .bin
// checkpoints into safetensors (`convert-bin`, with the venv's torch).
//
//   lcl model init --preset tiny --out runs/tiny-model
//   mpirun -np 2 lcl model export-hf --model runs/tiny-model --tp 2 --out runs/exported --dtype bf16
//   mpirun -np 2 lcl model forward --model hf-llava --tp 2 --inputs in.safetensors --out out.safetensors --generate 8
//   lcl model convert-bin --in vicuna-bin --out vicuna
#include <filesystem>
#include <fstream>
#include <iostream>

#include "cluster/errors.h"
#include "cluster/mpi_communicator.h"
#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/safetensors.h"
#include "cluster/process_grid.h"
#include "launch/cli.h"
#include "sampler/tokenizer.h"
#include "model/generate.h"
#include "model/hf_io.h"
#include "model/multimodal_model.h"

namespace lcl::launch {
namespace {

struct InitArgs {
  std::string preset = "tiny";
  std::string out;
  std::string class_names;  // optional: one class name per line, added to the tokenizer corpus
  uint64_t seed = 1234;
  std::string dtype = "f32";
  int patch_size = 0;                  // 0: the preset's
  std::vector<std::string> overrides;  // --set KEY=VALUE: config.json keys, vision_config.KEY for the tower
  std::string tokenizer = "auto";      // auto | train | none
};

struct ExportArgs {
  std::string model;
  std::string checkpoint;  // a step directory, or a run directory (its newest complete step)
  std::string vision;
  std::string out;
  int tp = 1;
  std::string dtype = "f32";
  double max_shard_gb = 5.0;
  std::string layout = "llava-v1";
};

struct ForwardArgs {
  std::string model;
  std::string vision;
  std::string inputs;
  std::string out;
  int tp = 1;
  int generate = 0;
  int64_t eos = -1;
  bool text_only = false;
};

struct ConvertArgs {
  std::string in;
  std::string out;
  std::string python;
};

torch::ScalarType ParseDtype(const std::string& dtype) {
  if (dtype == "f32") return torch::kFloat32;
  if (dtype == "bf16") return torch::kBFloat16;
  if (dtype == "f16") return torch::kFloat16;
  throw ConfigError("--dtype " + dtype + " is not one of f32, bf16, f16");
}

std::vector<std::string> ReadLines(const std::string& path) {
  std::vector<std::string> lines;
  if (path.empty()) return lines;
  std::ifstream in(path);
  if (!in) throw ConfigError("cannot read --class-names file '" + path + "'");
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

// Trains tokenizer.model next to the weights and takes the image-special ids from it (the SentencePiece vocabulary
// can come out smaller than asked for on a small corpus, which moves the specials).
// A vocabulary given with --set vocab_size is kept (rows past the tokenizer's ids are never looked up).
void WriteTokenizer(const InitArgs& args, bool keep_vocab, lcl::model::ModelConfig* config) {
  const std::string path = args.out + "/tokenizer.model";
  const int pieces = config->text.vocab_size - 3;  // room for im_start, im_end, im_patch
  sampler::TrainTokenizer(sampler::DefaultTokenizerCorpus(ReadLines(args.class_names)), pieces, path);
  sampler::Tokenizer tok = sampler::Tokenizer::Load(path);
  if (tok.vocab_size() > config->text.vocab_size) {
    throw ConfigError("the tokenizer has " + std::to_string(tok.vocab_size()) + " ids but the model vocabulary " +
                      std::to_string(config->text.vocab_size));
  }
  // A small corpus yields fewer pieces than asked for: shrink the vocabulary to fit the tokenizer, rounded up to a
  // multiple of 64 so that any tp up to 64 divides it.
  if (!keep_vocab) config->text.vocab_size = (tok.vocab_size() + 63) / 64 * 64;
  config->im_start_token_id = tok.im_start_id();
  config->im_end_token_id = tok.im_end_id();
  config->image_token_id = tok.im_patch_id();
}

int RunInit(const InitArgs& args) {
  bool vocab_set = false;
  lcl::model::ModelConfig config =
      lcl::model::ModelConfig::FromPreset(args.preset).WithOverrides(args.overrides, "--set", &vocab_set);
  if (args.patch_size > 0) config.vision.patch_size = args.patch_size;
  config.Validate(/*tp=*/1);  // e.g. image_size must be a multiple of the patch size
  if (args.tokenizer != "auto" && args.tokenizer != "train" && args.tokenizer != "none") {
    throw ConfigError("--tokenizer " + args.tokenizer + " is not one of auto, train, none");
  }
  const bool train_tokenizer = args.tokenizer == "train" || (args.tokenizer == "auto" && args.preset != "llava-7b");
  std::filesystem::create_directories(args.out);
  if (train_tokenizer) {
    try {
      WriteTokenizer(args, vocab_set, &config);
    } catch (const NotBuiltError& e) {
      // The weights are still useful; the preset's image ids match a tokenizer of vocab_size - 3 pieces.
      std::cerr << "warning: no tokenizer.model written (" << e.what() << ")\n";
    }
  } else {
    std::cout << args.preset << ": no tokenizer trained; copy Vicuna's tokenizer.model into " << args.out
              << " (or pass --tokenizer train)\n";
  }
  torch::manual_seed(args.seed);
  lcl::model::MultimodalModel model(config, lcl::model::TpGroup{});
  lcl::model::HfExportOptions options;
  options.dtype = ParseDtype(args.dtype);
  lcl::model::ExportHfCheckpoint(*model, args.out, /*write=*/true, options);
  int64_t params = 0;
  for (const auto& p : model->parameters()) params += p.numel();
  std::cout << "wrote " << args.preset << " model (" << params << " parameters) to " << args.out << "\n";
  return 0;
}

// A training checkpoint -> HF layout on one process: every model tensor is read whole from the shards (whatever
// TP/DP layout saved them); the optimizer state is left behind. The tokenizer is copied from --model when given.
int RunExportCheckpoint(const ExportArgs& args) {
  std::string dir = args.checkpoint;
  if (!std::filesystem::exists(dir + "/manifest.pb")) dir = checkpoint::ResolveResume(args.checkpoint, "auto");
  if (dir.empty()) {
    throw CheckpointError("--checkpoint " + args.checkpoint +
                          ": neither a committed step directory (with manifest.pb) nor a run directory with one");
  }
  checkpoint::CheckpointReader reader(dir);
  // Sizes and checksums first, as `ckpt verify`, `eval` and `--resume` do: a flipped bit must not ship.
  const std::vector<std::string> problems = reader.VerifyFiles();
  if (!problems.empty()) {
    std::string all;
    for (const auto& p : problems) all += "\n  " + p;
    throw CheckpointError(dir + " failed verification, not exported:" + all +
                          "\nexport another step (`lcl ckpt list RUN_DIR`) or restore the files");
  }
  const auto& meta = reader.manifest().metadata();
  auto it = meta.find("model_config_json");
  if (it == meta.end())
    throw CheckpointError(dir + ": the manifest has no model_config_json; not a `lcl train` checkpoint");
  lcl::model::ModelConfig config =
      lcl::model::ModelConfig::FromJson(nlohmann::json::parse(it->second), dir + "/manifest.pb model_config_json");
  lcl::model::MultimodalModel model(config, lcl::model::TpGroup{});
  {
    torch::NoGradGuard no_grad;
    for (auto& item : model->named_parameters()) {
      const std::string name = lcl::model::HfTensorName(item.key());
      torch::Tensor p = item.value().detach();
      torch::Tensor full = reader.ReadFull(name);  // throws naming the tensor when it is missing
      if (full.sizes() != p.sizes()) {
        throw CheckpointError(dir + ": tensor '" + name + "' has shape " + checkpoint::ShapeString(full.sizes()) +
                              " but the model config gives " + checkpoint::ShapeString(p.sizes()));
      }
      p.copy_(full);  // converts a bf16 checkpoint to the model's fp32
    }
  }
  lcl::model::HfExportOptions options;
  options.dtype = ParseDtype(args.dtype);
  options.max_shard_bytes = static_cast<int64_t>(args.max_shard_gb * (1LL << 30));
  options.layout = lcl::model::ParseHfLayout(args.layout);
  lcl::model::ExportHfCheckpoint(*model, args.out, /*write=*/true, options);
  if (!args.model.empty() && std::filesystem::exists(args.model + "/tokenizer.model")) {
    std::filesystem::copy_file(args.model + "/tokenizer.model", args.out + "/tokenizer.model",
                               std::filesystem::copy_options::overwrite_existing);
  }
  std::cout << "exported " << dir << " (step " << reader.manifest().step() << ") to " << args.out << "\n";
  return 0;
}

// Every rank loads its TP slice; the TP group of DP rank 0 gathers and global rank 0 writes.
int RunExport(const ExportArgs& args, Launch& launch) {
  if (!args.checkpoint.empty()) return RunExportCheckpoint(args);
  if (args.model.empty()) throw ConfigError("lcl model export-hf: give --model DIR or --checkpoint DIR");
  cluster::MpiSession& mpi = launch.Mpi();
  cluster::ProcessGrid grid(MPI_COMM_WORLD, args.tp);
  cluster::MpiCommunicator tp_comm(grid.tp_comm(), "tp");
  lcl::model::ModelConfig config = lcl::model::ModelConfig::FromHfDirectory(args.model, args.vision);
  lcl::model::MultimodalModel model(config, lcl::model::TpGroup{&tp_comm});
  lcl::model::LoadHfCheckpoint(*model, args.model, {args.vision, false});
  lcl::model::HfExportOptions options;
  options.dtype = ParseDtype(args.dtype);
  options.max_shard_bytes = static_cast<int64_t>(args.max_shard_gb * (1LL << 30));
  options.layout = lcl::model::ParseHfLayout(args.layout);
  if (grid.dp_rank() == 0) lcl::model::ExportHfCheckpoint(*model, args.out, /*write=*/mpi.rank() == 0, options);
  if (mpi.rank() == 0) std::cout << "exported " << args.model << " to " << args.out << "\n";
  return 0;
}

// This rank's [..., V/tp] slices -> the whole [..., V] on every rank of the TP group.
torch::Tensor GatherVocab(const torch::Tensor& local, cluster::MpiCommunicator& tp_comm) {
  if (tp_comm.size() == 1) return local;
  torch::Tensor part = local.contiguous();
  std::vector<int64_t> shape = {tp_comm.size()};
  for (int64_t d : part.sizes()) shape.push_back(d);
  torch::Tensor gathered = torch::empty(shape, part.options());
  tp_comm.AllGather(part, gathered);
  return torch::cat(gathered.unbind(0), -1);
}

torch::Tensor ReadInput(const checkpoint::SafetensorsFile& file, const std::string& name, bool required,
                        torch::ScalarType dtype) {
  if (!file.Has(name)) {
    if (required) throw DataError(file.path() + ": no tensor '" + name + "'; give input_ids [B, T] (I64)");
    return {};
  }
  torch::Tensor t = file.Read(name);
  if (dtype == torch::kInt64 && t.is_floating_point()) {
    throw DataError(file.path() + ": tensor '" + name + "' is " + file.Info(name).dtype + "; token ids must be I64");
  }
  return t.to(dtype);
}

// A model on given inputs, every rank its TP slice; rank 0 writes the logits (vocabulary gathered), the tower's
// selected features (when pixel_values are given) and, with --generate, the greedy tokens.
int RunForward(const ForwardArgs& args, Launch& launch) {
  cluster::MpiSession& mpi = launch.Mpi();
  cluster::ProcessGrid grid(MPI_COMM_WORLD, args.tp);
  cluster::MpiCommunicator tp_comm(grid.tp_comm(), "tp");
  lcl::model::ModelConfig config = lcl::model::ModelConfig::FromHfDirectory(args.model, args.vision);
  if (args.text_only) {
    // A plain LlamaForCausalLM: no tower runs (no images), so a minimal one stands in for the default ViT-L/14
    // that its config.json implies and that would otherwise be built and initialised for nothing.
    config.vision = lcl::model::ClipVisionConfig{8, 8, 1, 1, 8, 8, 3, 1e-5};
    config.vision_feature_layer = -1;
  }
  lcl::model::MultimodalModel model(config, lcl::model::TpGroup{&tp_comm});
  lcl::model::HfLoadOptions load;
  load.vision_checkpoint = args.vision;
  load.text_only = args.text_only;
  lcl::model::LoadHfCheckpoint(*model, args.model, load);
  model->eval();

  const checkpoint::SafetensorsFile inputs(args.inputs);
  lcl::model::MultimodalBatch batch;
  batch.input_ids = ReadInput(inputs, "input_ids", true, torch::kInt64);
  batch.attention_mask = ReadInput(inputs, "attention_mask", false, torch::kInt64);
  batch.images = ReadInput(inputs, "pixel_values", false, torch::kFloat32);
  if (batch.input_ids.dim() != 2) {
    throw DataError(args.inputs + ": input_ids has shape " + checkpoint::ShapeString(batch.input_ids.sizes()) +
                    "; expected [B, T]");
  }
  if (args.text_only && batch.images.defined()) {
    throw ConfigError("--text-only with pixel_values in " + args.inputs + ": drop one of them");
  }
  checkpoint::NamedTensors out;
  {
    torch::NoGradGuard no_grad;
    out.emplace_back("logits", GatherVocab(model->forward(batch).logits, tp_comm).contiguous());
    if (batch.images.defined()) out.emplace_back("vision_features", model->vision_tower(batch.images).contiguous());
  }
  if (args.generate > 0) {
    lcl::model::GenerateOptions g;
    g.max_new_tokens = args.generate;
    g.eos_token_id = args.eos;
    const std::vector<std::vector<int64_t>> rows = lcl::model::GreedyGenerate(*model, batch, g);
    torch::Tensor tokens = torch::full({static_cast<int64_t>(rows.size()), args.generate}, -1, torch::kInt64);
    for (size_t b = 0; b < rows.size(); ++b) {
      for (size_t i = 0; i < rows[b].size(); ++i) tokens[b][i] = rows[b][i];
    }
    out.emplace_back("generated", tokens);
  }
  if (mpi.rank() == 0) {
    checkpoint::WriteSafetensors(args.out, out);
    std::cout << "wrote";
    for (const auto& [name, t] : out) std::cout << " " << name << " " << checkpoint::ShapeString(t.sizes());
    std::cout << " to " << args.out << "\n";
  }
  return 0;
}

// PyTorch pickles (pytorch_model.bin, or shards with pytorch_model.bin.index.json) -> safetensors, by
// launch/convert_bin.py with the venv's torch: lcl itself never unpickles.
int RunConvertBin(const ConvertArgs& args) {
  if (!std::filesystem::is_directory(args.in)) {
    throw ConfigError("--in " + args.in + " is not a directory; give a model directory with pytorch_model*.bin");
  }
  const int rc = RunSourceScript(args.python, "convert_bin.py", {args.in, args.out}, "torch and safetensors");
  if (rc != 0)
    throw CheckpointError("converting " + args.in + " failed (launch/convert_bin.py exit " + std::to_string(rc) +
                          "); its message is above");
  return 0;
}

}  // namespace

void RegisterModelCommands(CLI::App& model, Launch& launch) {
  auto init_args = std::make_shared<InitArgs>();
  auto* init = model.add_subcommand("init",
                                    "write a random-initialised model in Hugging Face layout "
                                    "(config.json, model.safetensors, tokenizer.model)");
  init->add_option("--preset", init_args->preset, "tiny | small | llava-7b")->capture_default_str();
  init->add_option("--out", init_args->out, "output directory")->required();
  init->add_option("--seed", init_args->seed, "random seed")->capture_default_str();
  init->add_option("--dtype", init_args->dtype, "f32 | bf16 | f16 (stored dtype)")->capture_default_str();
  init->add_option("--patch-size", init_args->patch_size,
                   "vision tower patch size (default: the preset's; image tokens = (image_size / patch)^2)");
  init->add_option("--class-names", init_args->class_names, "file with one class name per line (tokenizer corpus)");
  init->add_option("--set", init_args->overrides,
                   "KEY=VALUE on the preset's config.json, repeatable: num_hidden_layers=2, "
                   "vision_config.image_size=224, ...");
  init->add_option("--tokenizer", init_args->tokenizer, "auto (train one except for llava-7b) | train | none")
      ->capture_default_str();
  init->callback([&launch, init_args] { launch.action = [init_args] { return RunInit(*init_args); }; });

  auto export_args = std::make_shared<ExportArgs>();
  auto* exp = model.add_subcommand("export-hf",
                                   "load a model on tp ranks and export it as HF safetensors with the "
                                   "TP shards merged (run under mpirun with world = dp * tp)");
  exp->add_option("--model", export_args->model,
                  "HF-layout model directory to load (with --checkpoint: where to copy tokenizer.model from)");
  exp->add_option("--checkpoint", export_args->checkpoint,
                  "a training checkpoint (step directory, or a run directory: its newest) to export instead");
  exp->add_option("--vision", export_args->vision, "separate CLIP vision checkpoint (vision_model.*), if any");
  exp->add_option("--out", export_args->out, "output directory")->required();
  exp->add_option("--tp", export_args->tp, "tensor-parallel size")->capture_default_str();
  exp->add_option("--dtype", export_args->dtype, "f32 | bf16 | f16")->capture_default_str();
  exp->add_option("--max-shard-gb", export_args->max_shard_gb, "shard above this size, with an index")
      ->capture_default_str();
  exp->add_option("--layout", export_args->layout,
                  "llava-v1 (LLaVA's names, model.mm_projector) | llava-hf (LlavaForConditionalGeneration)")
      ->capture_default_str();
  exp->callback(
      [&launch, export_args] { launch.action = [&launch, export_args] { return RunExport(*export_args, launch); }; });

  auto fwd_args = std::make_shared<ForwardArgs>();
  auto* fwd = model.add_subcommand("forward",
                                   "run a model on inputs from a safetensors file (input_ids, attention_mask, "
                                   "pixel_values) and write logits, vision_features and generated tokens "
                                   "(under mpirun with world = tp)");
  fwd->add_option("--model", fwd_args->model, "HF-layout model directory (LLaVA v1, llava-hf or LlamaForCausalLM)")
      ->required();
  fwd->add_option("--vision", fwd_args->vision, "separate CLIP vision checkpoint (vision_model.*), if any");
  fwd->add_option("--inputs", fwd_args->inputs,
                  "safetensors file with input_ids [B, T] (I64), optional "
                  "attention_mask [B, T] and pixel_values [N, 3, H, W]")
      ->required();
  fwd->add_option("--out", fwd_args->out, "output safetensors file")->required();
  fwd->add_option("--tp", fwd_args->tp, "tensor-parallel size (= world size)")->capture_default_str();
  fwd->add_option("--generate", fwd_args->generate, "greedy tokens to generate per row (0: none)")
      ->capture_default_str();
  fwd->add_option("--eos", fwd_args->eos, "token id that ends a generated row (-1: none)")->capture_default_str();
  fwd->add_flag("--text-only", fwd_args->text_only, "a plain LlamaForCausalLM: load the decoder only");
  fwd->callback([&launch, fwd_args] { launch.action = [&launch, fwd_args] { return RunForward(*fwd_args, launch); }; });

  auto conv_args = std::make_shared<ConvertArgs>();
  auto* conv = model.add_subcommand("convert-bin",
                                    "convert a PyTorch .bin checkpoint (pytorch_model.bin or sharded with an index) "
                                    "to safetensors, copying config.json and tokenizer files (uses the venv's torch)");
  conv->add_option("--in", conv_args->in, "directory with pytorch_model*.bin")->required();
  conv->add_option("--out", conv_args->out, "output directory")->required();
  conv->add_option("--python", conv_args->python, "python with torch (default: $LCL_PYTHON, else .venv, else python3)");
  conv->callback([&launch, conv_args] { launch.action = [conv_args] { return RunConvertBin(*conv_args); }; });
}

}  // namespace lcl::launch
