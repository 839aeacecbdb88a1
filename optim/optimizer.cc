// DistributedOptimizer: parameter checks, the global grad norm, clipping, AdamW on the local rows,
// and the optimizer state as checkpoint boxes. The gradient reduction itself lives in
// grad_buckets.cc.
#include "optim/optimizer.h"

#include <chrono>
#include <cmath>
#include <set>

#include "checkpoint/safetensors.h"
#include "cluster/errors.h"
#include "cluster/log.h"
#include "optim/grad_buckets.h"

namespace lcl::optim {

struct DistributedOptimizer::State {
  TrainableParam p;
  // [part rows, ...] fp32. For fp32 parameters a view of the parameter's own rows (the parameter is
  // its own master); for bf16/fp16 a separate copy, so the update never rounds through the
  // low-precision type.
  torch::Tensor master;
  torch::Tensor exp_avg;     // [part rows, ...] fp32
  torch::Tensor exp_avg_sq;  // [part rows, ...] fp32
  bool master_is_param = false;
};

namespace {

void CheckOptions(const OptimizerOptions& o, const cluster::Communicator* dp) {
  auto bad = [](const std::string& what) { throw ConfigError("optimizer: " + what); };
  if (!dp) bad("the DP communicator is null; pass the DP group (a 1-rank one without data parallelism)");
  if (!(o.beta1 >= 0 && o.beta1 < 1)) bad("beta1 = " + std::to_string(o.beta1) + " is outside [0, 1)");
  if (!(o.beta2 >= 0 && o.beta2 < 1)) bad("beta2 = " + std::to_string(o.beta2) + " is outside [0, 1)");
  if (!(o.eps > 0)) bad("eps = " + std::to_string(o.eps) + " must be > 0");
  if (!(o.weight_decay >= 0)) bad("weight_decay = " + std::to_string(o.weight_decay) + " must be >= 0");
  if (o.bucket_bytes <= 0) bad("bucket_bytes = " + std::to_string(o.bucket_bytes) + " must be > 0");
}

void CheckParams(const std::vector<TrainableParam>& params) {
  if (params.empty()) {
    throw ConfigError("optimizer: no trainable parameters; check the freeze settings (everything is frozen?)");
  }
  const torch::Tensor& first = params.front().param;
  std::set<std::string> names;
  std::set<const void*> impls;
  for (const TrainableParam& p : params) {
    auto bad = [&](const std::string& what) { throw ConfigError("optimizer: parameter '" + p.name + "': " + what); };
    if (!p.param.defined()) bad("undefined tensor");
    if (!names.insert(p.name).second) bad("given twice");
    if (!impls.insert(p.param.unsafeGetTensorImpl()).second) bad("the same tensor as another parameter");
    const auto t = p.param.scalar_type();
    if (t != torch::kFloat32 && t != torch::kBFloat16 && t != torch::kHalf) {
      bad(std::string("dtype ") + c10::toString(t) + "; expected float32, bfloat16 or float16");
    }
    if (t != first.scalar_type() || p.param.device() != first.device()) {
      bad(std::string("dtype ") + c10::toString(t) + " on " + p.param.device().str() + " but '" + params.front().name +
          "' is " + c10::toString(first.scalar_type()) + " on " + first.device().str() +
          "; all trainable parameters must share dtype and device");
    }
    if (!p.param.requires_grad() || !p.param.is_leaf()) bad("not a leaf tensor that requires grad");
    if (p.param.dim() < 1 || p.param.numel() == 0) {
      bad("shape " + checkpoint::ShapeString(p.param.sizes()) + "; expected at least one dim and one element");
    }
    if (!p.param.is_contiguous()) bad("not contiguous");
    const int64_t dims = p.param.dim();
    if (static_cast<int64_t>(p.global_shape.size()) != dims || static_cast<int64_t>(p.tp_offsets.size()) != dims) {
      bad("global_shape " + checkpoint::ShapeString(p.global_shape) + " and tp_offsets " +
          checkpoint::ShapeString(p.tp_offsets) + " must have the local tensor's " + std::to_string(dims) + " dims");
    }
    if (p.tp_split_dim < -1 || p.tp_split_dim >= dims) bad("tp_split_dim " + std::to_string(p.tp_split_dim));
    for (int64_t d = 0; d < dims; ++d) {
      const int64_t local = p.param.size(d);
      const bool split = d == p.tp_split_dim;
      if (split ? (p.tp_offsets[d] < 0 || p.tp_offsets[d] + local > p.global_shape[d])
                : (p.tp_offsets[d] != 0 || local != p.global_shape[d])) {
        bad("local shape " + checkpoint::ShapeString(p.param.sizes()) + " at offsets " +
            checkpoint::ShapeString(p.tp_offsets) + " does not fit global shape " +
            checkpoint::ShapeString(p.global_shape) + " split along dim " + std::to_string(p.tp_split_dim));
      }
    }
  }
}

}  // namespace

DistributedOptimizer::DistributedOptimizer(std::vector<TrainableParam> params, cluster::Communicator* dp,
                                           cluster::Communicator* tp, OptimizerOptions options)
    : options_(options), dp_(dp), tp_(tp && tp->size() > 1 ? tp : nullptr) {
  CheckOptions(options_, dp_);
  CheckParams(params);
  std::vector<internal::ParamSlot> slots;
  for (const TrainableParam& p : params) {
    internal::ParamSlot s;
    s.name = p.name;
    s.param = p.param;
    s.rows = p.param.size(0);
    s.row_numel = p.param.numel() / s.rows;
    slots.push_back(std::move(s));
  }
  const int parts = options_.zero1 ? dp_->size() : 1;
  sync_ = std::make_unique<internal::GradBuckets>(std::move(slots), dp_, parts, options_.bucket_bytes,
                                                  options_.poll_in_backward, options_.tracer);
  torch::NoGradGuard no_grad;
  int64_t elements = 0, local_rows = 0;
  for (const internal::ParamSlot& s : sync_->slots()) local_rows += s.part_rows * s.row_numel;
  // One contiguous buffer per moment for this rank's whole ZeRO-1 shard: one allocation, views per parameter.
  const auto f32 = params.front().param.options().dtype(torch::kFloat32);
  flat_exp_avg_ = torch::zeros({local_rows}, f32);
  flat_exp_avg_sq_ = torch::zeros({local_rows}, f32);
  int64_t offset = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    const internal::ParamSlot& s = sync_->slots()[i];
    State st;
    st.p = std::move(params[i]);
    torch::Tensor rows = st.p.param.detach().narrow(0, s.part_row_lo, s.part_rows);
    st.master_is_param = rows.scalar_type() == torch::kFloat32;
    st.master = st.master_is_param ? rows : rows.to(torch::kFloat32).clone();
    const int64_t n = st.master.numel();
    st.exp_avg = flat_exp_avg_.narrow(0, offset, n).view(st.master.sizes());
    st.exp_avg_sq = flat_exp_avg_sq_.narrow(0, offset, n).view(st.master.sizes());
    offset += n;
    elements += st.p.param.numel();
    state_.push_back(std::move(st));
    state_steps_.push_back(torch::zeros({}, f32));
  }
  if (dp_->rank() == 0 && (!tp_ || tp_->rank() == 0)) {
    LOG(INFO) << "optimizer: " << (options_.fused ? "fused " : "") << "AdamW on " << state_.size() << " parameters ("
              << elements << " local elements, " << c10::toString(state_.front().p.param.scalar_type()) << "), "
              << sync_->buckets().size() << " bucket(s) (cap " << options_.bucket_bytes << " B), ZeRO-1 "
              << (options_.zero1 ? "on" : "off") << " over dp=" << dp_->size() << ", overlap "
              << (options_.overlap ? "on" : "off");
  }
}

