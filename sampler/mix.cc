// LCL-Mix: the source draw per stream position and the conversations' per-pass order.
#include "sampler/mix.h"

#include <numeric>

#include "cluster/errors.h"
#include "sampler/rng.h"

namespace lcl::sampler {
namespace {

constexpr uint64_t kMixSourceStream = 7;  // which source a stream position takes
constexpr uint64_t kMixOrderStream = 8;   // a source's record order in one pass

}  // namespace

MixedEpisodes::MixedEpisodes(const TrainEpisodes& episodes, std::vector<MixSource> sources, uint64_t seed)
    : episodes_(episodes), sources_(std::move(sources)), seed_(seed) {
  double sum = 0;
  for (const MixSource& s : sources_) {
    if (!(s.probability >= 0 && s.probability <= 1)) {
      throw ConfigError("mix probability " + std::to_string(s.probability) + " of " + s.file->path() +
                        " is outside [0, 1] (data.mix_weights)");
    }
    sum += s.probability;
  }
  if (sum > 1 + 1e-9) {
    throw ConfigError("the mix probabilities (data.mix_weights) sum to " + std::to_string(sum) +
                      ", over 1; the LCL episodes take 1 - their sum");
  }
  lcl_probability_ = sum >= 1 ? 0.0 : 1 - sum;
  pass_.assign(sources_.size(), UINT64_MAX);
  order_.resize(sources_.size());
}

size_t MixedEpisodes::SourceAt(uint64_t epoch, uint64_t index) const {
  if (sources_.empty()) return 0;
  CounterRng rng({seed_, epoch, index, kMixSourceStream});
  double u = rng.Uniform();
  if (u < lcl_probability_) return 0;
  u -= lcl_probability_;
  size_t last = 0;  // the last source with a positive probability takes what rounding leaves
  for (size_t k = 0; k < sources_.size(); ++k) {
    if (sources_[k].probability <= 0) continue;
    if (u < sources_[k].probability) return k + 1;
    u -= sources_[k].probability;
    last = k + 1;
  }
  return last;
}

size_t MixedEpisodes::RecordAt(size_t source, uint64_t position) const {
  const uint64_t n = sources_[source].file->size();
  const uint64_t pass = position / n;
  std::lock_guard<std::mutex> lock(mu_);
  if (pass_[source] != pass) {
    std::vector<uint32_t>& order = order_[source];
    order.resize(n);
    std::iota(order.begin(), order.end(), 0u);
    CounterRng rng({seed_, pass, source, kMixOrderStream});
    rng.Shuffle(order);
    pass_[source] = pass;
  }
  return order_[source][position % n];
}

Episode MixedEpisodes::Build(uint64_t epoch, uint64_t index) const {
  const size_t source = SourceAt(epoch, index);
  if (source == 0) return episodes_.Build(epoch, index);
  const size_t k = source - 1;
  const InstructRecord& r = sources_[k].file->records()[RecordAt(k, epoch * EpisodesPerEpoch() + index)];
  Episode e;
  e.epoch = epoch;
  e.index = index;
  e.policy = "llava";
  e.query = ImageRef(r.image, static_cast<int>(episodes_.table().size() + k));
  e.conversation = r.turns;
  return e;
}

const std::vector<std::string>& MixedEpisodes::PoolOf(int class_pos) const {
  const size_t classes = episodes_.table().size();
  if (class_pos >= 0 && size_t(class_pos) < classes) return episodes_.table().classes()[size_t(class_pos)].samples;
  return sources_.at(size_t(class_pos) - classes).file->images();
}

}  // namespace lcl::sampler
