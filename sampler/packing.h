// Packing: a micro-batch's episodes laid end to end in shared rows of at most a token budget, instead of one
// right-padded row each. `2way_random_shot` episodes run from 3 to 33 images, so padding every row to the longest
// wastes most of a padded micro-batch; packed, the rows hold real tokens.
//
//   MicroBatch packed = PackMicroBatch(pipeline.Build(keys), /*max_tokens=*/8192);
//   // packed.attention_mask holds each token's episode number in its row (1, 2, ...; 0 = padding), and
//   // packed.position_ids restart at 0 with every episode.
//
// The model reads a packed row exactly as the separate rows: attention stays inside an episode (each episode's span
// runs as its own causal attention, model::SegmentsOf in model/attention.h), rotary positions restart, and the first
// token of an episode is never a target of the previous one. So the loss sum and the gradients are those of the
// unpacked micro-batch, up to the rounding of a different row count.
#pragma once

#include <cstdint>
#include <vector>

#include "sampler/pipeline.h"

namespace lcl::sampler {

// Packs `mb` (as EpisodePipeline::Build returns it: one right-padded episode per row) into rows of at most
// max(max_tokens, its longest episode) tokens, balanced so that rows x longest row is least (PackRows). The
// episodes' fields (keys, images, shots, ...) are reordered to the packed order, images following their episodes;
// rows are padded to the longest row. max_tokens must be positive.
MicroBatch PackMicroBatch(const MicroBatch& mb, int64_t max_tokens);

// The packing itself: which episodes (indices into `lengths`, their token counts) share each row, in episode order
// inside a row and rows ordered by their first episode. Each row's lengths sum to at most
// capacity = max(max_tokens, max(lengths)). For every row count from ceil(sum / capacity) up, the episodes are
// dealt longest first (ties in episode order) to the least-loaded row; of the layouts that fit, the one with the
// fewest positions (rows x longest row) wins, the fewest rows on ties. One row per episode is among them, so packed
// never holds more positions than padded.
std::vector<std::vector<int>> PackRows(const std::vector<int64_t>& lengths, int64_t max_tokens);

}  // namespace lcl::sampler
