// Image decoding and preprocessing: CLIP normalisation and expand2square against an OpenCV
// reference, formats decoded by content, every bad-input case with path and reason, and
// deterministic replacement; jigsaw pieces and the pad colour.
#include <gtest/gtest.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "cluster/errors.h"
#include "sampler/image_io.h"
#include "tests/sampler/test_util.h"

namespace lcl::sampler {
namespace {

using testing::TempDir;
using testing::WriteBytes;

// A 16x8 CMYK JPEG (Adobe-inverted, as Photoshop writes them) of pure cyan, made once with libjpeg.
static const uint8_t kCmykJpeg[] = {
    0xff, 0xd8, 0xff, 0xee, 0x00, 0x0e, 0x41, 0x64, 0x6f, 0x62, 0x65, 0x00, 0x64, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff,
    0xdb, 0x00, 0x43, 0x00, 0x02, 0x01, 0x01, 0x01, 0x01, 0x01, 0x02, 0x01, 0x01, 0x01, 0x02, 0x02, 0x02, 0x02, 0x02,
    0x04, 0x03, 0x02, 0x02, 0x02, 0x02, 0x05, 0x04, 0x04, 0x03, 0x04, 0x06, 0x05, 0x06, 0x06, 0x06, 0x05, 0x06, 0x06,
    0x06, 0x07, 0x09, 0x08, 0x06, 0x07, 0x09, 0x07, 0x06, 0x06, 0x08, 0x0b, 0x08, 0x09, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a,
    0x06, 0x08, 0x0b, 0x0c, 0x0b, 0x0a, 0x0c, 0x09, 0x0a, 0x0a, 0x0a, 0xff, 0xc0, 0x00, 0x14, 0x08, 0x00, 0x08, 0x00,
    0x10, 0x04, 0x43, 0x11, 0x00, 0x4d, 0x11, 0x00, 0x59, 0x11, 0x00, 0x4b, 0x11, 0x00, 0xff, 0xc4, 0x00, 0x1f, 0x00,
    0x00, 0x01, 0x05, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02,
    0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0xff, 0xc4, 0x00, 0xb5, 0x10, 0x00, 0x02, 0x01, 0x03, 0x03,
    0x02, 0x04, 0x03, 0x05, 0x05, 0x04, 0x04, 0x00, 0x00, 0x01, 0x7d, 0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12,
    0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1,
    0xc1, 0x15, 0x52, 0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26,
    0x27, 0x28, 0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a,
    0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75,
    0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97,
    0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8,
    0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9,
    0xda, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa, 0xff, 0xda, 0x00, 0x0e, 0x04, 0x43, 0x00, 0x4d, 0x00, 0x59, 0x00, 0x4b, 0x00, 0x00, 0x3f, 0x00, 0xfe,
    0x7f, 0xeb, 0xf7, 0xf2, 0xbf, 0x7f, 0x2b, 0xf7, 0xf2, 0x8a, 0x28, 0xa2, 0xbf, 0xff, 0xd9};

std::vector<uint8_t> Encode(const cv::Mat& bgr, const std::string& ext) {
  std::vector<uint8_t> out;
  EXPECT_TRUE(cv::imencode(ext, bgr, out));
  return out;
}

// 300x200 solid (R, G, B) = (200, 100, 50) with a white block, so padding and resize are visible.
cv::Mat TestImage() {
  cv::Mat m(200, 300, CV_8UC3, cv::Scalar(50, 100, 200));
  cv::rectangle(m, cv::Rect(0, 0, 60, 60), cv::Scalar(255, 255, 255), cv::FILLED);
  return m;
}

std::string ErrorOf(const std::string& path, const ImageSpec& spec = {}) {
  return testing::ErrorOf<DataError>([&] { LoadImage(path, spec); });
}

TEST(ImageIo, MatchesAnOpenCvReferenceOfExpand2SquareResizeAndClipNormalisation) {
  TempDir dir;
  std::vector<uint8_t> png = Encode(TestImage(), ".png");  // lossless, so the reference sees the same pixels
  WriteBytes(dir.path() + "/a.png", png);
  ImageSpec spec;
  spec.size = 64;
  torch::Tensor x = LoadImage(dir.path() + "/a.png", spec);
  ASSERT_EQ(x.sizes(), (std::vector<int64_t>{3, 64, 64}));
  ASSERT_EQ(x.dtype(), torch::kFloat32);
  // Reference: pad 300x200 to 300x300 with the CLIP mean colour (50 rows top and bottom),
  // INTER_AREA to 64.
  cv::Mat rgb;
  cv::cvtColor(TestImage(), rgb, cv::COLOR_BGR2RGB);
  cv::Mat square, small;
  cv::copyMakeBorder(rgb, square, 50, 50, 0, 0, cv::BORDER_CONSTANT, cv::Scalar(123, 117, 104));
  cv::resize(square, small, cv::Size(64, 64), 0, 0, cv::INTER_AREA);
  // The pipeline resizes the image straight into its place in the square, so rows agree up to the
  // sub-pixel phase of the border: padding rows exactly, content rows closely.
  double sum_err = 0, max_err_pad = 0;
  for (int c = 0; c < 3; ++c) {
    for (int y = 0; y < 64; ++y) {
      for (int xx = 0; xx < 64; ++xx) {
        double ref = (small.at<cv::Vec3b>(y, xx)[c] / 255.0 - spec.mean[c]) / spec.std[c];
        double err = std::abs(ref - x[c][y][xx].item<double>());
        sum_err += err;
        if (y < 10 || y > 54) max_err_pad = std::max(max_err_pad, err);
      }
    }
  }
  EXPECT_LT(max_err_pad, 1e-4);
  EXPECT_LT(sum_err / (3 * 64 * 64), 0.03) << "mean |difference| in normalised units";
  // Independent spot checks: the padding is the mean colour (normalises to ~0); the body is
  // (200,100,50).
  for (int c = 0; c < 3; ++c) EXPECT_NEAR(x[c][1][32].item<double>(), 0.0, 0.01);
  EXPECT_NEAR(x[0][40][40].item<double>(), (200 / 255.0 - 0.48145466) / 0.26862954, 1e-4);
  EXPECT_NEAR(x[2][40][40].item<double>(), (50 / 255.0 - 0.40821073) / 0.27577711, 1e-4);
}

TEST(ImageIo, DecodesByContentGrayscaleAndCmyk) {
  TempDir dir;
  ImageSpec spec;
  spec.size = 16;
  WriteBytes(dir.path() + "/png_named.JPEG", Encode(TestImage(), ".png"));
  torch::Tensor a = LoadImage(dir.path() + "/png_named.JPEG", spec);
  EXPECT_EQ(a.size(0), 3);
  cv::Mat gray(40, 40, CV_8UC1, cv::Scalar(128));
  WriteBytes(dir.path() + "/gray.JPEG", Encode(gray, ".jpg"));
  torch::Tensor g = LoadImage(dir.path() + "/gray.JPEG", spec);
  for (int c = 0; c < 3; ++c) EXPECT_NEAR(g[c][8][8].item<double>() * spec.std[c] + spec.mean[c], 128 / 255.0, 0.01);
  WriteBytes(dir.path() + "/cmyk.JPEG", std::vector<uint8_t>(kCmykJpeg, kCmykJpeg + sizeof(kCmykJpeg)));
  torch::Tensor k = LoadImage(dir.path() + "/cmyk.JPEG", spec);
  // Pure cyan: R near 0, G and B near 255 (read at the image's centre row, inside the 16x8 body).
  EXPECT_NEAR(k[0][8][8].item<double>() * spec.std[0] + spec.mean[0], 0.0, 0.03);
  EXPECT_NEAR(k[1][8][8].item<double>() * spec.std[1] + spec.mean[1], 1.0, 0.03);
  EXPECT_NEAR(k[2][8][8].item<double>() * spec.std[2] + spec.mean[2], 1.0, 0.03);
}

TEST(ImageIo, EveryBadInputNamesThePathAndTheReason) {
  TempDir dir;
  const std::string d = dir.path();
  std::vector<uint8_t> jpeg = Encode(TestImage(), ".jpg");
  WriteBytes(d + "/truncated.JPEG", std::vector<uint8_t>(jpeg.begin(), jpeg.begin() + long(jpeg.size() / 2)));
  std::vector<uint8_t> png = Encode(TestImage(), ".png");
  WriteBytes(d + "/truncated.png", std::vector<uint8_t>(png.begin(), png.begin() + long(png.size() / 2)));
  WriteBytes(d + "/empty.JPEG", {});
  testing::WriteText(d + "/text.JPEG", "this is not an image at all");
  WriteBytes(d + "/big.JPEG", jpeg);
  std::filesystem::create_directories(d + "/folder.JPEG");
  ImageSpec small_limit;
  small_limit.max_pixels = 300 * 200 - 1;
  struct Case {
    std::string file, reason;
    ImageSpec spec;
  };
  for (const Case& c : std::vector<Case>{{"missing.JPEG", "no such file", {}},
                                         {"truncated.JPEG", "truncated JPEG", {}},
                                         {"truncated.png", "truncated PNG", {}},
                                         {"empty.JPEG", "empty file", {}},
                                         {"text.JPEG", "not an image", {}},
                                         {"big.JPEG", "300x200 = 60000 pixels is over the limit of 59999", small_limit},
                                         {"folder.JPEG", "is a directory", {}}}) {
    std::string msg = ErrorOf(d + "/" + c.file, c.spec);
    EXPECT_EQ(msg.rfind(d + "/" + c.file + ": ", 0), 0u) << msg;
    EXPECT_NE(msg.find(c.reason), std::string::npos) << msg;
  }
  EXPECT_NO_THROW(LoadImage(d + "/big.JPEG", ImageSpec{}));
}

TEST(ImageLoader, ReplacesABadImageDeterministicallyAndCountsIt) {
  TempDir dir;
  std::vector<std::string> pool;
  for (int i = 0; i < 5; ++i) {
    cv::Mat m(32, 32, CV_8UC3, cv::Scalar(40 * i, 20, 200 - 30 * i));
    pool.push_back("c/" + std::to_string(i) + ".png");
    WriteBytes(dir.path() + "/" + pool.back(), Encode(m, ".png"));
  }
  WriteBytes(dir.path() + "/c/bad.JPEG", {});
  ImageSpec spec;
  spec.size = 8;
  ImageLoader a(dir.path(), spec, 0.5, 4), b(dir.path(), spec, 0.5, 4);
  torch::Tensor ra = a.Load({"c/bad.JPEG", 0}, pool);
  torch::Tensor rb = b.Load({"c/bad.JPEG", 0}, pool);
  EXPECT_TRUE(torch::equal(ra, rb));
  bool matches_pool = false;
  for (const std::string& p : pool) matches_pool |= torch::equal(ra, LoadImage(dir.path() + "/" + p, spec));
  EXPECT_TRUE(matches_pool);
  EXPECT_EQ(a.bad(), 1u);
  EXPECT_EQ(a.loaded(), 2u);
  ASSERT_EQ(a.recent_errors().size(), 1u);
  EXPECT_NE(a.recent_errors()[0].find("c/bad.JPEG: empty file"), std::string::npos);
  EXPECT_TRUE(torch::equal(a.Load({pool[1], 0}, pool), LoadImage(dir.path() + "/" + pool[1], spec)));
}

TEST(ImageLoader, StopsWithADataErrorPastTheBadFraction) {
  TempDir dir;
  cv::Mat m(16, 16, CV_8UC3, cv::Scalar(1, 2, 3));
  WriteBytes(dir.path() + "/good.png", Encode(m, ".png"));
  WriteBytes(dir.path() + "/bad.JPEG", {});
  ImageSpec spec;
  spec.size = 8;
  ImageLoader loader(dir.path(), spec, /*max_bad_fraction=*/0.2, /*min_window=*/10);
  loader.Load({"bad.JPEG", 0}, {"good.png"});  // 1 bad of a 10-image window: tolerated
  loader.Load({"bad.JPEG", 0}, {"good.png"});  // 2 of 10: at the limit, still tolerated
  // The third bad image of the window is past the limit: the run stops.
  testing::ExpectErrorMentions<DataError>([&] { loader.Load({"bad.JPEG", 0}, {"good.png"}); }, {"3 bad images"});
}

// A 97x61 picture of 3x2 solid blocks of 32x30 pixels (one spare column and row, which no jigsaw piece covers), each
// block its own colour, with a little texture so that a resize of the wrong region shows.
cv::Mat BlockImage() {
  cv::Mat m(61, 97, CV_8UC3, cv::Scalar(0, 0, 0));
  for (int c = 0; c < 3; ++c) {
    for (int r = 0; r < 2; ++r) {
      cv::rectangle(m, cv::Rect(c * 32, r * 30, 32, 30), cv::Scalar(40 + 80 * c, 60 + 120 * r, 200 - 60 * c),
                    cv::FILLED);
      cv::circle(m, cv::Point(c * 32 + 8 + 4 * c, r * 30 + 10 + 5 * r), 4, cv::Scalar(255, 255, 255), cv::FILLED);
    }
  }
  return m;
}

TEST(ImageIo, JigsawPiecesAreCutFromTheDecodedJpegBeforePaddingAsTheOfficialCrop) {
  TempDir dir;
  const std::vector<uint8_t> jpeg = Encode(BlockImage(), ".jpg");  // a real, lossy JPEG
  WriteBytes(dir.path() + "/blocks.JPEG", jpeg);
  const cv::Mat decoded = cv::imdecode(jpeg, cv::IMREAD_COLOR);  // the pixels the loader sees
  ImageSpec spec;
  spec.size = 48;
  for (int c = 0; c < 3; ++c) {
    for (int r = 0; r < 2; ++r) {
      const Tile tile{3, 2, c, r};
      torch::Tensor piece = LoadImage(dir.path() + "/blocks.JPEG", spec, tile);
      ASSERT_EQ(piece.sizes(), (std::vector<int64_t>{3, 48, 48}));
      // Reference: the official crop box [c*w, r*h, (c+1)*w, (r+1)*h] with w = floor(97/3), h = floor(61/2), given
      // to the whole preprocessing as an image of its own (lossless, so it sees the same pixels).
      const cv::Mat crop = decoded(cv::Rect(c * 32, r * 30, 32, 30)).clone();
      EXPECT_TRUE(torch::equal(piece, PreprocessImageBytes(Encode(crop, ".png"), "crop.png", spec)))
          << "piece (" << c << ", " << r << ")";
      // Column c is x, row r is y: inside, away from the texture, the piece shows block (c, r)'s colour (blocks
      // differ by 60 levels or more, JPEG error is a few).
      const double bgr[3] = {40.0 + 80 * c, 60.0 + 120 * r, 200.0 - 60 * c};
      for (int ch = 0; ch < 3; ++ch) {
        const double want = (bgr[2 - ch] / 255.0 - spec.mean[size_t(ch)]) / spec.std[size_t(ch)];
        EXPECT_NEAR(piece[ch][36][40].item<double>(), want, 0.15) << "piece (" << c << ", " << r << ")";
      }
    }
  }
  EXPECT_TRUE(torch::equal(LoadImage(dir.path() + "/blocks.JPEG", spec, Tile{}),
                           LoadImage(dir.path() + "/blocks.JPEG", spec)));  // 1x1: the whole image
  // An image with fewer pixels than its grid is a bad image, replaced like any other.
  WriteBytes(dir.path() + "/tiny.png", Encode(cv::Mat(3, 3, CV_8UC3, cv::Scalar(1, 2, 3)), ".png"));
  testing::ExpectErrorMentions<DataError>(
      [&] {
        LoadImage(dir.path() + "/tiny.png", spec, Tile{4, 4, 0, 0});
      },
      {"tiny.png", "3x3", "too small", "4x4"});
}

TEST(ImageLoader, ABadJigsawPieceIsReplacedByTheSamePieceOfOneReplacement) {
  TempDir dir;
  WriteBytes(dir.path() + "/c/good.JPEG", Encode(BlockImage(), ".jpg"));
  WriteBytes(dir.path() + "/c/bad.JPEG", {});
  ImageSpec spec;
  spec.size = 16;
  ImageLoader loader(dir.path(), spec, 1.0, 1);
  for (int c = 0; c < 3; ++c) {
    const Tile tile{3, 2, c, 1};
    EXPECT_TRUE(torch::equal(loader.Load({"c/bad.JPEG", 0, tile}, {"c/good.JPEG"}),
                             LoadImage(dir.path() + "/c/good.JPEG", spec, tile)));
  }
}

TEST(ImageIo, PadColourIsTheClipMeanOrWhite) {
  TempDir dir;
  WriteBytes(dir.path() + "/wide.png", Encode(cv::Mat(20, 40, CV_8UC3, cv::Scalar(50, 100, 200)), ".png"));
  ImageSpec mean, white;
  mean.size = white.size = 40;
  white.pad = ParsePadColor("white");
  EXPECT_EQ(ParsePadColor("mean"), PadColor::kMean);
  EXPECT_EQ(ImageSpec{}.pad, PadColor::kMean);  // the default: what lcl always padded with
  torch::Tensor m = LoadImage(dir.path() + "/wide.png", mean), w = LoadImage(dir.path() + "/wide.png", white);
  for (int c = 0; c < 3; ++c) {
    // Rows 0-9 and 30-39 are padding: the mean normalises to about 0, white to (1 - mean) / std.
    EXPECT_NEAR(m[c][2][20].item<double>(), 0.0, 0.01);
    EXPECT_NEAR(w[c][2][20].item<double>(), (1.0 - white.mean[size_t(c)]) / white.std[size_t(c)], 1e-5);
    EXPECT_NEAR(w[c][37][5].item<double>(), (1.0 - white.mean[size_t(c)]) / white.std[size_t(c)], 1e-5);
  }
  // The picture itself is the same.
  EXPECT_TRUE(torch::equal(m.slice(1, 10, 30), w.slice(1, 10, 30)));
  testing::ExpectErrorMentions<ConfigError>([] { ParsePadColor("black"); },
                                            {"'black'", "data.pad_color", "mean", "white"});
}
}  // namespace
}  // namespace lcl::sampler
