// `lcl bench data`: throughput of the full episode pipeline (episode draw, tokenize, decode, pad,
// resize, normalise, collate) on ImageNet-sized JPEGs, beside a bare OpenCV decode+resize loop over
// the same files with the same thread count, measured in the same run, and the ratio.
//
//   lcl::bench::DataBenchOptions opt;
//   opt.json = true;
//   return lcl::bench::RunDataBench(opt, std::cout);
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace lcl::bench {

struct DataBenchOptions {
  bool json = false;  // one JSON object per measurement
  std::string dir;    // where to synthesise the JPEGs (default: a temporary directory, removed after)
  int classes = 8;
  int images_per_class = 16;
  int width = 500;  // ImageNet's typical 500x375
  int height = 375;
  int size = 224;  // tower input
  int shot = 4;    // per side: 2*shot+1 images per episode
  int image_tokens = 256;
  int episodes = 24;  // per measurement
  int rounds = 3;     // alternating bare/pipeline rounds; the best of each counts
  std::vector<int> workers = {1, 2};
};

// Runs the benchmark and prints to `out`; returns the process exit code (0). Throws
// lcl::NotBuiltError without OpenCV or SentencePiece.
int RunDataBench(const DataBenchOptions& options, std::ostream& out);

}  // namespace lcl::bench
