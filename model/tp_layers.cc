// Tensor-parallel layers: each collective is an autograd Function so that backward issues the dual collective.
#include "model/tp_layers.h"

#include "cluster/log.h"

#include "cluster/errors.h"

namespace lcl::model {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// A communicator pointer travels through AutogradContext::saved_data (an IValue map) as an integer: the layers own
// a TpGroup whose communicator outlives every graph built through them.
int64_t PackComm(cluster::Communicator* comm) { return reinterpret_cast<int64_t>(comm); }
TpGroup UnpackComm(AutogradContext* ctx) {
  return TpGroup{reinterpret_cast<cluster::Communicator*>(ctx->saved_data["comm"].toInt())};
}

torch::Tensor AllReduceSum(const torch::Tensor& x, TpGroup tp) {
  torch::Tensor out = x.contiguous().clone();  // AllReduce is in place; never overwrite the caller's tensor
  tp.comm->AllReduce(out, cluster::ReduceOp::kSum);
  return out;
}

struct CopyToTpFn : public torch::autograd::Function<CopyToTpFn> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, cluster::Communicator* comm) {
    ctx->saved_data["comm"] = PackComm(comm);
    return x;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {AllReduceSum(grads[0], UnpackComm(ctx)), torch::Tensor()};
  }
};

struct ReduceFromTpFn : public torch::autograd::Function<ReduceFromTpFn> {
  static torch::Tensor forward(AutogradContext*, const torch::Tensor& x, cluster::Communicator* comm) {
    return AllReduceSum(x, TpGroup{comm});
  }
  static variable_list backward(AutogradContext*, variable_list grads) { return {grads[0], torch::Tensor()}; }
};

struct GatherFromTpFn : public torch::autograd::Function<GatherFromTpFn> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, cluster::Communicator* comm) {
    ctx->saved_data["comm"] = PackComm(comm);
    const int64_t n = comm->size();
    std::vector<int64_t> shape = {n};
    for (int64_t s : x.sizes()) shape.push_back(s);
    torch::Tensor gathered = torch::empty(shape, x.options());  // [tp, .., local]
    torch::Tensor local = x.contiguous();
    comm->AllGather(local, gathered);
    std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
    out_shape.back() *= n;
    return gathered.movedim(0, -2).reshape(out_shape);  // [.., tp * local]
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    TpGroup tp = UnpackComm(ctx);
    const int64_t local = grads[0].size(-1) / tp.size();
    return {grads[0].narrow(-1, tp.rank() * local, local).contiguous(), torch::Tensor()};
  }
};

int64_t LocalSize(int64_t full, TpGroup tp, const char* what) {
  if (full % tp.size() != 0) {
    throw ConfigError(std::string(what) + "=" + std::to_string(full) +
                      " is not divisible by tp=" + std::to_string(tp.size()) + "; choose a tp that divides it");
  }
  return full / tp.size();
}

