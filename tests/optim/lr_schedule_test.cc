// LrAt: linear warmup to lr, cosine to min_lr at total_steps, min_lr beyond, and the errors for bad
// settings.
#include "optim/lr_schedule.h"

#include <gtest/gtest.h>

#include <cmath>

#include "cluster/errors.h"

namespace lcl::optim {
namespace {

TEST(LrSchedule, WarmsUpLinearlyFromTheFirstStep) {
  // 100 steps, 10% warmup: W = 10, step s has lr * (s + 1) / 10.
  EXPECT_DOUBLE_EQ(LrAt(0, 100, 1.0, 0.1, 0.1), 0.1);
  EXPECT_DOUBLE_EQ(LrAt(4, 100, 1.0, 0.1, 0.1), 0.5);
  EXPECT_DOUBLE_EQ(LrAt(9, 100, 1.0, 0.1, 0.1), 1.0);
  // A fractional warmup rounds up (ceil(0.025 * 100) = 3).
  EXPECT_DOUBLE_EQ(LrAt(0, 100, 3.0, 0.0, 0.025), 1.0);
}

TEST(LrSchedule, DecaysByCosineFromLrToMinLr) {
  EXPECT_DOUBLE_EQ(LrAt(10, 100, 1.0, 0.1, 0.1), 1.0);      // cosine starts at lr
  EXPECT_NEAR(LrAt(55, 100, 1.0, 0.1, 0.1), 0.55, 1e-12);   // halfway: (lr + min_lr) / 2
  EXPECT_NEAR(LrAt(40, 100, 1.0, 0.1, 0.1), 0.775, 1e-12);  // a third: cos(pi / 3) = 0.5
  EXPECT_DOUBLE_EQ(LrAt(100, 100, 1.0, 0.1, 0.1), 0.1);
  EXPECT_DOUBLE_EQ(LrAt(5000, 100, 1.0, 0.1, 0.1), 0.1);
  for (int64_t s = 10; s < 100; ++s) EXPECT_LE(LrAt(s + 1, 100, 1.0, 0.1, 0.1), LrAt(s, 100, 1.0, 0.1, 0.1));
}

TEST(LrSchedule, NoWarmupStartsAtLr) {
  EXPECT_DOUBLE_EQ(LrAt(0, 10, 2e-5, 0.0, 0.0), 2e-5);
  EXPECT_DOUBLE_EQ(LrAt(0, 1, 2e-5, 0.0, 0.0), 2e-5);
  EXPECT_DOUBLE_EQ(LrAt(0, 1, 2e-5, 0.0, 1.0), 2e-5);  // all warmup: the only step runs at lr
}

TEST(LrSchedule, BadSettingsAreConfigErrors) {
  EXPECT_THROW(LrAt(0, 0, 1.0, 0.0, 0.1), ConfigError);
  EXPECT_THROW(LrAt(-1, 10, 1.0, 0.0, 0.1), ConfigError);
  EXPECT_THROW(LrAt(0, 10, 1.0, 0.0, 1.5), ConfigError);
  EXPECT_THROW(LrAt(0, 10, 1.0, 2.0, 0.1), ConfigError);
  EXPECT_THROW(LrAt(0, 10, -1.0, 0.0, 0.1), ConfigError);
}

}  // namespace
}  // namespace lcl::optim
