// Images in a build without OpenCV: every entry point says how to get it.
#include "cluster/errors.h"
#include "sampler/image_io.h"

namespace lcl::sampler {
namespace {
[[noreturn]] void Fail() {
  throw NotBuiltError(
      "this lcl was built without OpenCV; apt-get install libopencv-dev and reconfigure with "
      "-DLCL_WITH_OPENCV=ON");
}
}  // namespace

torch::Tensor LoadImage(const std::string&, const ImageSpec&, const Tile&) { Fail(); }
torch::Tensor PreprocessImageBytes(const std::vector<uint8_t>&, const std::string&, const ImageSpec&, const Tile&) {
  Fail();
}
ImageLoader::ImageLoader(std::string root, ImageSpec spec, double max_bad_fraction, uint64_t min_window)
    : root_(std::move(root)), spec_(spec), max_bad_fraction_(max_bad_fraction), min_window_(min_window) {}
torch::Tensor ImageLoader::Load(const ImageRef&, const std::vector<std::string>&) { Fail(); }
void ImageLoader::RecordBad(const std::string&) {}
std::vector<std::string> ImageLoader::recent_errors() const { return {}; }

}  // namespace lcl::sampler
