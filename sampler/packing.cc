// Packing a micro-batch's episodes into shared rows.
#include "sampler/packing.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <string>

#include "cluster/errors.h"

namespace lcl::sampler {

std::vector<std::vector<int>> PackRows(const std::vector<int64_t>& lengths, int64_t max_tokens) {
  if (max_tokens <= 0) {
    throw ConfigError("the packing budget is " + std::to_string(max_tokens) + " tokens; it must be positive");
  }
  const size_t n = lengths.size();
  if (n == 0) return {};
  const int64_t longest = *std::max_element(lengths.begin(), lengths.end());
  const int64_t capacity = std::max(max_tokens, longest);
  const int64_t total = std::accumulate(lengths.begin(), lengths.end(), int64_t{0});
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return lengths[size_t(a)] > lengths[size_t(b)]; });
  // For each row count from the fewest the budget allows, deal the episodes longest first to the least-loaded row
  // (lowest index on ties) and keep the layout with the fewest positions (rows x longest row): first fit would fill
  // the first rows to the budget and pad a short last row out to them.
  std::vector<std::vector<int>> best;
  int64_t best_positions = 0;
  for (size_t r_count = size_t((total + capacity - 1) / capacity); r_count <= n; ++r_count) {
    std::vector<std::vector<int>> rows(r_count);
    std::vector<int64_t> used(r_count, 0);
    for (int e : order) {
      const size_t r = size_t(std::min_element(used.begin(), used.end()) - used.begin());
      rows[r].push_back(e);
      used[r] += lengths[size_t(e)];
    }
    const int64_t width = *std::max_element(used.begin(), used.end());
    if (width > capacity) continue;
    const int64_t positions = int64_t(r_count) * width;
    if (best.empty() || positions < best_positions) {
      best = std::move(rows);
      best_positions = positions;
    }
  }
  // With one row per episode every row fits, so `best` is never empty. Episode order inside a row, rows by their
  // first episode.
  for (std::vector<int>& row : best) std::sort(row.begin(), row.end());
  std::sort(best.begin(), best.end());
  return best;
}

MicroBatch PackMicroBatch(const MicroBatch& mb, int64_t max_tokens) {
  const int64_t b = mb.input_ids.size(0), t = mb.input_ids.size(1);
  if (mb.position_ids.defined()) throw Error("PackMicroBatch: the micro-batch is packed already");
  const torch::Tensor mask = mb.attention_mask.contiguous();
  std::vector<int64_t> lengths(static_cast<size_t>(b));
  for (int64_t i = 0; i < b; ++i) lengths[size_t(i)] = mask[i].ne(0).sum().item<int64_t>();
  // Where episode i's images start in mb.images (episode-major).
  std::vector<int64_t> first_image(static_cast<size_t>(b) + 1, 0);
  for (int64_t i = 0; i < b; ++i)
    first_image[size_t(i) + 1] = first_image[size_t(i)] + mb.images_per_episode[size_t(i)];

  const std::vector<std::vector<int>> rows = PackRows(lengths, max_tokens);
  int64_t width = 0;
  for (const std::vector<int>& row : rows) {
    int64_t n = 0;
    for (int e : row) n += lengths[size_t(e)];
    width = std::max(width, n);
  }
  const int64_t r_count = static_cast<int64_t>(rows.size());
  MicroBatch out;
  out.conversations = mb.conversations;
  // Padding as the pipeline pads: its pad id is whatever the padded tail of a shorter row holds.
  int64_t pad_id = 0;
  for (int64_t i = 0; i < b; ++i) {
    if (lengths[size_t(i)] < t) pad_id = mb.input_ids[i][lengths[size_t(i)]].item<int64_t>();
  }
  out.input_ids = torch::full({r_count, width}, pad_id, torch::kInt64);
  out.labels = torch::full({r_count, width}, kIgnoreIndex, torch::kInt64);
  out.attention_mask = torch::zeros({r_count, width}, torch::kInt64);
  out.position_ids = torch::zeros({r_count, width}, torch::kInt64);
  const torch::Tensor ids = mb.input_ids.contiguous(), labels = mb.labels.contiguous();
  std::vector<int> order;  // the episodes in packed order
  for (int64_t r = 0; r < r_count; ++r) {
    int64_t at = 0, segment = 0;
    for (int e : rows[size_t(r)]) {
      const int64_t n = lengths[size_t(e)];
      out.input_ids[r].narrow(0, at, n).copy_(ids[e].narrow(0, 0, n));
      torch::Tensor l = out.labels[r].narrow(0, at, n);
      l.copy_(labels[e].narrow(0, 0, n));
      // Unpacked, an episode's first token is never a target (targets start at position 1); packed, it must not
      // become the previous episode's.
      l[0] = kIgnoreIndex;
      out.attention_mask[r].narrow(0, at, n).fill_(++segment);
      out.position_ids[r].narrow(0, at, n).copy_(torch::arange(n, torch::kInt64));
      at += n;
      out.keys.push_back(mb.keys[size_t(e)]);
      out.images_per_episode.push_back(mb.images_per_episode[size_t(e)]);
      out.shots.push_back(mb.shots[size_t(e)]);
      out.requested_shots.push_back(mb.requested_shots[size_t(e)]);
      out.requested_tokens.push_back(mb.requested_tokens[size_t(e)]);
      order.push_back(e);
    }
  }
  // Images follow their episodes, copied with memcpy as the pipeline does (not on LibTorch's thread pool, whose
  // spinning threads would compete with the decoders).
  out.images = torch::empty_like(mb.images);
  if (mb.images.numel() > 0) {
    const torch::Tensor src = mb.images.contiguous();
    const size_t image_bytes = size_t(src.numel() / src.size(0)) * src.element_size();
    const auto* from = static_cast<const char*>(src.data_ptr());
    auto* to = static_cast<char*>(out.images.data_ptr());
    for (int e : order) {
      const size_t n = size_t(mb.images_per_episode[size_t(e)]) * image_bytes;
      std::memcpy(to, from + size_t(first_image[size_t(e)]) * image_bytes, n);
      to += n;
    }
  }
  return out;
}

}  // namespace lcl::sampler
