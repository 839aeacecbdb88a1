// `lcl bench model`: forward + backward of the multimodal model through lcl (TP layers, optional
// activation checkpointing) against the same computation in plain LibTorch ops, same weights, same
// batch, same run.
#include "bench/model_bench.h"

#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <torch/torch.h>
#include <torch/version.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <sstream>
#include <thread>

#include "cluster/check.h"
#include "cluster/errors.h"
#include "cluster/mpi_comm.h"
#include "cluster/mpi_communicator.h"
#include "model/attention.h"
#include "model/hf_io.h"
#include "model/multimodal_model.h"

namespace lcl::bench {
namespace {

using lcl::model::ModelConfig;
using lcl::model::MultimodalBatch;
using lcl::model::MultimodalModel;

// Counts the bytes live in LibTorch's CPU tensors, with a resettable peak: an allocator installed
// in place of the default one that allocates with the same c10::alloc_cpu and keeps each block's
// size in a 64-byte header (data and context stay the same pointer, as raw_allocate requires). This
// is the allocator-level figure, not RSS: glibc keeps freed pages (main's mallopt), so RSS does not
// come back down between steps and would hide what activation checkpointing saves.
class CountingAllocator : public c10::Allocator {
 public:
  static constexpr size_t kHeader = 64;  // keeps c10's 64-byte alignment

  c10::DataPtr allocate(size_t n) override {
    auto* block = static_cast<char*>(c10::alloc_cpu(n + kHeader));
    *reinterpret_cast<size_t*>(block) = n;
    const int64_t live = live_.fetch_add(static_cast<int64_t>(n)) + static_cast<int64_t>(n);
    int64_t peak = peak_.load();
    while (live > peak && !peak_.compare_exchange_weak(peak, live)) {
    }
    void* data = block + kHeader;
    return {data, data, &Free, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &Free; }
  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }

  static int64_t live() { return live_.load(); }
  static int64_t peak() { return peak_.load(); }
  static void ResetPeak() { peak_.store(live_.load()); }

 private:
  static void Free(void* data) {
    if (data == nullptr) return;
    char* block = static_cast<char*>(data) - kHeader;
    live_.fetch_sub(static_cast<int64_t>(*reinterpret_cast<size_t*>(block)));
    c10::free_cpu(block);
  }

  // Process-wide, as the allocator itself is: a raw deleter has no object to reach.
  static std::atomic<int64_t> live_;
  static std::atomic<int64_t> peak_;
};
std::atomic<int64_t> CountingAllocator::live_{0};
std::atomic<int64_t> CountingAllocator::peak_{0};

// Installed once per process and never removed: tensors allocated through it may outlive the
// benchmark, and LibTorch keeps the highest-priority CPU allocator for good.
CountingAllocator& InstallCountingAllocator() {
  static CountingAllocator* counting = [] {
    auto* a = new CountingAllocator();
    c10::SetCPUAllocator(a, /*priority=*/100);
    return a;
  }();
  return *counting;
}

// B sequences of T tokens; each holds `images` spans of <im_start> + P placeholders + <im_end>,
// evenly spread over random text; labels = the text tokens (as an LCL prompt's answers are text),
// images random pixels.
MultimodalBatch MakeBatch(const ModelConfig& c, const ModelBenchOptions& o) {
  torch::manual_seed(7);  // the same batch on every rank
  const int64_t patches = c.vision.num_patches(), span = patches + 2;
  if (o.images * span >= o.seq_len) {
    throw ConfigError("bench model: " + std::to_string(o.images) + " images x " + std::to_string(span) +
                      " tokens do not fit in --seq-len " + std::to_string(o.seq_len));
  }
  const int64_t text_vocab = std::min({c.im_start_token_id, c.im_end_token_id, c.image_token_id});
  torch::Tensor ids = torch::randint(0, text_vocab, {o.batch, o.seq_len});
  const int64_t gap = (o.seq_len - o.images * span) / (o.images + 1);
  for (int64_t b = 0; b < o.batch; ++b) {
    for (int64_t i = 0; i < o.images; ++i) {
      const int64_t start = gap * (i + 1) + span * i;
      ids[b][start] = c.im_start_token_id;
      ids[b].narrow(0, start + 1, patches).fill_(c.image_token_id);
      ids[b][start + span - 1] = c.im_end_token_id;
    }
  }
  torch::Tensor labels = ids.masked_fill(ids.eq(c.image_token_id), -100);
  torch::Tensor images =
      torch::randn({int64_t{o.batch} * o.images, c.vision.num_channels, c.vision.image_size, c.vision.image_size});
  MultimodalBatch batch;
  batch.input_ids = ids;
  batch.attention_mask = torch::ones_like(ids);
  batch.labels = labels;
  batch.images = images;
  return batch;
}

// The model as a Hugging Face user would write it with plain LibTorch ops on a name -> tensor map:
// F.linear, matmul + softmax attention with an additive causal mask, rotate_half RoPE,
// full-vocabulary cross entropy; no TP, no checkpointing, the tower under no-grad.
class PlainModel {
 public:
  PlainModel(const ModelConfig& c, const checkpoint::NamedTensors& tensors) : c_(c) {
    for (const auto& [name, t] : tensors) {
      torch::Tensor p = t.detach().clone();
      if (name.rfind(kVision, 0) != 0) p.set_requires_grad(true);
      w_[name] = p;
    }
  }

