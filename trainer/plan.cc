// `lcl plan` (see plan.h). The terms follow what the trainer allocates:
//  - optim/optimizer.cc: fp32 masters of this rank's rows (the parameter itself when it is fp32), two fp32
//    moments in flat buffers, over dp parts with ZeRO-1 (one part without);
//  - optim/grad_buckets.cc: every trainable element's fp32 gradient packed once, a [chunk] fp32 shard and, for
//    16-bit parameters, a send shard and a gathered buffer in the parameter dtype (only with more than one part);
//  - model/: with checkpointing each decoder layer keeps its input and backward recomputes one layer at a time;
//    without, each keeps what autograd saves (norm inputs and outputs, q, k, v before and after the rotation, the
//    attention output, gate, up, silu(gate), their product); a backward in flight adds its gradient temporaries.
#include "trainer/plan.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "cluster/errors.h"
#include "cluster/version.h"

namespace lcl::trainer {
namespace {

constexpr double kGiB = double(int64_t(1) << 30);
// Text tokens per image of the official prompt (the question, the answer and the turn markers around each image):
// 9,653 tokens for a 16-shot episode of 33 images at 256 tokens (`lcl data episodes --config
// launch/configs/lcl_7b.pbtxt`), (9,653 - 33 x 256) / 33 = 36.5.
constexpr double kTextTokensPerImage = 36.5;
// CUDA context, cuBLAS and NCCL workspaces per GPU rank (an allowance, not measured here).
constexpr double kGpuRuntimeBytes = 1.5 * kGiB;
// A CPU rank's own resident memory besides the model: LibTorch, Open MPI and the process's buffers (509 MiB, the peak
// RSS of each rank of a 2-rank `tiny` run, whose model is 4 MB: feature_cache_train_test's run without the cache; 511
// MiB on tcmalloc). The terms below are live allocations: they match a process on tcmalloc, which returns freed
// memory, not one on glibc's malloc, whose heap keeps it (docs/performance.md, "The planner").
constexpr double kCpuRuntimeBytes = 509.0 * (1 << 20);

int64_t Linear(int64_t in, int64_t out, bool bias) { return in * out + (bias ? out : 0); }

std::string Bytes(double b) {
  char s[32];
  std::snprintf(s, sizeof(s), "%.2f GiB", b / kGiB);
  return s;
}

LayoutPlan PlanLayout(const Plan& p, const lcl::model::ModelConfig& m, const TrainConfig& c, int tp, int micro) {
  LayoutPlan l;
  l.tp = tp;
  l.dp = p.inputs.world / tp;
  l.micro_batch = micro;
  l.grad_accum = std::max(1, p.global_batch / (micro * l.dp));
  const ParamCounts n = CountParams(m, tp);
  const double a = p.inputs.gpu ? 2 : 4;  // bytes per weight, gradient and activation element
  const double trainable = double(n.trainable), frozen = double(n.frozen);
  const int parts = p.zero1 ? l.dp : 1;
  l.weights = a * (trainable + frozen);
  l.gradients = a * trainable;
  l.buckets = 4 * trainable;
  if (parts > 1) {
    l.buckets += 4 * trainable / parts;
    if (a != 4) l.buckets += a * trainable / parts + a * trainable;
  }
  l.masters = a == 4 ? 0 : 4 * trainable / parts;
  l.moments = 8 * trainable / parts;

  const auto& t = m.text;
  const double H = t.hidden_size, I = t.intermediate_size, L = t.num_hidden_layers;
  const double hq = double(t.num_attention_heads) * t.head_dim(), hkv = double(t.num_key_value_heads) * t.head_dim();
  const double bt = double(micro) * double(p.episode.tokens);
  // Saved per decoder layer without checkpointing: x, norm1 out, x + attn, norm2 out (replicated over TP), q, q rot,
  // attention out, k, v, k rot, gate, up, silu(gate), silu(gate) * up (this rank's heads and columns).
  const double layer_full = bt * (4 * H + (3 * hq + 3 * hkv) / tp + 4 * I / tp) * a;
  const double backward_temps = bt * (2 * H + 3 * I / tp) * a;  // gradients of the largest tensors in flight
  const double image_tokens = double(micro) * p.episode.images * m.vision.num_patches();
  const double projector = image_tokens * (m.vision.hidden_size + (m.projector_type == "linear" ? 0 : 2 * H)) * a;
  const double tower_out = image_tokens * m.vision.hidden_size * a;
  const double head = double(micro) * p.episode.labelled * double(t.vocab_size) / tp * 4 * 3;  // logits, softmax, grad
  const double common = projector + tower_out + head + 2 * bt * H * a;                         // + the final norm
  l.activations_checkpointed = L * bt * H * a + layer_full + backward_temps + common;
  l.activations_full = L * layer_full + backward_temps + common;
  l.activations = p.checkpointing ? l.activations_checkpointed : l.activations_full;
  const double T = double(p.episode.tokens);
  // Segment attention (model/attention.cc): no [B, 1, T, T] mask; each layer that keeps its autograd graph (all
  // without checkpointing, the one being recomputed with) holds SDPA's per-episode outputs beside o_proj's input and
  // their fp32 log-sum-exp, and, with grouped-query attention, the repeated keys and values; the rows' concatenation
  // is one more transient copy.
  const double heads = double(t.num_attention_heads) / tp;
  const double repeat = t.num_key_value_heads < t.num_attention_heads ? 2 * bt * hq / tp * a : 0;
  const double per_layer = bt * hq / tp * a + bt * heads * 4 + repeat;
  l.attention = (p.checkpointing ? 1 : L) * per_layer + bt * hq / tp * a;

  l.runtime = p.inputs.gpu ? kGpuRuntimeBytes : kCpuRuntimeBytes;
  if (!p.inputs.gpu && (!c.data().feature_cache().empty() || c.data().has_feature_cache_memory_mb())) {
    l.runtime += double(c.data().feature_cache_memory_mb()) * (1 << 20);  // its whole budget, once filled
  }
  l.total = l.weights + l.gradients + l.buckets + l.masters + l.moments + l.activations + l.attention + l.runtime;
  l.fits = l.total <= p.inputs.device_bytes;

  // Model FLOPs per episode (PaLM's accounting: 6 per matmul weight per token, 12 L hq T^2 for attention's full
  // square), the tower's forward only, the LM head on the labelled rows only.
  const ParamCounts whole = CountParams(m, 1);
  const double layer_matmul = H * (2 * hq + 2 * hkv) + 3 * H * I;
  const double decoder_fwd = 2 * T * L * layer_matmul + 4 * L * hq * T * T;
  const auto& v = m.vision;
  const double vt = v.num_patches() + 1.0;  // with the class token
  const double tower_layer = 4.0 * v.hidden_size * v.hidden_size + 2.0 * v.hidden_size * v.intermediate_size;
  const double tower =
      p.episode.images * (2 * vt * p.tower_layers * tower_layer + 4 * vt * vt * v.hidden_size * p.tower_layers);
  const double proj = p.episode.images * v.num_patches() * 6.0 * double(whole.projector);
  const double lm_head = 6.0 * p.episode.labelled * H * t.vocab_size;
  const double per_episode = 3 * decoder_fwd + tower + proj + lm_head;
  l.flops_per_step = per_episode * p.global_batch;
  l.flops_per_step_recompute = (per_episode + (p.checkpointing ? decoder_fwd : 0)) * p.global_batch;
  return l;
}

}  // namespace

ParamCounts CountParams(const lcl::model::ModelConfig& m, int tp) {
  const auto& t = m.text;
  const int64_t H = t.hidden_size, I = t.intermediate_size, V = t.vocab_size;
  const int64_t hq = int64_t(t.num_attention_heads) * t.head_dim(), hkv = int64_t(t.num_key_value_heads) * t.head_dim();
  // Column-parallel weights and biases split their outputs, row-parallel weights their inputs (the row-parallel
  // bias is replicated), the vocabulary rows split; norms replicated.
  int64_t layer = (Linear(H, hq, t.attention_bias) + 2 * Linear(H, hkv, t.attention_bias)) / tp + H * hq / tp +
                  (t.attention_bias ? H : 0);
  layer += 2 * Linear(H, I, t.mlp_bias) / tp + I * H / tp + (t.mlp_bias ? H : 0);
  layer += 2 * H;  // input and post-attention RMSNorms
  ParamCounts n;
  n.decoder = V * H / tp + t.num_hidden_layers * layer + H + (t.tie_word_embeddings ? 0 : V * H / tp);
  const int64_t cv = m.vision.hidden_size;
  n.projector = m.projector_type == "linear" ? Linear(cv, H, true) : Linear(cv, H, true) + Linear(H, H, true);
  n.trainable = n.decoder + n.projector;
  const auto& v = m.vision;
  const int64_t vl = 4 * Linear(cv, cv, true) + Linear(cv, v.intermediate_size, true) +
                     Linear(v.intermediate_size, cv, true) + 4 * cv;  // attention, MLP, two LayerNorms
  const int64_t embeddings =
      cv + int64_t(v.num_channels) * v.patch_size * v.patch_size * cv + (int64_t(v.num_patches()) + 1) * cv;
  // Every layer is loaded (the top ones unused at mm_vision_select_layer -2); + pre- and post-LayerNorm.
  n.frozen = embeddings + 2 * cv + int64_t(v.num_hidden_layers) * vl + 2 * cv;
  return n;
}

EpisodeSize EstimateEpisode(const TrainConfig& c, const lcl::model::ModelConfig& m, int64_t tokens) {
  EpisodeSize e;
  e.images = 2 * c.data().shot() + 1;
  const double per_image = m.vision.num_patches() + kTextTokensPerImage;
  e.estimated = tokens <= 0;
  e.tokens = tokens > 0 ? tokens : std::min<int64_t>(c.data().max_length(), int64_t(std::ceil(e.images * per_image)));
  // The official recipe's loss is on the final answer; the others' on every answer (about 8 tokens each).
  e.labelled = c.data().recipe() == "official" ? 8 : 8 * int64_t(e.images);
  return e;
}

Plan MakePlan(const LoadedConfig& loaded, const lcl::model::ModelConfig& model, const PlanInputs& inputs) {
  if (inputs.world < 1) throw ConfigError("--world " + std::to_string(inputs.world) + ": give at least 1 rank");
  if (!(inputs.device_bytes > 0)) throw ConfigError("--gpu-mem: give a positive size, e.g. 80G");
  if (inputs.tokens < 0) {
    throw ConfigError("--tokens " + std::to_string(inputs.tokens) +
                      ": give the tokens of an episode (> 0), or leave it out to estimate them from the config");
  }
  const TrainConfig& c = loaded.config;
  ValidateConfig(loaded);
  ValidateLayout(loaded, inputs.world);
  model.Validate(c.parallel().tp());
  Plan p;
  p.inputs = inputs;
  p.config_path = loaded.path;
  p.params = CountParams(model, 1);
  p.tower_layers = model.VisionLayersUsed();
  p.episode = EstimateEpisode(c, model, inputs.tokens);
  p.checkpointing = c.model().activation_checkpointing();
  p.zero1 = c.parallel().zero1();
  p.global_batch = PlanRun(loaded, inputs.world, 0).global_batch;
  p.configured = PlanLayout(p, model, c, c.parallel().tp(), c.batch().micro_batch());
  for (int tp = 1; tp <= inputs.world; ++tp) {
    if (inputs.world % tp != 0) continue;
    try {
      model.Validate(tp);
    } catch (const ConfigError&) {
      continue;  // heads or vocabulary do not divide
    }
    const int dp = inputs.world / tp;
    for (int micro = 1; micro * dp <= p.global_batch; micro *= 2) {
      if (p.global_batch % (micro * dp) == 0) p.layouts.push_back(PlanLayout(p, model, c, tp, micro));
    }
  }
  return p;
}

void PrintPlan(const Plan& p, std::ostream& out) {
  const PlanInputs& in = p.inputs;
  char line[512];
  out << "plan: " << (p.config_path.empty() ? "defaults" : p.config_path) << " on " << in.world << " "
      << (in.gpu ? "GPU" : "CPU") << " rank(s) of " << Bytes(in.device_bytes) << " ("
      << (in.gpu ? "bf16 weights and gradients, fp32 masters" : "fp32") << ", ZeRO-1 " << (p.zero1 ? "on" : "off")
      << ", activation checkpointing " << (p.checkpointing ? "on" : "off") << ")\n";
  std::snprintf(
      line, sizeof(line),
      "model: %.3f B trainable (decoder %.3f B, projector %.1f M), %.1f M frozen (the tower; %d of its layers run)\n",
      p.params.trainable / 1e9, p.params.decoder / 1e9, p.params.projector / 1e6, p.params.frozen / 1e6,
      p.tower_layers);
  out << line;
  out << "episode: " << p.episode.tokens << " tokens, " << p.episode.images << " images"
      << (p.episode.estimated ? " (estimated from the config; `lcl data episodes --config` prints the real counts, "
                                "--tokens takes one)"
                              : " (--tokens)")
      << "; global batch " << p.global_batch << " episodes\n";
  const LayoutPlan& l = p.configured;
  out << "configured layout: tp " << l.tp << " x dp " << l.dp << ", micro-batch " << l.micro_batch << " x accum "
      << l.grad_accum << ", per rank:\n";
  const std::pair<const char*, double> rows[] = {
      {"weights (trainable slice + frozen tower)", l.weights},
      {"gradients", l.gradients},
      {"gradient buckets (fp32) and ZeRO-1 shards", l.buckets},
      {"fp32 master weights", l.masters},
      {"AdamW moments (fp32)", l.moments},
      {p.checkpointing ? "activations (checkpointed)" : "activations (no checkpointing)", l.activations},
      {"segment attention's outputs and copies", l.attention},
      {in.gpu ? "CUDA context, cuBLAS/NCCL workspaces" : "process runtime (+ feature cache memory)", l.runtime},
  };
  for (const auto& [what, bytes] : rows) {
    std::snprintf(line, sizeof(line), "  %-46s %10s\n", what, Bytes(bytes).c_str());
    out << line;
  }
  std::snprintf(line, sizeof(line), "  %-46s %10s  of %s: %s\n", "total", Bytes(l.total).c_str(),
                Bytes(in.device_bytes).c_str(), l.fits ? "fits" : "does NOT fit");
  out << line;
  if (const std::string malloc_name = lcl::cluster::MallocName(); !in.gpu && malloc_name.rfind("glibc", 0) == 0) {
    out << "  note: this lcl runs on " << malloc_name
        << "'s malloc, which keeps freed heap resident; peaks at long episodes measured up to 30% above this plan "
           "(rebuild with libgoogle-perftools-dev installed for tcmalloc)\n";
  }
  std::snprintf(line, sizeof(line),
                "  activations: %s checkpointed, %s without checkpointing\n"
                "  FLOPs per step: %.3g (%.3g per rank); with checkpointing's recompute %.3g\n",
                Bytes(l.activations_checkpointed).c_str(), Bytes(l.activations_full).c_str(), l.flops_per_step,
                l.flops_per_step / in.world, l.flops_per_step_recompute);
  out << line;
  out << "layouts (per rank):\n   tp   dp  micro  accum      weights+optim    activations        total  fits\n";
  for (const LayoutPlan& x : p.layouts) {
    std::snprintf(line, sizeof(line), " %4d %4d %6d %6d %18s %14s %12s  %s\n", x.tp, x.dp, x.micro_batch, x.grad_accum,
                  Bytes(x.weights + x.gradients + x.buckets + x.masters + x.moments).c_str(),
                  Bytes(x.activations + x.attention).c_str(), Bytes(x.total).c_str(), x.fits ? "yes" : "no");
    out << line;
  }
}

}  // namespace lcl::trainer
