// The training loop and the evaluation entry point; see trainer.h for the step's order.
#include "trainer/trainer.h"

#include <torch/torch.h>
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <set>

#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/checkpointer.h"
#include "cluster/cluster_context.h"
#include "cluster/errors.h"
#include "cluster/exit_codes.h"
#include "cluster/log.h"
#include "cluster/signals.h"
#include "optim/optimizer.h"
#include "sampler/pairs_file.h"
#include "sampler/instruct.h"
#include "sampler/mix.h"
#include "sampler/packing.h"
#include "sampler/pipeline.h"
#include "sampler/prefetcher.h"
#include "trainer/evaluator.h"
#include "trainer/feature_cache.h"
#include "trainer/metrics.h"
#include "trainer/run_options.h"
#include "trainer/run_setup.h"

namespace lcl::trainer {
namespace {

using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

// Counts positions whose label enters the loss (HF shift: labels[:, 1:] != -100). The micro-batch is on the host
// (the pipeline's output), so this reads no device.
int64_t LabelledTokens(const sampler::MicroBatch& mb) {
  return mb.labels.slice(1, 1).ne(sampler::kIgnoreIndex).sum().item<int64_t>();
}

// This process's peak resident set size in KiB (Linux reports ru_maxrss in KiB).
int64_t PeakRssKib() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss);
}

// A tiny all-reduce of host numbers over a communicator that may want device tensors; the sums stay on the device
// (read them with ReadBack when the step is over).
torch::Tensor SumOnDevice(cluster::Communicator& comm, torch::Device device, const std::vector<double>& values) {
  torch::Tensor t = torch::tensor(values, torch::kFloat64).to(device);
  comm.AllReduce(t, cluster::ReduceOp::kSum);
  return t;
}

std::vector<double> ReadBack(const torch::Tensor& t) {
  const torch::Tensor host = t.to(torch::kCPU, torch::kFloat64).contiguous();
  return std::vector<double>(host.data_ptr<double>(), host.data_ptr<double>() + host.numel());
}

std::vector<double> SumOver(cluster::Communicator& comm, torch::Device device, const std::vector<double>& values) {
  return ReadBack(SumOnDevice(comm, device, values));
}

// What one optimizer step takes, over every DP rank: labelled tokens (the loss's denominator), input tokens (text
// and image), images, and the positions fed (rows x length: padding included), as a [4] float64 tensor on the device:
// the loss divides by element 0 without the host waiting for the all-reduce.
torch::Tensor CountOverDp(const std::vector<sampler::MicroBatch>& micro, cluster::Communicator& dp,
                          torch::Device device) {
  int64_t labelled = 0, tokens = 0, images = 0, positions = 0;
  for (const sampler::MicroBatch& mb : micro) {
    labelled += LabelledTokens(mb);
    tokens += mb.attention_mask.ne(0).sum().item<int64_t>();
    images += mb.images.size(0);
    positions += mb.attention_mask.numel();
  }
  return SumOnDevice(dp, device, {double(labelled), double(tokens), double(images), double(positions)});
}

struct Data {
  std::unique_ptr<sampler::PairsTable> table;
  std::unique_ptr<sampler::TrainEpisodes> episodes;
  std::vector<std::unique_ptr<sampler::InstructFile>> mix_files;  // LCL-Mix's instruction files (data.mix_files)
  std::unique_ptr<sampler::MixedEpisodes> mix;                    // null without them
  std::unique_ptr<sampler::ImageLoader> loader;
  std::unique_ptr<sampler::EpisodePipeline> pipeline;
};

