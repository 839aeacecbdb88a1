// OpenCV image decoding, validation and CLIP preprocessing; the replacing ImageLoader.
#include "sampler/image_io.h"

#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "cluster/errors.h"
#include "cluster/log.h"
#include "sampler/rng.h"

namespace lcl::sampler {
namespace {

enum class Format { kJpeg, kPng, kOther };

Format Sniff(const std::vector<uint8_t>& b) {
  if (b.size() >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return Format::kJpeg;
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  if (b.size() >= 8 && std::equal(kPng, kPng + 8, b.begin())) return Format::kPng;
  return Format::kOther;
}

[[noreturn]] void Bad(const std::string& path, const std::string& reason) { throw DataError(path + ": " + reason); }

// Width x height from the JPEG SOFn or PNG IHDR header, read before decoding so that a
// decompression bomb is rejected without allocating it. {0, 0} when the header is not found (the
// decoder then decides).
std::pair<int64_t, int64_t> HeaderSize(const std::vector<uint8_t>& b, Format f) {
  if (f == Format::kPng && b.size() >= 24) {
    auto be32 = [&](size_t i) { return (int64_t(b[i]) << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]; };
    return {be32(16), be32(20)};
  }
  if (f != Format::kJpeg) return {0, 0};
  size_t i = 2;
  while (i + 9 < b.size()) {
    if (b[i] != 0xFF) return {0, 0};
    uint8_t m = b[i + 1];
    size_t len = (size_t(b[i + 2]) << 8) | b[i + 3];
    bool sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
    if (sof) return {(int64_t(b[i + 7]) << 8) | b[i + 8], (int64_t(b[i + 5]) << 8) | b[i + 6]};
    i += 2 + len;
  }
  return {0, 0};
}

// libjpeg fills a cut-off scan with grey and only warns, so truncation is checked here: the
// end-of-image marker must follow the last start-of-scan (inside entropy-coded data 0xFF is always
// stuffed).
bool JpegComplete(const std::vector<uint8_t>& b) {
  size_t last_sos = 0;
  for (size_t i = 0; i + 1 < b.size(); ++i) {
    if (b[i] == 0xFF && b[i + 1] == 0xDA) last_sos = i;
  }
  for (size_t i = b.size() - 1; i > last_sos; --i) {
    if (b[i - 1] == 0xFF && b[i] == 0xD9) return true;
  }
  return false;
}

bool PngComplete(const std::vector<uint8_t>& b) {
  static const char kIend[4] = {'I', 'E', 'N', 'D'};
  size_t from = b.size() > 64 ? b.size() - 64 : 0;
  return std::search(b.begin() + long(from), b.end(), kIend, kIend + 4) != b.end();
}

std::vector<uint8_t> ReadFile(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) Bad(path, "no such file");
  if (fs::is_directory(st)) Bad(path, "is a directory, not an image");
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) Bad(path, "cannot be opened (permission denied?)");
  // One read of the whole file (an istreambuf_iterator copy costs as much as a fifth of the
  // decode).
  std::vector<uint8_t> bytes(static_cast<size_t>(in.tellg()));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!in) Bad(path, "read error");
  return bytes;
}

// expand2square (LLaVA) then resize, done as one resize of the image into its place in the square
// output: the same picture as padding first and resizing the padded square (up to the sub-pixel
// phase of the border rows) at three quarters of the cost for 4:3 images, the padding costing
// nothing. INTER_AREA antialiases when shrinking, bicubic when enlarging (as CLIP's processor
// does).
cv::Mat SquareAndResize(const cv::Mat& bgr, const ImageSpec& spec) {
  const int side = std::max(bgr.cols, bgr.rows);
  const double scale = double(spec.size) / side;
  const int w = std::clamp(int(std::lround(bgr.cols * scale)), 1, spec.size);
  const int h = std::clamp(int(std::lround(bgr.rows * scale)), 1, spec.size);
  const cv::Scalar fill =
      spec.pad == PadColor::kWhite
          ? cv::Scalar(255, 255, 255)
          : cv::Scalar(std::round(spec.mean[2] * 255), std::round(spec.mean[1] * 255), std::round(spec.mean[0] * 255));
  cv::Mat out(spec.size, spec.size, CV_8UC3, fill);
  cv::Mat roi = out(cv::Rect((spec.size - w) / 2, (spec.size - h) / 2, w, h));
  cv::resize(bgr, roi, roi.size(), 0, 0, side > spec.size ? cv::INTER_AREA : cv::INTER_CUBIC);
  return out;
}

// The official jigsaw crop: piece (col, row) of a cols x rows grid, each floor(W / cols) x floor(H / rows) from the
// top-left (the right and bottom remainders belong to no piece). A view: no pixels are copied.
cv::Mat Piece(const cv::Mat& image, const Tile& tile, const std::string& path) {
  if (tile.whole()) return image;
  CHECK(tile.col >= 0 && tile.col < tile.cols && tile.row >= 0 && tile.row < tile.rows)
      << path << ": piece (" << tile.col << ", " << tile.row << ") is outside its " << tile.cols << "x" << tile.rows
      << " grid";
  const int w = image.cols / tile.cols, h = image.rows / tile.rows;
  if (w < 1 || h < 1) {
    Bad(path, std::to_string(image.cols) + "x" + std::to_string(image.rows) + " is too small to cut into " +
                  std::to_string(tile.cols) + "x" + std::to_string(tile.rows) + " jigsaw pieces");
  }
  return image(cv::Rect(tile.col * w, tile.row * h, w, h));
}

}  // namespace

