// The learning-rate schedule: linear warmup, then cosine decay to a floor (DESIGN.md "Training
// step").
//
//   double lr = LrAt(step, /*total_steps=*/1000, /*lr=*/2e-5, /*min_lr=*/0.0, /*warmup_ratio=*/0.03);
#pragma once

#include <cstdint>

namespace lcl::optim {

// The learning rate of optimizer step `step` (0-based) of `total_steps`: lr * (step + 1) / W for
// the first W = ceil(warmup_ratio * total_steps) steps (so the first step does not waste its batch
// at lr 0), then cosine from lr at step W down to min_lr at step total_steps, and min_lr beyond.
// Throws lcl::ConfigError for total_steps < 1, step < 0, warmup_ratio outside [0, 1], lr < 0 or
// min_lr outside [0, lr].
double LrAt(int64_t step, int64_t total_steps, double lr, double min_lr, double warmup_ratio);

}  // namespace lcl::optim