Data BuildData(const TrainConfig& c, const RunModel& m) {
  if (c.data().root().empty()) {
    throw ConfigError("data.root is empty; training needs an ImageNet-style root (`lcl data synth` makes one)");
  }
  // Said here, by name: otherwise every image fails to load and the run stops over the bad-image limit.
  std::error_code ec;
  const std::filesystem::path root(c.data().root());
  if (!std::filesystem::is_directory(root, ec) ||
      std::filesystem::directory_iterator(root, ec) == std::filesystem::directory_iterator()) {
    throw DataError("data.root '" + c.data().root() + "' " +
                    (!std::filesystem::exists(root, ec)         ? "does not exist"
                     : !std::filesystem::is_directory(root, ec) ? "is not a directory"
                                                                : "is an empty directory") +
                    "; point data.root at an ImageNet-style root (train/<wnid>/*.JPEG; `lcl data synth` makes one)");
  }
  Data d;
  d.table = std::make_unique<sampler::PairsTable>(sampler::PairsTable::Read(DataPathsOf(c).train_pairs));
  CheckTrainingTemplates(c);
  d.episodes = std::make_unique<sampler::TrainEpisodes>(*d.table, EpisodeOptionsOf(c));
  d.loader = std::make_unique<sampler::ImageLoader>(c.data().root(), ImageSpecOf(c, m.config.vision.image_size),
                                                    c.data().max_bad_fraction());
  const sampler::PromptConfig prompt = PromptOptionsOf(c, m.config.vision.num_patches(), EpisodeUse::kTraining);
  const std::vector<MixFileOption> mix = MixFilesOf(c);
  if (mix.empty()) {
    d.pipeline = std::make_unique<sampler::EpisodePipeline>(*d.episodes, *m.tokenizer, prompt, *d.loader);
    return d;
  }
  // Every record is checked here, before the first step: a bad file stops the run with its record, not mid-run.
  std::vector<sampler::MixSource> sources;
  for (const MixFileOption& f : mix) {
    d.mix_files.push_back(
        std::make_unique<sampler::InstructFile>(sampler::InstructFile::Read(f.path, c.data().mix_image_root())));
    sources.push_back({d.mix_files.back().get(), f.probability});
    LOG(INFO) << "LCL-Mix: " << f.path << " (" << d.mix_files.back()->size() << " conversations) at probability "
              << f.probability;
  }
  d.mix = std::make_unique<sampler::MixedEpisodes>(*d.episodes, std::move(sources), c.seed());
  const sampler::MixedEpisodes* stream = d.mix.get();
  d.pipeline = std::make_unique<sampler::EpisodePipeline>(
      [stream](const sampler::EpisodeKey& k) { return stream->Build(k.epoch, k.index); },
      [stream](int c) { return stream->PoolOf(c); }, *m.tokenizer, prompt, *d.loader);
  return d;
}

// The run's training state as checkpoint shards + metadata.
checkpoint::CheckpointState SnapshotState(RunModel& m, lcl::optim::DistributedOptimizer& opt,
                                          cluster::ClusterContext& ctx, const sampler::SamplerState& sampler,
                                          int64_t step, const std::string& config_text) {
  checkpoint::CheckpointState s;
  s.shards = ModelShards(*m.model, ctx.grid());
  for (checkpoint::LocalShard& shard : opt.StateShards()) s.shards.push_back(std::move(shard));
  s.sampler.set_epoch(static_cast<int64_t>(sampler.epoch));
  s.sampler.set_next_index(static_cast<int64_t>(sampler.next_index));
  s.optimizer_step = opt.step();
  s.metrics_step = step;
  s.config = config_text;
  s.metadata["model_config_json"] = m.config.ToJson().dump(2);
  s.rng_cpu = CpuRngState();
  return s;
}