torch::Tensor PreprocessImageBytes(const std::vector<uint8_t>& bytes, const std::string& path, const ImageSpec& spec,
                                   const Tile& tile) {
  if (bytes.empty()) Bad(path, "empty file (0 bytes)");
  Format format = Sniff(bytes);
  auto [w, h] = HeaderSize(bytes, format);
  if (w * h > spec.max_pixels) {
    Bad(path, std::to_string(w) + "x" + std::to_string(h) + " = " + std::to_string(w * h) +
                  " pixels is over the limit of " + std::to_string(spec.max_pixels) + " (image.max_pixels)");
  }
  if (format == Format::kJpeg && !JpegComplete(bytes)) Bad(path, "truncated JPEG (no end-of-image marker)");
  if (format == Format::kPng && !PngComplete(bytes)) Bad(path, "truncated PNG (no IEND chunk)");
  // Decoding by content: a PNG named .JPEG decodes as the PNG it is. IMREAD_COLOR turns grayscale
  // and CMYK into 3-channel BGR.
  cv::Mat bgr = cv::imdecode(cv::_InputArray(bytes.data(), int(bytes.size())), cv::IMREAD_COLOR);
  if (bgr.empty()) {
    Bad(path, format == Format::kOther ? "not an image (no decodable JPEG/PNG/BMP/WebP content)"
                                       : "corrupt image data (the decoder failed)");
  }
  if (int64_t(bgr.cols) * bgr.rows > spec.max_pixels) {
    Bad(path, std::to_string(bgr.cols) + "x" + std::to_string(bgr.rows) + " is over the pixel limit of " +
                  std::to_string(spec.max_pixels));
  }
  // Stays BGR until normalisation, which reads channel 2 - c: one full-image pass fewer than
  // cvtColor.
  cv::Mat small = SquareAndResize(Piece(bgr, tile, path), spec);
  // Normalise straight into the tensor's RGB planes with a per-channel table: x' = (x / 255 - mean)
  // / std.
  float lut[3][256];
  for (int c = 0; c < 3; ++c) {
    for (int v = 0; v < 256; ++v) lut[c][v] = (v / 255.0f - spec.mean[c]) / spec.std[c];
  }
  torch::Tensor out = torch::empty({3, spec.size, spec.size}, torch::kFloat32);
  float* r = out.data_ptr<float>();
  float* g = r + spec.size * spec.size;
  float* b = g + spec.size * spec.size;
  for (int y = 0, i = 0; y < spec.size; ++y) {
    const uint8_t* p = small.ptr<uint8_t>(y);
    for (int x = 0; x < spec.size; ++x, ++i, p += 3) {
      b[i] = lut[2][p[0]];
      g[i] = lut[1][p[1]];
      r[i] = lut[0][p[2]];
    }
  }
  return out;
}

torch::Tensor LoadImage(const std::string& path, const ImageSpec& spec, const Tile& tile) {
  return PreprocessImageBytes(ReadFile(path), path, spec, tile);
}

ImageLoader::ImageLoader(std::string root, ImageSpec spec, double max_bad_fraction, uint64_t min_window)
    : root_(std::move(root)), spec_(spec), max_bad_fraction_(max_bad_fraction), min_window_(min_window) {}

std::string ImageLoader::FullPath(const std::string& path) const {
  return !path.empty() && path[0] == '/' ? path : root_ + "/" + path;
}

torch::Tensor ImageLoader::Load(const ImageRef& ref, const std::vector<std::string>& pool) {
  constexpr int kMaxAttempts = 8;
  std::string path = ref.path;
  for (int attempt = 0; attempt <= kMaxAttempts; ++attempt) {
    ++loaded_;
    try {
      return LoadImage(FullPath(path), spec_, ref.tile);
    } catch (const DataError& e) {
      RecordBad(e.what());
    }
    if (pool.empty()) break;
    // Keyed by the original path and the attempt only: independent of rank, batch and timing.
    CounterRng rng({StableHash(ref.path), static_cast<uint64_t>(attempt), 0x7265706cULL});  // "repl"
    path = pool[rng.Below(pool.size())];
  }
  throw DataError(FullPath(ref.path) + ": bad, and " + std::to_string(kMaxAttempts) +
                  " replacements from its class failed too; see the messages above");
}

void ImageLoader::RecordBad(const std::string& message) {
  uint64_t bad = ++bad_;
  uint64_t seen = std::max<uint64_t>(loaded_, min_window_);
  LOG(WARNING) << "bad image replaced (" << bad << " so far): " << message;
  {
    std::lock_guard<std::mutex> lock(mu_);
    recent_errors_.push_back(message);
    if (recent_errors_.size() > 16) recent_errors_.erase(recent_errors_.begin());
  }
  if (double(bad) > max_bad_fraction_ * double(seen)) {
    throw DataError(std::to_string(bad) + " bad images out of " + std::to_string(loaded_.load()) +
                    " loaded, over the limit of " + std::to_string(max_bad_fraction_ * 100) +
                    "% (data.max_bad_fraction); last: " + message +
                    ". Fix the dataset or raise data.max_bad_fraction.");
  }
}

std::vector<std::string> ImageLoader::recent_errors() const {
  std::lock_guard<std::mutex> lock(mu_);
  return recent_errors_;
}

}  // namespace lcl::sampler
