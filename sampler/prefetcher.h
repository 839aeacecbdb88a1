// A bounded, ordered prefetcher: worker threads build items 0, 1, 2, ... (whole micro-batches)
// ahead of the consumer, at most `depth` items beyond the one consumed last; Next() returns them in
// order and rethrows an item's exception at that item.
//
//   Prefetcher<MicroBatch> prefetch([&](uint64_t k) { return pipeline.Build(keys_of(k)); }, 2, 4);
//   MicroBatch mb = prefetch.Next();  // blocks until item 0 is ready
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

namespace lcl::sampler {

template <typename T>
class Prefetcher {
 public:
  Prefetcher(std::function<T(uint64_t)> make, int workers, int depth, uint64_t first = 0)
      : make_(std::move(make)), depth_(depth < 1 ? 1 : depth), next_to_make_(first), next_to_take_(first) {
    for (int i = 0; i < (workers < 1 ? 1 : workers); ++i) threads_.emplace_back([this] { Work(); });
  }
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  // Stops the workers; an item being built is finished and dropped.
  ~Prefetcher() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : threads_) t.join();
  }

  // The next item in order; blocks until it is built. Rethrows the exception its builder threw.
  T Next() {
    std::unique_lock<std::mutex> lock(mu_);
    const uint64_t k = next_to_take_;
    cv_.wait(lock, [&] { return ready_.count(k) > 0 || errors_.count(k) > 0; });
    ++next_to_take_;
    cv_.notify_all();  // a slot opened for the workers
    if (auto e = errors_.find(k); e != errors_.end()) {
      std::exception_ptr error = e->second;
      errors_.erase(e);
      std::rethrow_exception(error);
    }
    T item = std::move(ready_.at(k));
    ready_.erase(k);
    return item;
  }

 private:
  void Work() {
    while (true) {
      uint64_t k;
      {
        std::unique_lock<std::mutex> lock(mu_);
        // Bounded: never more than depth_ items beyond the consumer (memory stays at depth_
        // micro-batches).
        cv_.wait(lock, [&] { return stop_ || next_to_make_ < next_to_take_ + depth_; });
        if (stop_) return;
        k = next_to_make_++;
      }
      try {
        T item = make_(k);
        std::lock_guard<std::mutex> lock(mu_);
        ready_.emplace(k, std::move(item));
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu_);
        errors_.emplace(k, std::current_exception());
      }
      cv_.notify_all();
    }
  }

  std::function<T(uint64_t)> make_;
  const uint64_t depth_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  uint64_t next_to_make_;
  uint64_t next_to_take_;
  std::map<uint64_t, T> ready_;
  std::map<uint64_t, std::exception_ptr> errors_;
  std::vector<std::thread> threads_;
};

}  // namespace lcl::sampler