class TrainLoop {
 public:
  TrainLoop(cluster::MpiSession& mpi, const LoadedConfig& loaded, const std::string& resume)
      : loaded_(loaded), c_(loaded.config) {
    RunSetup run = SetUpRun(mpi, loaded_);
    ctx_ = std::move(run.ctx);
    model_ = std::move(run.model);
    data_ = BuildData(c_, model_);
    features_ = OpenFeatureCache(c_, model_);
    if (features_) tower_ = TowerOf(model_);
    plan_ = PlanRun(loaded_, mpi.size(), data_.episodes->EpisodesPerEpoch());
    // The evaluation inputs (test pairs, ISEKAI file, index) are read now, so a bad one stops the run before its
    // first step rather than at the first evaluation.
    if (c_.eval().every_steps() > 0 || c_.eval().at_end()) {
      evaluator_ = std::make_unique<Evaluator>(*ctx_, model_, loaded_);
    }
    if (plan_.total_steps < 1) throw ConfigError(loaded_.Where("schedule.total_steps") + ": no step to train");

    optimizer_ = std::make_unique<lcl::optim::DistributedOptimizer>(
        TrainableParams(*model_.model, ctx_->grid(), c_.optimizer().projector_only()), &ctx_->dp(), &ctx_->tp(),
        OptimizerOptionsOf(c_, &ctx_->tracer()));
    config_text_ = ConfigText(c_);
    trace_steps_ = ParseStepList(c_.logging().trace_steps());
    ctx_->tracer().NameThread("main");

    checkpoint::CheckpointOptions co = CheckpointOptionsOf(c_, ctx_->grid().shape());
    // The writer reads the live parameters and moments while the next forward and backward run;
    // TrainStep calls ReleaseState() before the optimizer modifies them.
    co.defer_snapshot = true;
    LOG_IF(WARNING, co.phase_delay.count() > 0)
        << "checkpoint.test_phase_delay_ms=" << co.phase_delay.count()
        << ": checkpoint saves pause between phases (a test seam; keep it 0 in real runs)";
    if (ctx_->grid().rank() == 0) checkpoint::Checkpointer::CleanStaleTmp(c_.run_dir());
    ckpt_ = std::make_unique<checkpoint::Checkpointer>(ctx_->grid().world_comm(), co, &ctx_->watchdog());
    Restore(resume);
    if (ctx_->grid().rank() == 0) {
      MetricsOptions mo;
      mo.tensorboard = c_.logging().tensorboard();
      metrics_ = std::make_unique<MetricsWriter>(MetricsWriter::Open(c_.run_dir(), step_, mo));
    }
    LOG(INFO) << "train: world " << plan_.world_size << " = dp " << plan_.dp << " x tp " << plan_.tp << ", "
              << (model_.device.is_cuda() ? "cuda" : "cpu") << " "
              << (model_.dtype == torch::kBFloat16 ? "bf16" : "fp32") << ", global batch " << plan_.global_batch
              << " = micro " << plan_.micro_batch << " x accum " << plan_.grad_accum << " x dp " << plan_.dp << ", "
              << plan_.total_steps << " steps (" << plan_.episodes_per_epoch << " episodes per epoch), start at step "
              << step_;
  }