  void ZeroGrad() {
    for (auto& [name, p] : w_) {
      if (p.grad().defined()) p.mutable_grad().reset();
    }
  }

  torch::Tensor Loss(const MultimodalBatch& batch) const {
    const auto& t = c_.text;
    const torch::Tensor& ids = batch.input_ids;
    const int64_t B = ids.size(0), T = ids.size(1), C = t.hidden_size, D = t.head_dim();
    torch::Tensor is_image = ids.eq(c_.image_token_id);
    torch::Tensor h = torch::embedding(W("model.embed_tokens.weight"), ids.masked_fill(is_image, 0));
    torch::Tensor features;
    {
      torch::NoGradGuard no_grad;
      features = Vision(batch.images);  // [N, P, Cv]
    }
    torch::Tensor tokens =
        Linear("model.mm_projector.2", torch::gelu(Linear("model.mm_projector.0", features, true)), true);
    h = h.masked_scatter(is_image.unsqueeze(-1), tokens.reshape({-1, C}));

    // RoPE tables [T, D] and the additive causal mask [T, T].
    torch::Tensor inv_freq = torch::pow(t.rope_theta, -torch::arange(0, D, 2, torch::kFloat64) / D);
    torch::Tensor angles = torch::outer(torch::arange(T, torch::kFloat64), inv_freq).to(torch::kFloat32);
    torch::Tensor cos = torch::cat({angles, angles}, -1).cos(), sin = torch::cat({angles, angles}, -1).sin();
    torch::Tensor causal = torch::full({T, T}, -INFINITY).triu(1);
    auto rope = [&](const torch::Tensor& x) {
      torch::Tensor rotated = torch::cat({-x.narrow(-1, D / 2, D / 2), x.narrow(-1, 0, D / 2)}, -1);
      return x * cos + rotated * sin;
    };
    auto heads = [&](const torch::Tensor& y, int64_t n) { return y.view({B, T, n, D}).transpose(1, 2); };
    const int64_t groups = t.num_attention_heads / t.num_key_value_heads;
    for (int i = 0; i < t.num_hidden_layers; ++i) {
      const std::string p = "model.layers." + std::to_string(i) + ".";
      torch::Tensor x = RmsNorm(h, p + "input_layernorm.weight");
      torch::Tensor q = rope(heads(Linear(p + "self_attn.q_proj", x), t.num_attention_heads));
      torch::Tensor k = rope(heads(Linear(p + "self_attn.k_proj", x), t.num_key_value_heads));
      torch::Tensor v = heads(Linear(p + "self_attn.v_proj", x), t.num_key_value_heads);
      k = k.repeat_interleave(groups, 1);
      v = v.repeat_interleave(groups, 1);
      torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(double(D)) + causal;
      torch::Tensor a = torch::matmul(torch::softmax(scores, -1), v).transpose(1, 2).reshape({B, T, C});
      h = h + Linear(p + "self_attn.o_proj", a);
      x = RmsNorm(h, p + "post_attention_layernorm.weight");
      h = h + Linear(p + "mlp.down_proj", torch::silu(Linear(p + "mlp.gate_proj", x)) * Linear(p + "mlp.up_proj", x));
    }
    h = RmsNorm(h, "model.norm.weight");
    torch::Tensor logits = Linear(t.tie_word_embeddings ? "model.embed_tokens" : "lm_head", h);  // [B, T, V]
    return torch::nn::functional::cross_entropy(logits.narrow(1, 0, T - 1).reshape({-1, logits.size(-1)}),
                                                batch.labels.narrow(1, 1, T - 1).reshape({-1}),
                                                torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100));
  }

