// ModelFlops and MatmulPeak: the two halves of `lcl bench train`'s MFU.
#include "bench/mfu.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

namespace lcl::bench {

using nlohmann::json;

double ModelFlops(const std::string& model_dir, double seq, double images, int micro_batch, int np) {
  std::ifstream in(model_dir + "/config.json");
  const json c = json::parse(in);
  const json t = c.contains("text_config") ? c.at("text_config") : c;
  const json& v = c.at("vision_config");
  const double h = t.at("hidden_size").get<double>(), ff = t.at("intermediate_size").get<double>();
  const double layers = t.at("num_hidden_layers").get<double>(), vocab = t.at("vocab_size").get<double>();
  const double heads = t.at("num_attention_heads").get<double>();
  const double kv = t.value("num_key_value_heads", heads);
  const double head_dim = t.value("head_dim", h / heads);
  const double llm_linear = layers * (h * heads * head_dim * 2 + h * kv * head_dim * 2 + 3 * h * ff) + h * vocab;
  const double vh = v.at("hidden_size").get<double>(), vff = v.at("intermediate_size").get<double>();
  const double vlayers = v.at("num_hidden_layers").get<double>();
  const double side = v.at("image_size").get<double>() / v.at("patch_size").get<double>();
  const double patches = side * side + 1;  // + CLS
  const double tower_linear = vlayers * (4 * vh * vh + 2 * vh * vff);
  const double projector = vh * h + h * h;  // mlp2x_gelu
  const double llm = 6 * llm_linear * seq + 12 * layers * h * seq * seq;
  const double tower = images * (2 * tower_linear * patches + 4 * vlayers * vh * patches * patches);
  const double proj = images * 6 * projector * (patches - 1);
  return (llm + tower + proj) * micro_batch * np;
}

double MatmulPeak(int threads, int ranks) {
  const int before = torch::get_num_threads();
  const int64_t n = 1024;
  auto best_of = [n](int reps) {
    torch::Tensor a = torch::randn({n, n}), b = torch::randn({n, n}), c = torch::empty({n, n});
    double best = 0;
    for (int i = 0; i < reps; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      torch::mm_out(c, a, b);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (i >= 2) best = std::max(best, 2.0 * n * n * n / s);
    }
    return best;
  };
  double total = 0;
  if (threads == 1) {
    torch::set_num_threads(1);
    std::vector<double> each(static_cast<size_t>(ranks));
    std::vector<std::thread> workers;
    for (int r = 0; r < ranks; ++r) workers.emplace_back([&, r] { each[size_t(r)] = best_of(12); });
    for (std::thread& w : workers) w.join();
    for (double v : each) total += v;
  } else {
    torch::set_num_threads(threads);
    total = ranks * best_of(12);
  }
  torch::set_num_threads(before);
  return total;
}

}  // namespace lcl::bench