  int Run() {
    cluster::SignalWatcher& signals = signals_;
    const uint64_t per_epoch = plan_.episodes_per_epoch;
    const sampler::SamplerState start = sampler_;
    sampler::Prefetcher<sampler::MicroBatch> prefetch(
        [&](uint64_t k) {
          const uint64_t micro = c_.data().fixed_batch() ? k % uint64_t(plan_.grad_accum) : k;
          cluster::Tracer& trace = ctx_->tracer();
          if (trace.enabled()) trace.NameThread("prefetch");
          cluster::Tracer::Span span(&trace, "build micro-batch " + std::to_string(k), "data");
          sampler::MicroBatch mb = data_.pipeline->Build(sampler::MicroBatchKeys(
              start, plan_.global_batch, plan_.micro_batch, ctx_->grid().dp_rank(), plan_.dp, per_epoch, micro));
          if (c_.batch().pack_tokens() > 0) mb = sampler::PackMicroBatch(mb, c_.batch().pack_tokens());
          return mb;
        },
        c_.data().workers(), c_.data().prefetch() * plan_.grad_accum);
    const int64_t first_step = step_;
    ProgressOptions po;
    po.plain_every = c_.logging().every_steps();
    ProgressLine progress(plan_.total_steps, po);
    // A signal during set-up: no step has run, so what there is to commit is already committed (the resumed
    // step, or nothing on a fresh start); exit as preempted at once rather than train a step first.
    if (const int early = static_cast<int>(ctx_->control().Max(signals.Pending())); early != 0) {
      LOG(WARNING) << "signal " << early << " received before the first step: nothing new to save ("
                   << (step_ > 0 ? "the run resumes from step " + std::to_string(step_) : std::string("no step ran"))
                   << "); exiting with " << kExitPreempted << " so the job script can requeue";
      return kExitPreempted;
    }
    while (step_ < plan_.total_steps) {
      const bool traced = trace_steps_.count(step_ + 1) > 0;
      cluster::Tracer& trace = ctx_->tracer();
      trace.SetEnabled(traced);
      const auto step_start = Clock::now();
      const StepReport r = TrainStep(prefetch);
      ++step_;
      const auto boundary_start = Clock::now();
      sampler_ = sampler::Advance(sampler_, plan_.global_batch, per_epoch);
      const bool logged =
          step_ % c_.logging().every_steps() == 0 || step_ == plan_.total_steps || step_ == first_step + 1;
      // The largest rank's peak RSS; a collective, so every rank takes part on every logged step.
      const int64_t max_rss_kib = logged ? ctx_->control().Max(PeakRssKib()) : 0;
      // Bad images and over-long episodes over the DP ranks (the TP ranks of one DP rank load the same episodes):
      // also a collective.
      const FeatureCacheStats fc = features_ ? features_->stats() : FeatureCacheStats();
      const std::vector<double> data_counts =
          logged ? SumOver(ctx_->dp(), model_.device,
                           {double(data_.loader->bad()), double(too_long_episodes_), double(dropped_pairs_),
                            double(conversations_), double(fc.memory_hits + fc.disk_hits), double(fc.misses),
                            double(fc.corrupt), double(fc.write_failures)})
                 : std::vector<double>(8, 0.0);
      if (metrics_) {
        StepMetrics m = MetricsOf(r);
        if (logged) {
          m.bad_images = static_cast<int64_t>(data_counts[0]);
          m.extra["too_long_episodes"] = data_counts[1];
          m.extra["dropped_shot_pairs"] = data_counts[2];
          if (data_.mix) m.extra["mix_conversations"] = data_counts[3];
          if (features_) {  // over the DP ranks since this process started (TP ranks share their DP rank's images)
            m.extra["feature_cache_hits"] = data_counts[4];
            m.extra["feature_cache_misses"] = data_counts[5];
            m.extra["feature_cache_corrupt"] = data_counts[6];
            m.extra["feature_cache_write_failures"] = data_counts[7];
          }
          m.extra["max_rss_mb"] = static_cast<double>(max_rss_kib) / 1024.0;
          metrics_->WriteStep(m);
        }
        if (c_.logging().progress()) progress.Update(m);
      }
      // The boundary: a signal seen by any rank is known by all at the same step.
      const int signal = static_cast<int>(ctx_->control().Max(signals.Pending()));
      const bool last = step_ == plan_.total_steps;
      const bool periodic = c_.checkpoint().every_steps() > 0 && step_ % c_.checkpoint().every_steps() == 0;
      const bool eval_step = c_.eval().every_steps() > 0 && step_ % c_.eval().every_steps() == 0 && !last;
      if (signal != 0 || periodic || (last && c_.checkpoint().at_end())) Save();
      if (traced) {
        trace.Complete("metrics + boundary", "step", boundary_start, Clock::now());
        trace.Complete("step " + std::to_string(step_), "step", step_start, Clock::now(),
                       {{"step", double(step_)}, {"loss", r.loss}, {"tokens_per_sec", r.tokens_per_sec}});
        trace.SetEnabled(false);
        if (step_ == *trace_steps_.rbegin()) WriteTrace();
      }
      if (signal != 0) {
        progress.Finish();
        WriteTrace();
        // The resumed run starts after this step, so its evaluation runs now (while the save writes) or never.
        if (eval_step) RunEval();
        const checkpoint::SaveResult saved = ckpt_->Wait();
        if (!saved.committed) {
          LOG(ERROR) << "signal " << signal << " received: checkpoint at step " << step_ << " NOT committed ("
                     << saved.reason << "); exiting with " << kExitSaveFailed << " (not requeued)";
          return kExitSaveFailed;
        }
        LOG(WARNING) << "signal " << signal << " received: checkpoint at step " << step_ << " committed; exiting with "
                     << kExitPreempted << " so the job script can requeue";
        return kExitPreempted;
      }
      if (eval_step) RunEval();
    }
    progress.Finish();
    WriteTrace();  // a run that ended before the last listed step
    const checkpoint::SaveResult final_save = ckpt_->Wait();
    if (c_.eval().at_end()) RunEval();
    // checkpoint.fail_on_error=false lets training outlive failed periodic saves, but a run whose final save
    // failed leaves no trained model behind: that must not look like success.
    if (step_ > first_step && c_.checkpoint().at_end() && final_save.step == step_ && !final_save.committed) {
      LOG(ERROR) << "the final checkpoint (step " << step_ << ") was NOT committed: " << final_save.reason
                 << "; exiting with " << kExitSaveFailed;
      return kExitSaveFailed;
    }
    return kExitOk;
  }