 private:
  static constexpr const char* kVision = "model.vision_tower.";

  const torch::Tensor& W(const std::string& name) const { return w_.at(name); }
  torch::Tensor Linear(const std::string& name, const torch::Tensor& x, bool bias = false) const {
    return torch::linear(x, W(name + ".weight"), bias ? W(name + ".bias") : torch::Tensor());
  }
  torch::Tensor RmsNorm(const torch::Tensor& x, const std::string& name) const {
    return x * torch::rsqrt(x.pow(2).mean(-1, true) + c_.text.rms_norm_eps) * W(name);
  }
  torch::Tensor LayerNorm(const torch::Tensor& x, const std::string& name) const {
    return torch::layer_norm(x, {x.size(-1)}, W(name + ".weight"), W(name + ".bias"), c_.vision.layer_norm_eps);
  }

  // HF CLIPVisionModel up to hidden_states[layers_used], class token dropped: [N, P, Cv].
  torch::Tensor Vision(const torch::Tensor& pixels) const {
    const auto& v = c_.vision;
    const std::string m = std::string(kVision) + "vision_tower.vision_model.";
    const int64_t N = pixels.size(0), Cv = v.hidden_size, H = v.num_attention_heads, Dv = Cv / H;
    const int64_t stride = v.patch_size;
    torch::Tensor x = torch::conv2d(pixels, W(m + "embeddings.patch_embedding.weight"), {}, stride)
                          .flatten(2)
                          .transpose(1, 2);  // [N, P, Cv]
    x = torch::cat({W(m + "embeddings.class_embedding").expand({N, 1, Cv}), x}, 1) +
        W(m + "embeddings.position_embedding.weight");
    x = LayerNorm(x, m + "pre_layrnorm");
    const int64_t L = x.size(1);
    auto heads = [&](const torch::Tensor& y) { return y.view({N, L, H, Dv}).transpose(1, 2); };
    for (int i = 0; i < c_.VisionLayersUsed(); ++i) {
      const std::string p = m + "encoder.layers." + std::to_string(i) + ".";
      torch::Tensor y = LayerNorm(x, p + "layer_norm1");
      torch::Tensor q = heads(Linear(p + "self_attn.q_proj", y, true));
      torch::Tensor k = heads(Linear(p + "self_attn.k_proj", y, true));
      torch::Tensor val = heads(Linear(p + "self_attn.v_proj", y, true));
      torch::Tensor probs = torch::softmax(torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(double(Dv)), -1);
      x = x + Linear(p + "self_attn.out_proj", torch::matmul(probs, val).transpose(1, 2).reshape({N, L, Cv}), true);
      y = Linear(p + "mlp.fc1", LayerNorm(x, p + "layer_norm2"), true);
      x = x + Linear(p + "mlp.fc2", y * torch::sigmoid(1.702 * y), true);  // quick GELU
    }
    return x.narrow(1, 1, L - 1);
  }