// Megatron's vocab-parallel cross entropy: forward reduces max, target logit and sum(exp) over the TP group
// ([N] each); backward needs only local values.
struct VocabParallelCeFn : public torch::autograd::Function<VocabParallelCeFn> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& logits_in, const torch::Tensor& targets,
                               cluster::Communicator* comm, int64_t ignore_index) {
    TpGroup tp{comm};
    torch::Tensor logits = logits_in.to(torch::kFloat32);  // [N, Vl]
    const int64_t local_vocab = logits.size(1);
    const int64_t start = tp.rank() * local_vocab;
    torch::Tensor max = std::get<0>(logits.max(1));  // [N]
    if (tp.active()) comm->AllReduce(max, cluster::ReduceOp::kMax);
    torch::Tensor shifted = logits - max.unsqueeze(1);  // [N, Vl], <= 0
    torch::Tensor valid = targets.ne(ignore_index);
    torch::Tensor local_t = targets - start;
    torch::Tensor in_range = valid & local_t.ge(0) & local_t.lt(local_vocab);                        // [N] bool
    torch::Tensor index = torch::where(in_range, local_t, torch::zeros_like(local_t)).unsqueeze(1);  // [N, 1]
    torch::Tensor target_logit = shifted.gather(1, index).squeeze(1) * in_range.to(torch::kFloat32);
    torch::Tensor exp = shifted.exp();
    torch::Tensor sum_exp = exp.sum(1);  // [N]
    if (tp.active()) {
      comm->AllReduce(target_logit, cluster::ReduceOp::kSum);
      comm->AllReduce(sum_exp, cluster::ReduceOp::kSum);
    }
    torch::Tensor loss = (sum_exp.log() - target_logit) * valid.to(torch::kFloat32);
    ctx->save_for_backward({exp.div_(sum_exp.unsqueeze(1)), index, in_range, valid});
    ctx->saved_data["dtype"] = static_cast<int64_t>(logits_in.scalar_type());
    return loss;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const torch::Tensor& softmax = saved[0];                    // [N, Vl]
    torch::Tensor g = grads[0] * saved[3].to(torch::kFloat32);  // [N], zero where ignored
    torch::Tensor grad = softmax * g.unsqueeze(1);
    grad.scatter_add_(1, saved[1], -(g * saved[2].to(torch::kFloat32)).unsqueeze(1));
    auto dtype = static_cast<torch::ScalarType>(ctx->saved_data["dtype"].toInt());
    return {grad.to(dtype), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

std::string ToString(const TpSplit& split) {
  switch (split.kind) {
    case TpSplit::Kind::kReplicated:
      return "replicated";
    case TpSplit::Kind::kColumn:
      return "column(dim " + std::to_string(split.dim) + ")";
    case TpSplit::Kind::kRow:
      return "row(dim " + std::to_string(split.dim) + ")";
    case TpSplit::Kind::kVocab:
      return "vocab(dim " + std::to_string(split.dim) + ")";
  }
  return "unknown";
}

TpSplit TpModule::SplitOf(const std::string& name) const {
  auto it = splits_.find(name);
  CHECK(it != splits_.end()) << "TP layer " << this->name() << " has parameter '" << name
                             << "' registered without a split; register it with RegisterSplitParameter";
  return it->second;
}

torch::Tensor TpModule::RegisterSplitParameter(const std::string& name, torch::Tensor tensor, TpSplit split) {
  CHECK(split.split() ? split.dim >= 0 && split.dim < tensor.dim() : split.dim == -1)
      << "parameter '" << name << "' of shape " << tensor.sizes() << " cannot be split as " << ToString(split);
  splits_[name] = split;
  return torch::nn::Module::register_parameter(name, std::move(tensor));
}

std::vector<ParamPlacement> TpPlacements(const torch::nn::Module& root) {
  std::vector<ParamPlacement> out;
  // Module::apply visits modules in the order named_parameters() does (pre-order, registration order).
  root.apply([&out](const std::string& prefix, const torch::nn::Module& module) {
    const auto* layer = dynamic_cast<const TpModule*>(&module);
    for (const auto& item : module.named_parameters(/*recurse=*/false)) {
      ParamPlacement p;
      p.name = prefix.empty() ? item.key() : prefix + "." + item.key();
      p.param = item.value();
      p.split = layer != nullptr ? layer->SplitOf(item.key()) : TpSplit::Replicated();
      p.global_shape = p.param.sizes().vec();
      p.offsets.assign(p.param.dim(), 0);
      if (p.split.split() && layer->tp.size() > 1) {
        // LocalSize made every slice equal: rank r holds [r * local, (r + 1) * local).
        const int64_t local = p.param.size(p.split.dim);
        p.global_shape[p.split.dim] = local * layer->tp.size();
        p.offsets[p.split.dim] = local * layer->tp.rank();
      }
      out.push_back(std::move(p));
    }
  });
  return out;
}

torch::Tensor CopyToTpRegion(const torch::Tensor& x, TpGroup tp) {
  return tp.active() ? CopyToTpFn::apply(x, tp.comm) : x;
}

torch::Tensor ReduceFromTpRegion(const torch::Tensor& x, TpGroup tp) {
  return tp.active() ? ReduceFromTpFn::apply(x, tp.comm) : x;
}

torch::Tensor GatherFromTpRegion(const torch::Tensor& x, TpGroup tp) {
  return tp.active() ? GatherFromTpFn::apply(x, tp.comm) : x;
}

ColumnParallelLinearImpl::ColumnParallelLinearImpl(TpGroup tp_group, int64_t in_features, int64_t out_features,
                                                   bool with_bias, bool vocab_output)
    : TpModule(tp_group) {
  const int64_t local_out =
      LocalSize(out_features, tp, vocab_output ? "vocab_size" : "output features of a column-parallel linear");
  weight = RegisterSplitParameter("weight", torch::randn({local_out, in_features}) * 0.02,
                                  vocab_output ? TpSplit::Vocab() : TpSplit::Column());
  if (with_bias) bias = RegisterSplitParameter("bias", torch::zeros({local_out}), TpSplit::Column());
}

torch::Tensor ColumnParallelLinearImpl::forward(const torch::Tensor& x) {
  return torch::nn::functional::linear(CopyToTpRegion(x, tp), weight, bias);
}

RowParallelLinearImpl::RowParallelLinearImpl(TpGroup tp_group, int64_t in_features, int64_t out_features,
                                             bool with_bias)
    : TpModule(tp_group) {
  const int64_t local_in = LocalSize(in_features, tp, "input features of a row-parallel linear");
  weight = RegisterSplitParameter("weight", torch::randn({out_features, local_in}) * 0.02, TpSplit::Row());
  // Added once after the reduction, so every rank holds the whole bias.
  if (with_bias) bias = RegisterSplitParameter("bias", torch::zeros({out_features}), TpSplit::Replicated());
}

torch::Tensor RowParallelLinearImpl::forward(const torch::Tensor& x) {
  torch::Tensor y = ReduceFromTpRegion(torch::nn::functional::linear(x, weight), tp);
  return bias.defined() ? y + bias : y;
}

VocabParallelEmbeddingImpl::VocabParallelEmbeddingImpl(TpGroup tp_group, int64_t vocab_size, int64_t dim)
    : TpModule(tp_group) {
  const int64_t local = LocalSize(vocab_size, tp, "vocab_size");
  vocab_start_ = tp.rank() * local;
  weight = RegisterSplitParameter("weight", torch::randn({local, dim}) * 0.02, TpSplit::Vocab());
}

torch::Tensor VocabParallelEmbeddingImpl::forward(const torch::Tensor& ids) {
  if (!tp.active()) return torch::embedding(weight, ids);
  torch::Tensor local = ids - vocab_start_;
  torch::Tensor outside = local.lt(0) | local.ge(weight.size(0));
  torch::Tensor rows = torch::embedding(weight, local.masked_fill(outside, 0));  // [B, T, C]
  rows = rows.masked_fill(outside.unsqueeze(-1), 0.0);
  return ReduceFromTpRegion(rows, tp);
}

torch::Tensor VocabParallelCrossEntropy(const torch::Tensor& logits, const torch::Tensor& targets, TpGroup tp,
                                        int64_t ignore_index) {
  TORCH_CHECK(logits.dim() == 2 && targets.dim() == 1 && logits.size(0) == targets.size(0),
              "VocabParallelCrossEntropy: expected logits [N, V/tp] and targets [N], got ", logits.sizes(), " and ",
              targets.sizes());
  return VocabParallelCeFn::apply(logits, targets, tp.comm, ignore_index);
}

}  // namespace lcl::model