 private:
  struct StepReport {
    double loss = 0, lr = 0, grad_norm = 0, tokens_per_sec = 0, images_per_sec = 0, step_ms = 0;
    double data_wait_ms = 0, forward_ms = 0, backward_ms = 0, sync_wait_ms = 0, optimizer_ms = 0;
    double row_fill = 0;  // real tokens / positions fed (batch.pack_tokens raises it)
    int buckets = 0, buckets_completed_in_backward = 0;
  };

  // One optimizer step (DESIGN.md "Training step"), in this order:
  //   1. data: this rank's grad_accum prefetched micro-batches, and the global batch's labelled tokens counted
  //      over DP. The loss is a mean over those tokens, so any dp x grad_accum split gives the same gradient.
  //   2. per micro-batch: forward (TP collectives inside the layers) -> loss_sum / global tokens -> backward.
  //      PrepareBackward(last) arms the gradient hooks: during the last micro-batch's backward each DP bucket's
  //      reduction starts as soon as its gradients are complete and runs while the rest of backward does
  //      (parallel.overlap_grad_sync); earlier micro-batches only accumulate.
  //   3. WaitGradReduction(): launches any bucket the backward did not and waits for every bucket's reduction
  //      (sync_wait_ms: the communication the backward did not hide).
  //   4. checkpoint fence: a save in flight copies what it has not yet written of the parameters and moments.
  //   5. optimizer Step(lr): clips by the global norm over TP and DP, ZeRO-1 AdamW on this rank's rows of the
  //      fp32 masters, all-gathers the updated parameters (optimizer_ms).
  //   6. between 3 and 4: the loss summed over DP; a non-finite loss stops the run before the update touches the
  //      weights (the last committed checkpoint is intact).
  StepReport TrainStep(sampler::Prefetcher<sampler::MicroBatch>& prefetch) {
    StepReport r;
    cluster::Tracer* trace = &ctx_->tracer();
    const auto t0 = Clock::now();
    std::vector<sampler::MicroBatch> micro;  // 1.
    {
      cluster::Tracer::Span span(trace, "data wait", "data");
      for (int m = 0; m < plan_.grad_accum; ++m) micro.push_back(prefetch.Next());
    }
    r.data_wait_ms = MsSince(t0);
    for (const sampler::MicroBatch& mb : micro) CountData(mb);
    torch::Tensor global;  // [labelled, tokens, images, positions] over DP, on the device
    {
      cluster::Tracer::Span span(trace, "count tokens over dp", "data");
      global = CountOverDp(micro, ctx_->dp(), model_.device);
    }
    const torch::Tensor global_labelled = global.narrow(0, 0, 1).clamp_min(1.0);

    optimizer_->ZeroGrad();  // 2.
    torch::Tensor loss_sum = torch::zeros({1}, torch::TensorOptions().dtype(torch::kFloat64).device(model_.device));
    for (int m = 0; m < plan_.grad_accum; ++m) {
      loss_sum += ForwardBackward(micro[size_t(m)], global_labelled, /*last=*/m == plan_.grad_accum - 1, &r);
    }

    {
      cluster::Tracer::Span span(trace, "grad sync wait", "comm");
      r.sync_wait_ms = optimizer_->WaitGradReduction();  // 3. the DP reduction's end: the last buckets, then wait
    }
    // 6. Every TP rank holds the same loss_sum; sum over DP only. It stays on the device: the optimizer's finite
    // check reads it (a non-finite loss skips the update inside the fused kernel) and the step's one read-back at
    // the end of Step() returns it.
    torch::Tensor loss;
    {
      cluster::Tracer::Span span(trace, "loss sum over dp", "comm");
      ctx_->dp().AllReduce(loss_sum, cluster::ReduceOp::kSum);
      loss = loss_sum / global_labelled;
    }
    r.lr = LearningRateAt(c_, step_, plan_.total_steps);
    {
      cluster::Tracer::Span span(trace, "checkpoint fence", "checkpoint");
      ckpt_->ReleaseState();  // 4. the save's only stall (nothing to copy when it is done)
    }
    lcl::optim::StepStats stats;
    {
      cluster::Tracer::Span span(trace, "optimizer step", "optimizer");
      stats = optimizer_->Step(r.lr, loss);  // 5. clip -> ZeRO-1 AdamW -> all-gather, then the one read-back
    }
    r.loss = stats.guard;
    if (stats.skipped) {
      throw Error("step " + std::to_string(step_ + 1) + ": loss is " + std::to_string(r.loss) + " and the gradient " +
                  "norm " + std::to_string(stats.grad_norm) + "; the weights were not updated with them: lower " +
                  "optimizer.lr or check the data (the last committed checkpoint is intact)");
    }
    r.grad_norm = stats.grad_norm;
    r.optimizer_ms = stats.optimizer_ms;
    r.buckets_completed_in_backward = stats.buckets_completed_in_backward;
    r.buckets = stats.buckets;
    r.step_ms = MsSince(t0);
    const std::vector<double> counts = ReadBack(global);  // computed long ago: no wait
    r.tokens_per_sec = counts[1] / (r.step_ms / 1e3);     // every input token (text and image), all DP ranks
    r.images_per_sec = counts[2] / (r.step_ms / 1e3);
    r.row_fill = counts[1] / std::max(counts[3], 1.0);
    return r;
  }

