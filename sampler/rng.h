// Counter-based random numbers for the sampler: every draw is a pure function of a key (seed,
// epoch, index, purpose) and a counter, so an episode never depends on global RNG state or on which
// rank built it.
//
//   lcl::sampler::CounterRng rng({seed, epoch, index, kPurposeEpisode});
//   size_t k = rng.Below(36);           // uniform in [0, 36)
//   size_t j = rng.Weighted({3, 2, 1});  // 0 with p=1/2, 1 with p=1/3, 2 with p=1/6
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string_view>
#include <utility>
#include <vector>

namespace lcl::sampler {

// SplitMix64's finaliser: a bijective 64-bit mixer with full avalanche (Steele et al., 2014).
inline uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// FNV-1a: a stable string hash (std::hash is not guaranteed stable across builds), used to key
// draws by path.
inline uint64_t StableHash(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

class CounterRng {
 public:
  // The key words are chained through SplitMix64 so that (1, 2) and (2, 1) give unrelated streams.
  explicit CounterRng(std::initializer_list<uint64_t> key) {
    uint64_t h = 0x6c636c5f73616d70ULL;  // "lcl_samp"
    for (uint64_t k : key) h = SplitMix64(h ^ SplitMix64(k));
    state_ = h;
  }

  uint64_t NextU64() {
    // SplitMix64 as a counter generator: output i is mix(key + i * golden), independent of other
    // keys.
    return SplitMix64(state_ + 0x9e3779b97f4a7c15ULL * counter_++);
  }

  // Uniform in [0, 1) with 53 random bits.
  double Uniform() { return static_cast<double>(NextU64() >> 11) * 0x1.0p-53; }

  // Uniform integer in [0, n), unbiased (rejection of the short last bucket). n must be > 0.
  uint64_t Below(uint64_t n) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x = NextU64();
    while (x >= limit) x = NextU64();
    return x % n;
  }

  // Index drawn with probability proportional to weights[i] (non-negative, positive sum).
  size_t Weighted(const std::vector<double>& weights) {
    double total = 0;
    for (double w : weights) total += w;
    double r = Uniform() * total;
    for (size_t i = 0; i < weights.size(); ++i) {
      if (r < weights[i]) return i;
      r -= weights[i];
    }
    return weights.size() - 1;  // rounding at the top end
  }

  // Fisher-Yates shuffle.
  template <typename T>
  void Shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[Below(i)]);
  }

 private:
  uint64_t state_ = 0;
  uint64_t counter_ = 0;
};

}  // namespace lcl::sampler
