// HandlePool: a free list of C handles that are costly to create (CUDA events), generic over their create and
// destroy functions so the bookkeeping is tested on CPU with fakes. Acquire() hands out a move-only Lease that puts
// the handle back when it goes out of scope, so an exception between acquire and release leaks nothing.
//
//   HandlePool<cudaEvent_t> events(CreateEvent, cudaEventDestroy);
//   {
//     auto ready = events.Acquire();   // reuses an idle event or creates one
//     cudaEventRecord(ready.get(), stream);
//   }                                  // back in the pool
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace lcl::cluster {

template <class Handle>
class HandlePool {
  struct State;  // create/destroy, the idle handles and counts; shared with the leases

 public:
  // `create` returns a new handle or throws; `destroy` must not throw.
  HandlePool(std::function<Handle()> create, std::function<void(Handle)> destroy)
      : state_(std::make_shared<State>(std::move(create), std::move(destroy))) {}
  // Destroys the idle handles. A lease still out keeps the pool's state alive and destroys its handle on return.
  ~HandlePool() {
    std::vector<Handle> idle;
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->closed = true;
      idle.swap(state_->idle);
    }
    for (Handle h : idle) state_->destroy(h);
  }
  HandlePool(const HandlePool&) = delete;
  HandlePool& operator=(const HandlePool&) = delete;

  // Owns one handle of the pool until it is destroyed or reassigned; then the handle goes back.
  class Lease {
   public:
    Lease() = default;
    ~Lease() { Return(); }
    Lease(Lease&& other) noexcept : state_(std::move(other.state_)), handle_(std::exchange(other.handle_, Handle())) {}
    Lease& operator=(Lease&& other) noexcept {
      if (this != &other) {
        Return();
        state_ = std::move(other.state_);
        handle_ = std::exchange(other.handle_, Handle());
      }
      return *this;
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;

    Handle get() const { return handle_; }
    explicit operator bool() const { return state_ != nullptr; }

   private:
    friend class HandlePool;
    Lease(std::shared_ptr<State> state, Handle handle) : state_(std::move(state)), handle_(handle) {}
    void Return() {
      if (!state_) return;
      state_->Put(handle_);
      state_.reset();
      handle_ = Handle();
    }
    std::shared_ptr<State> state_;
    Handle handle_ = Handle();
  };

  // An idle handle, or a new one from `create` (whose exception propagates; the pool is unchanged then).
  Lease Acquire() {
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      if (!state_->idle.empty()) {
        Handle h = state_->idle.back();
        state_->idle.pop_back();
        ++state_->leased;
        return Lease(state_, h);
      }
    }
    Handle h = state_->create();
    std::lock_guard<std::mutex> lock(state_->mu);
    ++state_->created;
    ++state_->leased;
    return Lease(state_, h);
  }

  // Handles made so far, handles waiting in the pool, handles out on lease.
  size_t created() const {
    std::lock_guard<std::mutex> lock(state_->mu);
    return state_->created;
  }
  size_t idle() const {
    std::lock_guard<std::mutex> lock(state_->mu);
    return state_->idle.size();
  }
  size_t leased() const {
    std::lock_guard<std::mutex> lock(state_->mu);
    return state_->leased;
  }

 private:
  struct State {
    State(std::function<Handle()> c, std::function<void(Handle)> d) : create(std::move(c)), destroy(std::move(d)) {}
    void Put(Handle h) {
      {
        std::lock_guard<std::mutex> lock(mu);
        --leased;
        if (!closed) {
          idle.push_back(h);
          return;
        }
      }
      destroy(h);
    }
    const std::function<Handle()> create;
    const std::function<void(Handle)> destroy;
    mutable std::mutex mu;
    std::vector<Handle> idle;
    size_t created = 0;
    size_t leased = 0;
    bool closed = false;  // the pool is gone: returned handles are destroyed
  };
  std::shared_ptr<State> state_;
};

}  // namespace lcl::cluster
