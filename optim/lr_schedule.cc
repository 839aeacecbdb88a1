// LrAt: linear warmup then cosine decay.
#include "optim/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "cluster/errors.h"

namespace lcl::optim {

double LrAt(int64_t step, int64_t total_steps, double lr, double min_lr, double warmup_ratio) {
  if (total_steps < 1 || step < 0) {
    throw ConfigError("lr schedule: step " + std::to_string(step) + " of total_steps " + std::to_string(total_steps) +
                      "; need total_steps >= 1 and step >= 0");
  }
  if (!(warmup_ratio >= 0.0 && warmup_ratio <= 1.0)) {
    throw ConfigError("lr schedule: warmup_ratio " + std::to_string(warmup_ratio) + " is outside [0, 1]");
  }
  if (!(lr >= 0.0) || !(min_lr >= 0.0) || min_lr > lr) {
    throw ConfigError("lr schedule: need 0 <= min_lr <= lr, found lr " + std::to_string(lr) + " and min_lr " +
                      std::to_string(min_lr));
  }
  const auto warmup = static_cast<int64_t>(std::ceil(warmup_ratio * static_cast<double>(total_steps)));
  if (step < warmup) return lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const double progress = std::min(
      1.0, static_cast<double>(step - warmup) / static_cast<double>(std::max<int64_t>(1, total_steps - warmup)));
  return min_lr + (lr - min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

}  // namespace lcl::optim