  // Forward, loss = loss_sum / global_labelled, backward of one micro-batch; returns its loss_sum (float64, on the
  // device, detached). With `last`, the backward starts each gradient bucket's DP reduction as soon as the bucket is
  // complete.
  torch::Tensor ForwardBackward(const sampler::MicroBatch& mb, const torch::Tensor& global_labelled, bool last,
                                StepReport* r) {
    cluster::Tracer* trace = &ctx_->tracer();
    lcl::model::MultimodalBatch batch;
    batch.input_ids = mb.input_ids.to(model_.device);
    batch.labels = mb.labels.to(model_.device);
    batch.attention_mask = mb.attention_mask.to(model_.device);
    if (mb.position_ids.defined()) batch.position_ids = mb.position_ids.to(model_.device);  // packed
    batch.segments = lcl::model::SegmentsOf(mb.attention_mask);  // from the host copy: no device read
    const bool cached = features_ && mb.images.defined() && mb.images.size(0) > 0;
    if (!cached) batch.images = mb.images.to(model_.device, model_.dtype);
    batch.logits_for_loss_only = true;  // the LM head on the labelled rows only, found on the host
    batch.loss_rows = lcl::model::MultimodalModelImpl::LossRows(mb.labels, mb.attention_mask).to(model_.device);
    const auto tf = Clock::now();
    lcl::model::MultimodalOutput out;
    torch::Tensor loss;
    {
      cluster::Tracer::Span span(trace, "forward", "compute");
      if (cached) {  // the tower's output from data.feature_cache; the tower runs on the images it lacks
        cluster::Tracer::Span tower(trace, "tower features (cache)", "compute");
        batch.image_features = features_->Features(mb.images, tower_).to(model_.device);
      }
      out = model_.model->forward(batch);
      loss = out.loss_sum.to(torch::kFloat32) / global_labelled.to(torch::kFloat32);
    }
    r->forward_ms += MsSince(tf);
    optimizer_->PrepareBackward(last);
    const auto tb = Clock::now();
    {
      cluster::Tracer::Span span(trace, "backward", "compute");
      loss.backward();
    }
    r->backward_ms += MsSince(tb);
    return out.loss_sum.detach().to(torch::kFloat64).reshape({1});
  }

  StepMetrics MetricsOf(const StepReport& r) const {
    StepMetrics m;
    m.step = step_;
    m.loss = r.loss;
    m.lr = r.lr;
    m.grad_norm = r.grad_norm;
    m.tokens_per_sec = r.tokens_per_sec;
    m.images_per_sec = r.images_per_sec;
    m.step_time_ms = r.step_ms;
    m.bad_images = static_cast<int64_t>(data_.loader->bad());
    m.extra["data_wait_ms"] = r.data_wait_ms;
    m.extra["forward_ms"] = r.forward_ms;
    m.extra["backward_ms"] = r.backward_ms;
    m.extra["sync_wait_ms"] = r.sync_wait_ms;
    m.extra["optimizer_ms"] = r.optimizer_ms;
    m.extra["row_fill"] = r.row_fill;
    m.extra["buckets_completed_in_backward"] = r.buckets_completed_in_backward;
    m.extra["buckets"] = r.buckets;
    m.extra["epoch"] = static_cast<double>(sampler_.epoch);
    if (const char* restarts = std::getenv("SLURM_RESTART_COUNT")) m.extra["restart_count"] = std::atof(restarts);
    return m;
  }

