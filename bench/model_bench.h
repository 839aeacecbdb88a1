// The model benchmark behind `lcl bench model`: forward + backward time per token of the multimodal
// model (frozen CLIP tower -> projector -> LLaMA decoder, loss on the text tokens) at TP = world
// size, with and without activation checkpointing, and the peak memory each needs; against the same
// forward + backward written with plain LibTorch ops (no TP, no checkpointing) on the same weights
// and batch in the same run. Rank 0 computes the reference with all the threads the TP group uses
// while the other ranks sleep, and the losses are compared after timing. Then the attention core alone: LibTorch's
// scaled_dot_product_attention against the explicit matmul + softmax, time and peak memory of forward + backward
// at 2k and 8k tokens (outputs and gradients compared).
//
//   ModelBenchOptions o; o.presets = {"tiny", "small"};
//   RunModelBench(o, MPI_COMM_WORLD, std::cout);  // mpirun -np 2: TP = 2; rank 0 prints
#pragma once

#include <mpi.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace lcl::bench {

struct ModelBenchOptions {
  std::vector<std::string> presets = {"tiny", "small"};
  int batch = 1;      // sequences per micro-batch
  int seq_len = 512;  // tokens per sequence (image spans included)
  int images = 4;     // images per sequence, each <im_start> + patches + <im_end>
  int warmup = 1;     // untimed steps per variant
  int iters = 3;      // timed steps per round
  int rounds = 2;     // rounds alternating lcl / lcl+checkpointing / reference; the best of each counts
  int threads = 0;    // intra-op threads per rank; 0 = cores / ranks on this node
  bool json = false;
  // The attention core alone (rank 0, all the group's threads): SDPA vs the explicit path at these lengths.
  std::vector<int64_t> attention_seq_lens = {2048, 8192};
  int attention_heads = 8;
  int attention_head_dim = 128;
};

struct ModelBenchRow {
  std::string preset;
  int tp = 1;
  double us_per_token = 0, ckpt_us_per_token = 0, ref_us_per_token = 0;  // slowest rank
  double peak_mib = 0, ckpt_peak_mib = 0, ref_peak_mib = 0;              // allocator peak over the step's start
  double loss = 0, ref_loss = 0;
};

// Collective over `comm` (its size is the TP size). Throws lcl::ConfigError on bad options and
// lcl::CommError when the TP loss differs from the reference's. Rank 0 writes the report to `out`.
std::vector<ModelBenchRow> RunModelBench(const ModelBenchOptions& options, MPI_Comm comm, std::ostream& out);

}  // namespace lcl::bench
