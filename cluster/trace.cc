// Tracer: trace events serialised as they are recorded, lane names added when the trace is read.
#include "cluster/trace.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "cluster/errors.h"

namespace lcl::cluster {
namespace {

// A JSON string literal.
std::string Quoted(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

double Micros(Tracer::Clock::time_point t) {
  return std::chrono::duration<double, std::micro>(t.time_since_epoch()).count();
}

std::string Number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3f", v);
  return buf;
}

std::string ArgsJson(Tracer::Args args) {
  std::string out = "{";
  for (const auto& [key, value] : args) {
    if (out.size() > 1) out += ",";
    out += Quoted(key) + ":" + Number(value);
  }
  return out + "}";
}

}  // namespace

Tracer::Tracer(int pid, std::string process_name) : pid_(pid), process_name_(std::move(process_name)) {}

int Tracer::Tid() {
  const auto [it, fresh] = tids_.emplace(std::this_thread::get_id(), static_cast<int>(tids_.size()));
  (void)fresh;
  return it->second;
}

void Tracer::Add(const std::string& name, const char* cat, const std::string& phase, double ts, Args args) {
  std::lock_guard<std::mutex> lock(mu_);
  events_.push_back("{\"name\":" + Quoted(name) + ",\"cat\":" + Quoted(cat) + "," + phase + ",\"ts\":" + Number(ts) +
                    ",\"pid\":" + std::to_string(pid_) + ",\"tid\":" + std::to_string(Tid()) +
                    ",\"args\":" + ArgsJson(args) + "}");
}

void Tracer::Complete(const std::string& name, const char* cat, Clock::time_point start, Clock::time_point end,
                      Args args) {
  if (!enabled()) return;
  const double ts = Micros(start), dur = std::max(0.0, Micros(end) - ts);
  Add(name, cat, "\"ph\":\"X\",\"dur\":" + Number(dur), ts, args);
}

void Tracer::Instant(const std::string& name, const char* cat, Args args) {
  if (!enabled()) return;
  Add(name, cat, "\"ph\":\"i\",\"s\":\"t\"", Micros(Clock::now()), args);
}

void Tracer::AsyncBegin(const std::string& name, const char* cat, uint64_t id, Args args) {
  if (!enabled()) return;
  Add(name, cat, "\"ph\":\"b\",\"id\":" + std::to_string(id), Micros(Clock::now()), args);
}

void Tracer::AsyncEnd(const std::string& name, const char* cat, uint64_t id, Args args) {
  if (!enabled()) return;
  Add(name, cat, "\"ph\":\"e\",\"id\":" + std::to_string(id), Micros(Clock::now()), args);
}

void Tracer::NameThread(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  thread_names_[Tid()] = name;
}

std::vector<std::string> Tracer::Events() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  const std::string pid = std::to_string(pid_);
  const std::string process = process_name_.empty() ? "rank " + pid : process_name_;
  out.push_back("{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":" + pid + ",\"args\":{\"name\":" + Quoted(process) +
                "}}");
  out.push_back("{\"name\":\"process_sort_index\",\"ph\":\"M\",\"pid\":" + pid + ",\"args\":{\"sort_index\":" + pid +
                "}}");
  for (const auto& [tid, name] : thread_names_) {
    out.push_back("{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":" + pid + ",\"tid\":" + std::to_string(tid) +
                  ",\"args\":{\"name\":" + Quoted(name) + "}}");
  }
  out.insert(out.end(), events_.begin(), events_.end());
  return out;
}

size_t Tracer::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return events_.size();
}

void Tracer::Clear() {
  std::lock_guard<std::mutex> lock(mu_);
  events_.clear();
}

std::string Tracer::Json() const { return TraceJson(Events()); }

void Tracer::WriteFile(const std::string& path) const {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path target(path);
  if (target.has_parent_path()) fs::create_directories(target.parent_path(), ec);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << Json();
    if (!out.flush()) throw Error("trace: cannot write " + tmp + " (is the directory writable and the disk not full?)");
  }
  fs::rename(tmp, target, ec);
  if (ec) throw Error("trace: cannot rename " + tmp + " to " + path + ": " + ec.message());
}

std::string TraceJson(const std::vector<std::string>& events) {
  std::string out = "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n";
  for (size_t i = 0; i < events.size(); ++i) out += events[i] + (i + 1 < events.size() ? ",\n" : "\n");
  return out + "]}\n";
}

}  // namespace lcl::cluster
