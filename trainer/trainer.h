// `lcl train` and `lcl eval` on this rank (both collective over the world, both set up by SetUpRun).
//
// One optimizer step, top to bottom (DESIGN.md "Training step"; TrainLoop::TrainStep in trainer.cc):
//   take grad_accum prefetched micro-batches -> count labelled tokens over DP (loss is a mean over the global batch's
//   tokens, so any dp x grad_accum split gives the same gradient) -> per micro-batch: forward (TP collectives),
//   loss_sum / global_tokens, backward (the last micro-batch's backward launches the bucketed DP reduction) ->
//   optimizer step (wait for buckets, clip by global norm, ZeRO-1 AdamW, all-gather) -> LR schedule -> metrics ->
//   at the boundary: agree on signals, save (period, signal, end), evaluate (period, end).
//
//   LoadedConfig c = LoadTrainConfig("launch/configs/tiny.pbtxt", overrides);
//   int code = Train(mpi, c, "auto");   // kExitOk, or kExitPreempted after a committed checkpoint
#pragma once

#include <string>

#include "cluster/mpi_session.h"
#include "trainer/train_config.h"

namespace lcl::trainer {

// resume: "" (fresh run; an existing checkpoint in run_dir is an error), "auto" (newest complete checkpoint, or
// fresh), or a step directory.
int Train(cluster::MpiSession& mpi, const LoadedConfig& config, const std::string& resume);

// Evaluates model.path (or a checkpoint's model when `checkpoint` is given: "auto" = the run's newest) at
// eval.shots; writes <run_dir>/eval.jsonl rows and prints the table on rank 0.
int Evaluate(cluster::MpiSession& mpi, const LoadedConfig& config, const std::string& checkpoint);

}  // namespace lcl::trainer
