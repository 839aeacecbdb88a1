// Per-class image features from the frozen CLIP tower (see class_features.h).
#include "trainer/class_features.h"

#include <algorithm>
#include <exception>
#include <thread>

#include "checkpoint/safetensors.h"
#include "cluster/errors.h"
#include "sampler/image_io.h"

namespace lcl::trainer {
namespace {

// Where the tower's tensors live in a LLaVA checkpoint; a bare CLIP checkpoint has them without the
// prefix.
const char kLlavaTowerPrefix[] = "model.vision_tower.vision_tower.";

// Up to `n` of `paths`, spread evenly over the (sorted) list, so that a class's first files do not
// decide.
std::vector<std::string> Spread(const std::vector<std::string>& paths, int n) {
  const size_t take = std::min(paths.size(), static_cast<size_t>(std::max(n, 0)));
  std::vector<std::string> out;
  for (size_t k = 0; k < take; ++k) out.push_back(paths[k * paths.size() / take]);
  return out;
}

// "a, b, c" (the first `shown` names, then how many more): what a file holds, for an error.
std::string NameList(const std::vector<std::string>& names, size_t shown = 8) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < shown; ++i) out += (i ? ", \"" : "\"") + names[i] + "\"";
  if (names.size() > shown) out += " and " + std::to_string(names.size() - shown) + " more";
  return names.empty() ? "no tensors" : out;
}

}  // namespace

torch::Tensor LoadImages(sampler::ImageLoader& loader, const std::vector<sampler::ImageRef>& refs,
                         const std::vector<const std::vector<std::string>*>& pools, int workers) {
  std::vector<torch::Tensor> images(refs.size());
  std::vector<std::exception_ptr> errors(static_cast<size_t>(std::max(workers, 1)));
  auto work = [&](int w) {
    try {
      for (size_t i = static_cast<size_t>(w); i < refs.size(); i += errors.size()) {
        images[i] = loader.Load(refs[i], *pools[i]);
      }
    } catch (...) {
      errors[static_cast<size_t>(w)] = std::current_exception();
    }
  };
  std::vector<std::thread> threads;
  for (size_t w = 1; w < errors.size(); ++w) threads.emplace_back(work, static_cast<int>(w));
  work(0);
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
  return torch::stack(images);
}

lcl::model::ClipVisionModel LoadVisionTower(const std::string& model_dir, lcl::model::ModelConfig* config) {
  *config = lcl::model::ModelConfig::FromJsonFile(model_dir + "/config.json");
  config->Validate(/*tp=*/1);
  lcl::model::ClipVisionModel tower(config->vision, config->VisionLayersUsed());
  checkpoint::SafetensorsCheckpoint ckpt = checkpoint::SafetensorsCheckpoint::Open(model_dir);
  torch::NoGradGuard no_grad;
  for (auto& item : tower->named_parameters()) {
    const std::string llava = kLlavaTowerPrefix + item.key();
    const std::string& name = ckpt.Has(llava) ? llava : item.key();
    if (!ckpt.Has(name)) {
      throw CheckpointError(ckpt.origin() + ": missing vision tower tensor '" + llava + "' (or '" + item.key() +
                            "'); `lcl data neighbors --model` needs a checkpoint that holds the tower");
    }
    torch::Tensor t = ckpt.File(name).Read(name);
    if (t.sizes() != item.value().sizes()) {
      throw CheckpointError(ckpt.File(name).path() + ": tensor '" + name + "' has shape " +
                            checkpoint::ShapeString(t.sizes()) + " but config.json's tower needs " +
                            checkpoint::ShapeString(item.value().sizes()));
    }
    item.value().copy_(t.to(torch::kFloat32));
  }
  tower->eval();
  return tower;
}

torch::Tensor ComputeClassImageFeatures(const std::string& model_dir, const std::string& root,
                                        const std::vector<sampler::ClassImages>& classes,
                                        const ClassFeatureOptions& options) {
  lcl::model::ModelConfig config;
  lcl::model::ClipVisionModel tower = LoadVisionTower(model_dir, &config);
  sampler::ImageSpec spec;
  spec.size = config.vision.image_size;
  sampler::ImageLoader loader(root, spec);
  const int batch = std::max(options.batch, 1);
  torch::Tensor out = torch::zeros({static_cast<int64_t>(classes.size()), config.vision.hidden_size});
  torch::NoGradGuard no_grad;
  for (size_t c = 0; c < classes.size(); ++c) {
    const sampler::ClassImages& cls = classes[c];
    const std::vector<std::string>& pool = cls.train.empty() ? cls.val : cls.train;
    if (pool.empty()) {
      throw DataError(root + ": class " + cls.synset.wnid + " (" + cls.synset.name +
                      ") has no images to compute its feature from");
    }
    std::vector<std::string> chosen = Spread(pool, options.images_per_class);
    torch::Tensor sum = torch::zeros({config.vision.hidden_size});
    for (size_t start = 0; start < chosen.size(); start += static_cast<size_t>(batch)) {
      std::vector<sampler::ImageRef> part;
      for (size_t i = start; i < std::min(chosen.size(), start + static_cast<size_t>(batch)); ++i) {
        part.emplace_back(chosen[i], static_cast<int>(c));
      }
      torch::Tensor pixels =
          LoadImages(loader, part, std::vector<const std::vector<std::string>*>(part.size(), &pool), options.workers);
      torch::Tensor pooled = tower(pixels).mean(1);  // [n, Cv]: mean over patches
      sum += torch::nn::functional::normalize(pooled,
                                              torch::nn::functional::NormalizeFuncOptions().dim(1))
                 .sum(0);  // each image weighs the same
    }
    out[static_cast<int64_t>(c)] = sum / static_cast<double>(chosen.size());
  }
  return out;
}

sampler::FeatureMatrix ToFeatureMatrix(const torch::Tensor& features) {
  torch::Tensor f = features.to(torch::kFloat32).contiguous();
  TORCH_CHECK(f.dim() == 2, "features must be [classes, dim], got ", f.sizes());
  sampler::FeatureMatrix m{f.size(0), f.size(1), {}};
  m.data.assign(f.data_ptr<float>(), f.data_ptr<float>() + f.numel());
  return m;
}

sampler::FeatureMatrix ReadFeatureMatrix(const std::string& path, const std::string& name) {
  torch::Tensor t;
  try {
    const checkpoint::SafetensorsFile file(path);
    if (!file.Has(name)) {
      throw DataError(path + ": no tensor \"" + name + "\" (expected [classes, dim]); the file holds " +
                      NameList(file.Names()));
    }
    const checkpoint::SafetensorInfo& info = file.Info(name);
    if (info.shape.size() != 2 || (info.dtype != "F32" && info.dtype != "F16" && info.dtype != "BF16")) {
      throw DataError(path + ": tensor \"" + name + "\" must be 2-D F32/F16/BF16 [classes, dim], found " + info.dtype +
                      " " + checkpoint::ShapeString(info.shape));
    }
    t = file.Read(name);
  } catch (const CheckpointError& e) {
    // The codec's errors say what is wrong with the file; here the file is input data, not a checkpoint.
    throw DataError(std::string(e.what()) + " (reading features \"" + name +
                    "\": expected a safetensors file with a 2-D F32/F16/BF16 [classes, dim] tensor)");
  }
  return ToFeatureMatrix(t);
}

}  // namespace lcl::trainer