DistributedOptimizer::~DistributedOptimizer() = default;

void DistributedOptimizer::ZeroGrad() {
  for (State& st : state_) st.p.param.mutable_grad().reset();
}

void DistributedOptimizer::PrepareBackward(bool last_micro_step) {
  if (last_micro_step) sync_->Arm(options_.overlap);
}

torch::Tensor DistributedOptimizer::GradNormSquared(const std::vector<torch::Tensor>& grads) {
  torch::NoGradGuard no_grad;
  const bool count_replicated = !tp_ || tp_->rank() == 0;  // TP-replicated grads are equal on every TP rank
  torch::Tensor sum = torch::zeros({1}, grads.front().options().dtype(torch::kFloat64));
  for (size_t i = 0; i < grads.size(); ++i) {
    if (grads[i].numel() == 0) continue;
    if (state_[i].p.tp_split_dim < 0 && !count_replicated) continue;
    sum += grads[i].square().sum(torch::kFloat64);
  }
  // With ZeRO-1 each DP rank holds the sums of other rows; without it every DP rank has the same
  // full grads.
  if (sync_->parts() > 1) dp_->AllReduce(sum, cluster::ReduceOp::kSum);
  if (tp_) tp_->AllReduce(sum, cluster::ReduceOp::kSum);
  return sum;
}

double DistributedOptimizer::WaitGradReduction() {
  if (!reduction_waited_) {
    reduction_wait_ms_ = sync_->Finish();
    reduction_waited_ = true;
  }
  return reduction_wait_ms_;
}

