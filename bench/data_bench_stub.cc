// The data benchmark in a build without OpenCV or SentencePiece: a clear error.
#include "cluster/errors.h"
#include "bench/data_bench.h"

namespace lcl::bench {

int RunDataBench(const DataBenchOptions&, std::ostream&) {
  throw NotBuiltError(
      "`lcl bench data` needs OpenCV and SentencePiece; apt-get install libopencv-dev "
      "libsentencepiece-dev and reconfigure");
}

}  // namespace lcl::bench