  ModelConfig c_;
  std::map<std::string, torch::Tensor> w_;
};

double MaxOver(MPI_Comm comm, double mine) {
  double out = 0;
  LCL_MPI_CHECK(MPI_Allreduce(&mine, &out, 1, MPI_DOUBLE, MPI_MAX, comm));
  return out;
}

// Ranks other than 0 wait here without spinning (an MPI barrier busy-polls a core) while rank 0
// computes the reference on all the TP group's cores.
void SleepingBarrier(MPI_Comm comm) {
  MPI_Request req;
  LCL_MPI_CHECK(MPI_Ibarrier(comm, &req));
  int done = 0;
  while (!done) {
    LCL_MPI_CHECK(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
    if (!done) ::usleep(1000);
  }
}

// One measured forward + backward; returns the loss.
double LclStep(MultimodalModel& model, const MultimodalBatch& batch) {
  model->zero_grad(/*set_to_none=*/true);
  lcl::model::MultimodalOutput out = model->forward(batch);
  out.loss.backward();
  return out.loss.item<double>();
}

double RefStep(PlainModel& ref, const MultimodalBatch& batch) {
  ref.ZeroGrad();
  torch::Tensor loss = ref.Loss(batch);
  loss.backward();
  return loss.item<double>();
}

// Peak bytes above the step's starting point (activations, gradients, temporaries), in MiB.
template <class F>
double PeakMib(CountingAllocator& counter, F&& step) {
  const int64_t before = counter.live();
  counter.ResetPeak();
  step();
  return static_cast<double>(counter.peak() - before) / (1 << 20);
}

void Emit(std::ostream& out, bool json, const std::string& name, double value, const std::string& unit,
          double reference, const std::string& ref_name, const std::string& config) {
  const double ratio = reference > 0 ? value / reference : 0;
  if (json) {
    out << "{\"name\":\"" << name << "\",\"value\":" << value << ",\"unit\":\"" << unit
        << "\",\"reference\":" << reference << ",\"reference_name\":\"" << ref_name << "\",\"ratio\":" << ratio
        << ",\"config\":" << config << "}\n";
  } else {
    char line[256];
    std::snprintf(line, sizeof(line), "%-26s %10.3f %-8s  %-30s %10.3f  ratio %.3f\n", name.c_str(), value,
                  unit.c_str(), ref_name.c_str(), reference, ratio);
    out << line;
  }
  out.flush();
}

ModelBenchRow BenchPreset(const std::string& preset, const ModelBenchOptions& o, MPI_Comm comm,
                          cluster::MpiCommunicator& tp_comm, CountingAllocator& counter) {
  const int rank = tp_comm.rank(), world = tp_comm.size();
  ModelConfig config = ModelConfig::FromPreset(preset);
  // Each rank initialises its own TP slice; the reference below gets the gathered full weights.
  torch::manual_seed(1234);
  MultimodalModel model(config, lcl::model::TpGroup{&tp_comm});
  const MultimodalBatch batch = MakeBatch(config, o);
  const double tokens = static_cast<double>(o.batch) * o.seq_len;

  // The reference gets the full (gathered) weights, so both compute the same function.
  checkpoint::NamedTensors full = lcl::model::GatherHfTensors(*model);
  std::unique_ptr<PlainModel> ref;
  if (rank == 0) ref = std::make_unique<PlainModel>(config, full);
  full.clear();

  auto& checkpointing = model->language_model->model->activation_checkpointing;
  auto time_lcl = [&](bool ckpt, int steps) {
    checkpointing = ckpt;
    LCL_MPI_CHECK(MPI_Barrier(comm));
    const double t0 = MPI_Wtime();
    for (int i = 0; i < steps; ++i) LclStep(model, batch);
    return MaxOver(comm, (MPI_Wtime() - t0) / steps);
  };
  auto time_ref = [&](int steps) {
    double seconds = 0;
    if (rank == 0) {
      torch::set_num_threads(o.threads * world);
      const double t0 = MPI_Wtime();
      for (int i = 0; i < steps; ++i) RefStep(*ref, batch);
      seconds = (MPI_Wtime() - t0) / steps;
      torch::set_num_threads(o.threads);
    }
    SleepingBarrier(comm);
    return seconds;
  };

  time_lcl(false, o.warmup);
  time_lcl(true, o.warmup);
  time_ref(o.warmup);
  double best = 1e30, best_ckpt = 1e30, best_ref = 1e30;
  for (int r = 0; r < o.rounds; ++r) {
    best = std::min(best, time_lcl(false, o.iters));
    best_ckpt = std::min(best_ckpt, time_lcl(true, o.iters));
    best_ref = std::min(best_ref, time_ref(o.iters));
  }

  ModelBenchRow row;
  row.preset = preset;
  row.tp = world;
  row.us_per_token = best / tokens * 1e6;
  row.ckpt_us_per_token = best_ckpt / tokens * 1e6;
  row.ref_us_per_token = best_ref / tokens * 1e6;
  checkpointing = false;
  row.peak_mib = MaxOver(comm, PeakMib(counter, [&] { row.loss = LclStep(model, batch); }));
  checkpointing = true;
  double ckpt_loss = 0;
  row.ckpt_peak_mib = MaxOver(comm, PeakMib(counter, [&] { ckpt_loss = LclStep(model, batch); }));
  if (rank == 0) row.ref_peak_mib = PeakMib(counter, [&] { row.ref_loss = RefStep(*ref, batch); });

  // After timing, check that both sides computed the same function (fp32; TP changes summation
  // order only).
  int ok = 1;
  if (rank == 0) {
    const double tol = 1e-4 * std::max(1.0, std::abs(row.ref_loss));
    ok = std::abs(row.loss - row.ref_loss) <= tol && std::abs(ckpt_loss - row.loss) <= tol;
  }
  LCL_MPI_CHECK(MPI_Bcast(&ok, 1, MPI_INT, 0, comm));
  if (!ok) {
    throw Error("bench model: preset " + preset + " at tp " + std::to_string(world) + ": lcl loss " +
                std::to_string(row.loss) + " (checkpointed " + std::to_string(ckpt_loss) +
                ") differs from the plain-op reference's " + std::to_string(row.ref_loss));
  }
  return row;
}

void Report(const ModelBenchOptions& o, const ModelBenchRow& r, int64_t params, std::ostream& out) {
  std::ostringstream cfg;
  cfg << "{\"preset\":\"" << r.preset << "\",\"tp\":" << r.tp << ",\"batch\":" << o.batch
      << ",\"seq_len\":" << o.seq_len << ",\"images\":" << o.images << ",\"threads_per_rank\":" << o.threads
      << ",\"ref_threads\":" << o.threads * r.tp << ",\"parameters\":" << params << ",\"loss\":" << r.loss
      << ",\"ref_loss\":" << r.ref_loss << "}";
  const std::string c = cfg.str(), p = "model." + r.preset + ".tp" + std::to_string(r.tp);
  Emit(out, o.json, p + ".fwd_bwd", r.us_per_token, "us/token", r.ref_us_per_token, "plain LibTorch ops", c);
  Emit(out, o.json, p + ".fwd_bwd_ckpt", r.ckpt_us_per_token, "us/token", r.ref_us_per_token, "plain LibTorch ops", c);
  Emit(out, o.json, p + ".peak_mem", r.peak_mib, "MiB", r.ref_peak_mib, "plain LibTorch ops", c);
  Emit(out, o.json, p + ".peak_mem_ckpt", r.ckpt_peak_mib, "MiB", r.peak_mib, "lcl without checkpointing", c);
}

// The attention core alone at one sequence length: SDPA (LibTorch's fused CPU flash / memory-efficient kernel, fed
// the causal + padding mask the model builds) against the explicit matmul + softmax path, forward + backward over
// [1, heads, T, head_dim]; time is the best of `rounds`, memory the allocator peak of one step. The outputs and
// gradients are compared, so a fast wrong kernel cannot pass.
struct AttentionRow {
  double sdpa_ms = 0, explicit_ms = 0, sdpa_mib = 0, explicit_mib = 0, max_diff = 0;
};

AttentionRow BenchAttention(int64_t t, const ModelBenchOptions& o, CountingAllocator& counter) {
  torch::manual_seed(7);
  const int64_t h = o.attention_heads, d = o.attention_head_dim;
  torch::Tensor q0 = torch::randn({1, h, t, d}), k0 = torch::randn({1, h, t, d}), v0 = torch::randn({1, h, t, d});
  torch::Tensor mask = lcl::model::MakeCausalPaddingMask(torch::ones({1, t}, torch::kInt64), t, 0);
  torch::Tensor grad_out = torch::randn({1, h, t, d});
  std::vector<torch::Tensor> grads[2];
  torch::Tensor outs[2];
  auto step = [&](bool force_explicit) {
    torch::Tensor q = q0.clone().requires_grad_(true), k = k0.clone().requires_grad_(true),
                  v = v0.clone().requires_grad_(true);
    torch::Tensor y = lcl::model::ScaledDotProductAttention(q, k, v, mask, force_explicit);
    y.backward(grad_out);
    outs[force_explicit] = y.detach();
    grads[force_explicit] = {q.grad(), k.grad(), v.grad()};
  };
  AttentionRow row;
  for (bool force_explicit : {false, true}) {
    double best = 1e30;
    for (int r = 0; r < o.warmup + o.rounds; ++r) {
      const double t0 = MPI_Wtime();
      step(force_explicit);
      if (r >= o.warmup) best = std::min(best, MPI_Wtime() - t0);
    }
    (force_explicit ? row.explicit_ms : row.sdpa_ms) = best * 1e3;
    (force_explicit ? row.explicit_mib : row.sdpa_mib) = PeakMib(counter, [&] { step(force_explicit); });
  }
  row.max_diff = (outs[0] - outs[1]).abs().max().item<double>();
  for (int i = 0; i < 3; ++i)
    row.max_diff = std::max(row.max_diff, (grads[0][i] - grads[1][i]).abs().max().item<double>());
  return row;
}

}  // namespace

std::vector<ModelBenchRow> RunModelBench(const ModelBenchOptions& options, MPI_Comm comm, std::ostream& out) {
  ModelBenchOptions o = options;
  if (o.batch < 1 || o.seq_len < 2 || o.images < 0 || o.iters < 1 || o.rounds < 1 || o.warmup < 0) {
    throw ConfigError(
        "bench model: need --batch >= 1, --seq-len >= 2, --images >= 0, --iters >= 1, "
        "--rounds >= 1, --warmup >= 0");
  }
  if (o.threads <= 0) {
    const int local = cluster::MpiComm::SplitShared(comm, 0).size();
    o.threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / local);
  }
  torch::set_num_threads(o.threads);
  CountingAllocator& counter = InstallCountingAllocator();
  for (int64_t t : o.attention_seq_lens) {
    if (t < 1 || o.attention_heads < 1 || o.attention_head_dim < 1) {
      throw ConfigError(
          "bench model: --attention-seq lengths, --attention-heads and --attention-head-dim must be >= 1");
    }
  }
  cluster::MpiCommunicator tp_comm(comm, "tp");
  if (tp_comm.rank() == 0 && !o.json && !o.presets.empty()) {
    out << "# lcl bench model: tp " << tp_comm.size() << ", " << o.threads << " thread(s) per rank, batch " << o.batch
        << " x " << o.seq_len << " tokens, " << o.images << " images per sequence; time = slowest rank, best of "
        << o.rounds << " rounds of " << o.iters << " steps; reference = plain LibTorch ops on rank 0 with "
        << o.threads * tp_comm.size()
        << " thread(s), no TP, no checkpointing; memory = allocator peak over the step's start\n";
  }
  std::vector<ModelBenchRow> rows;
  for (const std::string& preset : o.presets) {
    ModelConfig config = ModelConfig::FromPreset(preset);
    int64_t params = 0;
    {
      MultimodalModel counted(config, lcl::model::TpGroup{});
      for (const auto& p : counted->parameters()) params += p.numel();
    }
    rows.push_back(BenchPreset(preset, o, comm, tp_comm, counter));
    if (tp_comm.rank() == 0) Report(o, rows.back(), params, out);
  }
  if (tp_comm.rank() == 0 && !o.json && !o.attention_seq_lens.empty()) {
    out << "# attention core on rank 0 with " << o.threads * tp_comm.size() << " thread(s): [1, " << o.attention_heads
        << " heads, T, " << o.attention_head_dim
        << "] fp32, causal mask, forward + backward; SDPA (LibTorch's fused kernel) vs explicit matmul + softmax; "
           "time = best of "
        << o.rounds << ", memory = allocator peak of one step\n";
  }
  for (int64_t t : o.attention_seq_lens) {
    if (tp_comm.rank() == 0) {
      torch::set_num_threads(o.threads * tp_comm.size());  // the other ranks sleep meanwhile
      const AttentionRow a = BenchAttention(t, o, counter);
      torch::set_num_threads(o.threads);
      if (a.max_diff > 1e-3) {
        throw Error("bench model: attention at " + std::to_string(t) +
                    " tokens: SDPA and the explicit path differ by " + std::to_string(a.max_diff) +
                    " (outputs or gradients)");
      }
      std::ostringstream cfg;
      cfg << "{\"tokens\":" << t << ",\"heads\":" << o.attention_heads << ",\"head_dim\":" << o.attention_head_dim
          << ",\"threads\":" << o.threads * tp_comm.size() << ",\"max_abs_diff\":" << a.max_diff << "}";
      const std::string p = "attention.t" + std::to_string(t);
      Emit(out, o.json, p + ".fwd_bwd", a.sdpa_ms, "ms", a.explicit_ms, "explicit matmul+softmax", cfg.str());
      Emit(out, o.json, p + ".peak_mem", a.sdpa_mib, "MiB", a.explicit_mib, "explicit matmul+softmax", cfg.str());
    }
    SleepingBarrier(comm);
  }
  return rows;
}

}  // namespace lcl::bench
