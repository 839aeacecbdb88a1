// Tracer: the Chrome trace-event JSON it writes parses, holds what was recorded while enabled (and nothing
// else), names its lanes, escapes names, and merges several processes' events into one valid trace.
#include "cluster/trace.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/test_util.h"

namespace lcl::cluster {
namespace {

using nlohmann::json;

std::vector<json> Recorded(const std::string& text) {
  std::vector<json> out;
  const json trace = json::parse(text);
  for (const json& e : trace.at("traceEvents")) {
    if (e.at("ph") != "M") out.push_back(e);
  }
  return out;
}

TEST(TracerTest, RecordsOnlyWhileEnabled) {
  Tracer t(3);
  { Tracer::Span s(&t, "before", "compute"); }
  t.Instant("before", "x");
  EXPECT_EQ(t.size(), 0u);
  t.SetEnabled(true);
  { Tracer::Span s(&t, "forward", "compute"); }
  t.SetEnabled(false);
  t.Instant("after", "x");
  const std::vector<json> events = Recorded(t.Json());
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].at("name"), "forward");
  EXPECT_EQ(events[0].at("ph"), "X");
  EXPECT_EQ(events[0].at("pid"), 3);
  EXPECT_GE(events[0].at("dur").get<double>(), 0.0);
}

TEST(TracerTest, EveryEventKindParsesWithItsFields) {
  Tracer t(0, "rank 0 (test)");
  t.SetEnabled(true);
  t.NameThread("main");
  const auto a = Tracer::Clock::now();
  t.Complete("span", "compute", a, a + std::chrono::microseconds(1500), {{"tokens", 42}});
  t.Instant("launch bucket 0", "comm", {{"bytes", 4096}});
  const uint64_t id = t.NextId();
  EXPECT_NE(id, 0u);
  t.AsyncBegin("dp AllReduce", "comm", id);
  t.AsyncEnd("dp AllReduce", "comm", id);
  const json j = json::parse(t.Json());
  bool process_named = false, thread_named = false;
  for (const json& e : j.at("traceEvents")) {
    if (e.at("name") == "process_name") process_named = e.at("args").at("name") == "rank 0 (test)";
    if (e.at("name") == "thread_name") thread_named = e.at("args").at("name") == "main";
  }
  EXPECT_TRUE(process_named);
  EXPECT_TRUE(thread_named);
  const std::vector<json> ev = Recorded(t.Json());
  ASSERT_EQ(ev.size(), 4u);
  EXPECT_NEAR(ev[0].at("dur").get<double>(), 1500.0, 1e-3);
  EXPECT_EQ(ev[0].at("args").at("tokens"), 42.0);
  EXPECT_EQ(ev[1].at("ph"), "i");
  EXPECT_EQ(ev[2].at("ph"), "b");
  EXPECT_EQ(ev[3].at("ph"), "e");
  EXPECT_EQ(ev[2].at("id"), ev[3].at("id"));
}

TEST(TracerTest, NamesAreEscaped) {
  Tracer t;
  t.SetEnabled(true);
  t.Instant("quote \" backslash \\ newline \n tab \t bell \x07", "x");
  const std::vector<json> ev = Recorded(t.Json());
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].at("name"), "quote \" backslash \\ newline \n tab \t bell \x07");
}

TEST(TracerTest, ThreadsGetTheirOwnLanes) {
  Tracer t;
  t.SetEnabled(true);
  t.Instant("main", "x");
  std::thread other([&] {
    t.NameThread("worker");
    t.Instant("worker", "x");
  });
  other.join();
  const std::vector<json> ev = Recorded(t.Json());
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_NE(ev[0].at("tid"), ev[1].at("tid"));
}

TEST(TracerTest, SeveralProcessesMergeIntoOneTraceAndFilesAreWritten) {
  Tracer r0(0), r1(1);
  for (Tracer* t : {&r0, &r1}) {
    t->SetEnabled(true);
    t->Instant("x", "y");
  }
  std::vector<std::string> parts;
  for (Tracer* t : {&r0, &r1}) {
    std::string joined;
    for (const std::string& e : t->Events()) joined += (joined.empty() ? "" : ",\n") + e;
    parts.push_back(joined);
  }
  const std::vector<json> ev = Recorded(TraceJson(parts));
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0].at("pid"), 0);
  EXPECT_EQ(ev[1].at("pid"), 1);

  lcl::testing::TempDir dir("trace_test");
  const std::string path = dir.path() + "/sub/rank0.json";
  r0.WriteFile(path);
  std::ifstream in(path);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(Recorded(text).size(), 1u);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

}  // namespace
}  // namespace lcl::cluster
