// Tracer: a step timeline in the Chrome trace-event format (one JSON object with a "traceEvents" array), which
// Perfetto (ui.perfetto.dev) and chrome://tracing open. It records only while enabled, so the trainer switches it
// on for the steps `logging.trace_steps` names; disabled, each call is one relaxed atomic load.
//
//   Tracer trace(/*pid=*/rank);
//   trace.SetEnabled(true);
//   { Tracer::Span s(&trace, "forward", "compute"); model.forward(batch); }
//   trace.AsyncBegin("bucket 0", "comm", id);  /* ... */  trace.AsyncEnd("bucket 0", "comm", id);
//   trace.WriteFile(run_dir + "/trace/rank0.json");
//
// Times are CLOCK_MONOTONIC microseconds, the same clock in every process of one host, so the ranks of one node
// line up when their events are shown together (TraceJson(events of every rank)).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace lcl::cluster {

class Tracer {
 public:
  using Clock = std::chrono::steady_clock;
  using Args = std::initializer_list<std::pair<const char*, double>>;

  // `pid` is the process lane in the viewer (the rank); `process_name` labels it.
  explicit Tracer(int pid = 0, std::string process_name = "");
  Tracer(const Tracer&) = delete;
  Tracer& operator=(const Tracer&) = delete;

  void SetEnabled(bool on) { enabled_.store(on, std::memory_order_relaxed); }
  bool enabled() const { return enabled_.load(std::memory_order_relaxed); }

  // A finished span ("X" event) on the calling thread's lane.
  void Complete(const std::string& name, const char* cat, Clock::time_point start, Clock::time_point end,
                Args args = {});
  // A point in time ("i" event) on the calling thread's lane.
  void Instant(const std::string& name, const char* cat, Args args = {});
  // An operation that outlives one call ("b"/"e" pair, matched by cat and id): a collective in flight.
  void AsyncBegin(const std::string& name, const char* cat, uint64_t id, Args args = {});
  void AsyncEnd(const std::string& name, const char* cat, uint64_t id, Args args = {});
  // A fresh id for AsyncBegin/AsyncEnd (never 0).
  uint64_t NextId() { return next_id_.fetch_add(1, std::memory_order_relaxed) + 1; }
  // The label of the calling thread's lane ("main", "prefetch 0", ...). Kept while disabled.
  void NameThread(const std::string& name);

  // The events recorded so far, each one JSON object (no separators), in recording order.
  std::vector<std::string> Events() const;
  size_t size() const;
  void Clear();
  // `{"traceEvents": [...], "displayTimeUnit": "ms"}` of this tracer's events and lane names.
  std::string Json() const;
  // Json() into `path` (its directory made if needed), written to a temporary name and renamed. Throws Error.
  void WriteFile(const std::string& path) const;

  // RAII span: records [construction, destruction) when the tracer is enabled at construction. `tracer` may be
  // null.
  class Span {
   public:
    Span(Tracer* tracer, std::string name, const char* cat)
        : tracer_(tracer && tracer->enabled() ? tracer : nullptr), cat_(cat) {
      if (tracer_) {
        name_ = std::move(name);
        start_ = Clock::now();
      }
    }
    ~Span() {
      if (tracer_) tracer_->Complete(name_, cat_, start_, Clock::now());
    }
    Span(const Span&) = delete;
    Span& operator=(const Span&) = delete;

   private:
    Tracer* tracer_;
    std::string name_;
    const char* cat_;
    Clock::time_point start_;
  };

 private:
  int Tid();  // the calling thread's lane, assigned in order of first use (call with mu_ held)
  // One event: `phase` holds its "ph" field and the fields that kind needs ("dur", "id", "s").
  void Add(const std::string& name, const char* cat, const std::string& phase, double ts, Args args);

  const int pid_;
  const std::string process_name_;
  std::atomic<bool> enabled_{false};
  std::atomic<uint64_t> next_id_{0};
  mutable std::mutex mu_;
  std::vector<std::string> events_;
  std::map<std::thread::id, int> tids_;
  std::map<int, std::string> thread_names_;
};

// One trace of several processes' events (each from Tracer::Events() or Tracer::Json()'s array, e.g. gathered from
// every rank): `{"traceEvents": [...]}`.
std::string TraceJson(const std::vector<std::string>& events);

}  // namespace lcl::cluster