  // Counts this rank's LCL-Mix conversations and its episodes that did not fit data.max_length (data.too_long=
  // drop_shots trained them at fewer shots; reject would have stopped the run in the pipeline), and warns once about
  // the latter, with the first one's numbers.
  void CountData(const sampler::MicroBatch& mb) {
    conversations_ += mb.conversations;
    for (size_t i = 0; i < mb.shots.size(); ++i) {
      if (mb.shots[i] >= mb.requested_shots[i]) continue;
      ++too_long_episodes_;
      dropped_pairs_ += mb.requested_shots[i] - mb.shots[i];
      if (too_long_episodes_ > 1) continue;
      LOG(WARNING) << "episode (epoch " << mb.keys[i].epoch << ", index " << mb.keys[i].index << ") needs "
                   << mb.requested_tokens[i] << " tokens at shot " << mb.requested_shots[i]
                   << " but data.max_length is " << c_.data().max_length() << ": trained at shot " << mb.shots[i]
                   << " (data.too_long=drop_shots). "
                   << "Such episodes are counted in metrics.jsonl (too_long_episodes, dropped_shot_pairs) and not "
                   << "logged again; raise data.max_length to train every shot, or set data.too_long=reject";
    }
  }

  // The timeline of the traced steps: <run_dir>/trace/rank<R>.json on every rank, all ranks in one file on rank 0.
  // Collective (the ranks' events are gathered); every rank calls it at the same points. Once per run.
  void WriteTrace() {
    if (trace_steps_.empty() || trace_written_) return;
    trace_written_ = true;
    cluster::Tracer& trace = ctx_->tracer();
    trace.SetEnabled(false);
    const std::string dir = c_.run_dir() + "/trace";
    try {
      trace.WriteFile(dir + "/rank" + std::to_string(ctx_->grid().rank()) + ".json");
    } catch (const Error& e) {
      LOG(WARNING) << "trace not written: " << e.what();
    }
    std::string mine;
    for (const std::string& e : trace.Events()) mine += (mine.empty() ? "" : ",\n") + e;
    const std::vector<std::string> all = ctx_->control().GatherBytes(mine);
    if (ctx_->grid().rank() != 0) return;
    const std::string path = dir + "/all_ranks.json";
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << cluster::TraceJson(all);
    if (out.flush()) {
      LOG(INFO) << "trace of steps " << c_.logging().trace_steps() << " written: " << path
                << " (open it in ui.perfetto.dev or chrome://tracing)";
    } else {
      LOG(WARNING) << "trace not written: cannot write " << path;
    }
  }

  void Save() { ckpt_->Save(step_, SnapshotState(model_, *optimizer_, *ctx_, sampler_, step_, config_text_)); }

  void Restore(const std::string& resume) {
    std::string dir;
    if (resume.empty()) {
      if (!checkpoint::ListCheckpoints(c_.run_dir()).empty()) {
        throw ConfigError("run_dir '" + c_.run_dir() +
                          "' already holds checkpoints; pass --resume auto to continue that run, or choose another "
                          "run_dir (--set run_dir=...)");
      }
      return;
    }
    dir = checkpoint::ResolveResume(c_.run_dir(), resume);
    if (dir.empty()) {
      LOG(INFO) << "resume auto: no complete checkpoint in " << c_.run_dir() << "; starting fresh";
      return;
    }
    checkpoint::CheckpointReader reader(dir);
    reader.VerifyCollective(ctx_->control());
    LoadModelShards(*model_.model, ctx_->grid(), reader);
    const checkpoint::Manifest& man = reader.manifest();
    optimizer_->LoadState(reader, man.optimizer_step());
    step_ = man.step();
    sampler_.epoch = static_cast<uint64_t>(man.sampler().epoch());
    sampler_.next_index = static_cast<uint64_t>(man.sampler().next_index());
    for (const auto& rng : man.rng()) {
      if (rng.rank() == ctx_->grid().rank()) SetCpuRngState(rng.cpu());
    }
    LOG(INFO) << "resumed from " << dir << ": step " << step_ << ", episode (" << sampler_.epoch << ", "
              << sampler_.next_index << "), saved on grid " << man.grid().DebugString();
  }