StepStats DistributedOptimizer::Step(double lr, const torch::Tensor& guard) {
  StepStats stats;
  stats.sync_wait_ms = WaitGradReduction();
  reduction_waited_ = false;
  const auto t0 = std::chrono::steady_clock::now();
  cluster::Tracer* trace = options_.tracer;
  stats.buckets = static_cast<int>(sync_->buckets().size());
  stats.buckets_launched_in_backward = sync_->launched_in_backward();
  stats.buckets_completed_in_backward = sync_->completed_in_backward();

  std::vector<torch::Tensor> grads;  // this rank's rows of the DP-summed gradients, fp32
  for (size_t i = 0; i < state_.size(); ++i) grads.push_back(sync_->ReducedRows(static_cast<int>(i)));
  torch::NoGradGuard no_grad;
  torch::Tensor norm, found_inf, coef;
  {
    cluster::Tracer::Span span(trace, "grad norm + clip", "optimizer");
    norm = GradNormSquared(grads).sqrt();  // [1] float64 on the parameters' device
    // 1.0 where the update must not happen (AdamW's found_inf input is a float32 scalar).
    torch::Tensor bad = norm.isfinite().logical_not();
    if (guard.defined()) bad = bad.logical_or(guard.reshape({1}).isfinite().logical_not());
    found_inf = bad.to(torch::kFloat32).reshape({});
    if (options_.clip_norm > 0) {
      // As torch.nn.utils.clip_grad_norm_: scale by clip / (norm + 1e-6) when that is below 1 (x 1.0 is exact).
      coef = (options_.clip_norm / (norm + 1e-6)).clamp_max(1.0);
      for (torch::Tensor& g : grads) g.mul_(coef);
    }
  }

  // AdamW as torch.optim.AdamW (decoupled decay, bias correction), on this rank's rows only.
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double next = static_cast<double>(step_ + 1);
  const double bias1 = 1.0 - std::pow(b1, next);
  const double bias2 = 1.0 - std::pow(b2, next);
  bool skipped_on_host = false;
  {
    cluster::Tracer::Span span(trace, "adamw", "optimizer");
    if (options_.fused) {
      // Two calls, as torch.optim.AdamW's two parameter groups: with weight decay and without. The kernel returns
      // at once when found_inf is 1.
      for (const bool decayed : {true, false}) {
        std::vector<torch::Tensor> masters, gs, avgs, avg_sqs, steps;
        for (size_t i = 0; i < state_.size(); ++i) {
          State& st = state_[i];
          if (st.master.numel() == 0 || (options_.weight_decay > 0 && st.p.weight_decay) != decayed) continue;
          state_steps_[i].fill_(next);
          masters.push_back(st.master);
          gs.push_back(grads[i]);
          avgs.push_back(st.exp_avg);
          avg_sqs.push_back(st.exp_avg_sq);
          steps.push_back(state_steps_[i]);
        }
        if (masters.empty()) continue;
        at::_fused_adamw_(masters, gs, avgs, avg_sqs, /*max_exp_avg_sqs=*/{}, steps, lr, b1, b2,
                          decayed ? options_.weight_decay : 0.0, options_.eps, /*amsgrad=*/false, /*maximize=*/false,
                          /*grad_scale=*/std::nullopt, found_inf);
      }
    } else {
      // The reference path reads the check on the host.
      skipped_on_host = found_inf.item<float>() != 0.0f;
      for (size_t i = 0; i < state_.size() && !skipped_on_host; ++i) {
        State& st = state_[i];
        if (st.master.numel() == 0) continue;
        const torch::Tensor& g = grads[i];
        if (options_.weight_decay > 0 && st.p.weight_decay) st.master.mul_(1.0 - lr * options_.weight_decay);
        st.exp_avg.mul_(b1).add_(g, 1.0 - b1);
        st.exp_avg_sq.mul_(b2).addcmul_(g, g, 1.0 - b2);
        const torch::Tensor denom = (st.exp_avg_sq.sqrt() / std::sqrt(bias2)).add_(options_.eps);
        st.master.addcdiv_(st.exp_avg, denom, -lr / bias1);
      }
    }
  }

  {
    // A skipped update leaves the masters as they were, so gathering them is a no-op on the parameters.
    cluster::Tracer::Span span(trace, "all-gather params", "optimizer");
    if (sync_->parts() > 1) {
      sync_->GatherParams([this](int i) { return state_[i].master; });
    } else {
      for (State& st : state_) {
        if (!st.master_is_param) st.p.param.detach().copy_(st.master);
      }
    }
  }
  // The step's one read-back.
  std::vector<torch::Tensor> read = {norm.reshape({1}), found_inf.to(torch::kFloat64).reshape({1})};
  if (guard.defined()) read.push_back(guard.to(torch::kFloat64).reshape({1}));
  const torch::Tensor host = torch::cat(read).cpu();
  const double* v = host.data_ptr<double>();
  stats.grad_norm = v[0];
  stats.skipped = skipped_on_host || v[1] != 0.0;
  stats.guard = guard.defined() ? v[2] : 0.0;
  stats.clipped = options_.clip_norm > 0 && options_.clip_norm / (stats.grad_norm + 1e-6) < 1.0;
  if (!stats.skipped) ++step_;
  stats.optimizer_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  VLOG(1) << "optimizer step " << step_ << ": lr " << lr << ", grad norm " << stats.grad_norm
          << (stats.clipped ? " (clipped)" : "") << (stats.skipped ? " (SKIPPED: not finite)" : "") << ", sync wait "
          << stats.sync_wait_ms << " ms, update " << stats.optimizer_ms << " ms, " << stats.buckets_launched_in_backward
          << "/" << stats.buckets << " buckets launched and " << stats.buckets_completed_in_backward
          << " completed in backward";
  return stats;
}

