// Model FLOPs utilisation for `lcl bench train`: the model FLOPs of one step, and the fp32 matmul peak the same
// cores reach, measured in the same run (MFU = ModelFlops / step time / MatmulPeak).
//
//   const double peak = MatmulPeak(/*threads=*/1, /*ranks=*/2);
//   const double mfu = ModelFlops(model_dir, padded_len, images, 1, 2) / step_seconds / peak;
#pragma once

#include <string>

namespace lcl::bench {

// Model FLOPs of one optimizer step over `np` ranks of `micro_batch` episodes of `seq` (padded) tokens and `images`
// images each, with the model of `model_dir`/config.json (a HF LlavaConfig), counted as MFU usually is (a
// multiply-add = 2 FLOPs, matmuls only, attention as full T x T products): the frozen tower's forward (2 x its linear
// weights per patch, plus attention), the projector and decoder forward and backward (6 x linear weights per token,
// 12 x layers x hidden x T^2 for attention), the LM head included, embeddings excluded.
double ModelFlops(const std::string& model_dir, double seq, double images, int micro_batch, int np);

// The fp32 matmul FLOP/s that `ranks` ranks of `threads` threads each reach together: the best of several
// 1024^3 products, run at the same time by `ranks` threads when there is one thread per rank (so cores that do not
// compute independently show it), else one process's `threads` threads times `ranks`.
double MatmulPeak(int threads, int ranks);

}  // namespace lcl::bench