  void RunEval() {
    if (!evaluator_) evaluator_ = std::make_unique<Evaluator>(*ctx_, model_, loaded_);
    std::vector<EvalRow> rows = evaluator_->Run();
    if (ctx_->grid().rank() == 0) {
      for (const EvalRow& row : rows) {
        metrics_->WriteEval(step_, row.shots, row.accuracy(), row.n, EvalRowExtras(row));
        LOG(INFO) << "eval step " << step_ << " shots " << row.shots << ": accuracy " << row.accuracy() << " ("
                  << row.correct << "/" << row.n << "), e.g. " << row.example_answer;
      }
      PrintEvalTable(rows, "eval at step " + std::to_string(step_) + " (" + evaluator_->input() + ")", std::cout);
    }
  }

  // First member: SIGTERM/SIGUSR1 during set-up are recorded (not fatal) and acted on at the first boundary.
  cluster::SignalWatcher signals_;
  const LoadedConfig& loaded_;
  const TrainConfig& c_;
  std::unique_ptr<cluster::ClusterContext> ctx_;  // before the model: its TP group is the model's
  RunModel model_;
  Data data_;
  std::unique_ptr<FeatureCache> features_;  // data.feature_cache: null = the tower runs on every image
  FeatureCache::Tower tower_;               // what the cache calls on its misses
  RunPlan plan_;
  std::unique_ptr<lcl::optim::DistributedOptimizer> optimizer_;
  std::unique_ptr<checkpoint::Checkpointer> ckpt_;
  std::unique_ptr<MetricsWriter> metrics_;
  std::unique_ptr<Evaluator> evaluator_;
  std::string config_text_;
  int64_t step_ = 0;
  sampler::SamplerState sampler_;
  std::set<int64_t> trace_steps_;  // logging.trace_steps
  bool trace_written_ = false;
  int64_t too_long_episodes_ = 0;  // this rank's, since this process started (CountData)
  int64_t conversations_ = 0;      // LCL-Mix conversations trained on by this rank, since this process started
  int64_t dropped_pairs_ = 0;
};

}  // namespace

int Train(cluster::MpiSession& mpi, const LoadedConfig& config, const std::string& resume) {
  TrainLoop loop(mpi, config, resume);
  return loop.Run();
}

int Evaluate(cluster::MpiSession& mpi, const LoadedConfig& loaded, const std::string& checkpoint) {
  const TrainConfig& c = loaded.config;
  // Before the model loads, and in this command's words (ResolveResume speaks of --resume).
  if (!checkpoint.empty() && checkpoint != "auto" &&
      !std::filesystem::exists(std::filesystem::path(checkpoint) / "manifest.pb")) {
    throw CheckpointError("--checkpoint " + checkpoint + ": not a complete checkpoint (no manifest.pb); give auto " +
                          "or a step directory (`lcl ckpt list " + c.run_dir() + "`)");
  }
  RunSetup run = SetUpRun(mpi, loaded);
  cluster::ClusterContext& ctx = *run.ctx;
  int64_t step = 0;
  if (!checkpoint.empty()) {
    const std::string dir = checkpoint::ResolveResume(c.run_dir(), checkpoint);
    if (dir.empty()) throw CheckpointError("no complete checkpoint in " + c.run_dir() + "/checkpoints to evaluate");
    checkpoint::CheckpointReader reader(dir);
    reader.VerifyCollective(ctx.control());
    LoadModelShards(*run.model.model, ctx.grid(), reader);
    step = reader.manifest().step();
  }
  Evaluator evaluator(ctx, run.model, loaded);
  std::vector<EvalRow> rows = evaluator.Run();
  if (ctx.grid().rank() == 0) {
    for (const EvalRow& row : rows) LOG(INFO) << "eval shots " << row.shots << ": e.g. " << row.example_answer;
    MetricsOptions mo;  // append: keep every earlier line of eval.jsonl and metrics.jsonl
    mo.resume_step = std::numeric_limits<int64_t>::max();
    mo.tensorboard = false;
    MetricsWriter metrics(c.run_dir(), mo);
    for (const EvalRow& row : rows) {
      metrics.WriteEval(step, row.shots, row.accuracy(), row.n, EvalRowExtras(row));
    }
    const std::string labels = c.eval().format() == "isekai" ? "the file's" : c.eval().labels();
    PrintEvalTable(rows,
                   "eval of " + (checkpoint.empty() ? c.model().path() : checkpoint) + " (" + evaluator.input() +
                       ", labels " + labels + ")",
                   std::cout);
  }
  return kExitOk;
}

}  // namespace lcl::trainer
