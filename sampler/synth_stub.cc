// Synthetic data in a build without OpenCV (it writes JPEGs): a clear error.
#include "cluster/errors.h"
#include "sampler/synth.h"

namespace lcl::sampler {

SynthResult Synthesize(const SynthOptions&) {
  throw NotBuiltError(
      "`lcl data synth` writes JPEGs with OpenCV, which this build lacks; apt-get install "
      "libopencv-dev and reconfigure with -DLCL_WITH_OPENCV=ON");
}

}  // namespace lcl::sampler
