// SignalWatcher: SIGTERM/SIGUSR1 are recorded, not fatal, and the old handlers come back afterwards.
#include <gtest/gtest.h>

#include <csignal>

#include "cluster/signals.h"

namespace lcl::cluster {
namespace {

TEST(SignalWatcher, RecordsTerminationSignalsInsteadOfDying) {
  SignalWatcher watcher;
  EXPECT_EQ(watcher.Pending(), 0);
  std::raise(SIGUSR1);
  EXPECT_EQ(watcher.Pending(), SIGUSR1);
  std::raise(SIGTERM);
  EXPECT_EQ(watcher.Pending(), SIGTERM);
  watcher.Clear();
  EXPECT_EQ(watcher.Pending(), 0);
}

TEST(SignalWatcher, RestoresThePreviousHandlers) {
  struct sigaction before {};
  sigaction(SIGTERM, nullptr, &before);
  {
    SignalWatcher watcher;
    struct sigaction during {};
    sigaction(SIGTERM, nullptr, &during);
    EXPECT_NE(during.sa_handler, before.sa_handler);
  }
  struct sigaction after {};
  sigaction(SIGTERM, nullptr, &after);
  EXPECT_EQ(after.sa_handler, before.sa_handler);
}

}  // namespace
}  // namespace lcl::cluster
