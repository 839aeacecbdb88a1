// GridShape arithmetic: world = dp x tp, contiguous TP groups, strided DP groups, clear errors.
#include <gtest/gtest.h>

#include "cluster/errors.h"
#include "cluster/process_grid.h"

namespace lcl::cluster {
namespace {

TEST(GridShape, SplitsWorldIntoDpTimesTp) {
  GridShape g = GridShape::Make(8, 2);
  EXPECT_EQ(g.dp, 4);
  EXPECT_EQ(g.tp, 2);
  // TP groups are contiguous: ranks 2 and 3 share dp_rank 1.
  EXPECT_EQ(g.DpRankOf(2), 1);
  EXPECT_EQ(g.DpRankOf(3), 1);
  EXPECT_EQ(g.TpRankOf(2), 0);
  EXPECT_EQ(g.TpRankOf(3), 1);
  for (int r = 0; r < 8; ++r) EXPECT_EQ(g.RankOf(g.DpRankOf(r), g.TpRankOf(r)), r);
  EXPECT_EQ(g.ToString(), "world=8 (dp=4 x tp=2)");
}

TEST(GridShape, TpThatDoesNotDivideWorldIsAConfigErrorListingValidChoices) {
  try {
    GridShape::Make(4, 3);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("parallel.tp=3"), std::string::npos) << msg;
    EXPECT_NE(msg.find("world size 4"), std::string::npos) << msg;
    EXPECT_NE(msg.find(": 1 2 4"), std::string::npos) << msg;
  }
}

TEST(GridShape, NonPositiveTpIsAConfigError) {
  EXPECT_THROW(GridShape::Make(4, 0), ConfigError);
  EXPECT_THROW(GridShape::Make(4, -2), ConfigError);
  EXPECT_THROW(GridShape::Make(0, 1), ConfigError);
}

}  // namespace
}  // namespace lcl::cluster