std::vector<checkpoint::LocalShard> DistributedOptimizer::StateShards() const {
  std::vector<checkpoint::LocalShard> shards;
  const int tp_rank = tp_ ? tp_->rank() : 0;
  for (size_t i = 0; i < state_.size(); ++i) {
    const State& st = state_[i];
    const internal::ParamSlot& s = sync_->slots()[i];
    if (st.p.tp_split_dim < 0 && tp_rank != 0) continue;    // replicated over TP: TP rank 0 stores it
    if (sync_->parts() == 1 && dp_->rank() != 0) continue;  // replicated over DP: DP rank 0 stores it
    if (s.part_rows == 0) continue;                         // ZeRO-1 left this rank no rows
    std::vector<int64_t> offsets = st.p.tp_offsets;
    offsets[0] += s.part_row_lo;
    for (const auto& [prefix, t] : {std::pair<const char*, const torch::Tensor*>{"optim.master.", &st.master},
                                    {"optim.exp_avg.", &st.exp_avg},
                                    {"optim.exp_avg_sq.", &st.exp_avg_sq}}) {
      shards.push_back(checkpoint::LocalShard{prefix + st.p.name, t->detach(), st.p.global_shape, offsets});
    }
  }
  return shards;
}

void DistributedOptimizer::LoadState(const checkpoint::CheckpointReader& reader, int64_t step) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < state_.size(); ++i) {
    State& st = state_[i];
    const internal::ParamSlot& s = sync_->slots()[i];
    const std::string master = "optim.master." + st.p.name;
    const std::string avg = "optim.exp_avg." + st.p.name;
    const std::string avg_sq = "optim.exp_avg_sq." + st.p.name;
    for (const std::string& n : {master, avg, avg_sq}) reader.ExpectTensor(n, st.p.global_shape, torch::kFloat32);
    // The whole local tensor of the masters sets the parameter (no all-gather needed), its rows the
    // master.
    const auto cpu32 = torch::TensorOptions().dtype(torch::kFloat32);
    torch::Tensor full = torch::empty(st.p.param.sizes(), cpu32);
    reader.ReadInto(master, st.p.tp_offsets, full);
    st.p.param.detach().copy_(full);
    if (!st.master_is_param) st.master.copy_(full.narrow(0, s.part_row_lo, s.part_rows));
    if (s.part_rows == 0) continue;
    std::vector<int64_t> offsets = st.p.tp_offsets;
    offsets[0] += s.part_row_lo;
    torch::Tensor rows = torch::empty(st.master.sizes(), cpu32);
    reader.ReadInto(avg, offsets, rows);
    st.exp_avg.copy_(rows);
    reader.ReadInto(avg_sq, offsets, rows);
    st.exp_avg_sq.copy_(rows);
  }
  step_ = step;
}

int DistributedOptimizer::Index(const std::string& name) const {
  for (size_t i = 0; i < state_.size(); ++i) {
    if (state_[i].p.name == name) return static_cast<int>(i);
  }
  throw ConfigError("optimizer: no trainable parameter named '" + name + "'");
}

torch::Tensor DistributedOptimizer::master(const std::string& name) const { return state_[Index(name)].master; }
torch::Tensor DistributedOptimizer::exp_avg(const std::string& name) const { return state_[Index(name)].exp_avg; }
torch::Tensor DistributedOptimizer::exp_avg_sq(const std::string& name) const { return state_[Index(name)].exp_avg_sq; }

}  // namespace lcl::optim
