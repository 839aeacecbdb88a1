// `lcl data synth`: a readable ImageNet-format tree, official-format pairs files with family-first
// neighbours, determinism, and classes that are learnable: families share colour, members differ in
// a feature a simple classifier picks up.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sstream>

#include "sampler/class_index.h"
#include "sampler/episode.h"
#include "sampler/pairs_file.h"
#include "sampler/synth.h"
#include "tests/sampler/test_util.h"

namespace lcl::sampler {
namespace {

SynthOptions Options(const std::string& out) {
  SynthOptions o;
  o.out = out;
  o.classes = 16;
  o.images_per_class = 8;
  o.width = 64;
  o.height = 48;
  o.seed = 3;
  return o;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Colour (mean hue of saturated pixels, as a unit vector) plus a magnitude-weighted histogram of
// gradient orientations (8 bins over 180 degrees): enough to tell families (colour) and members
// (stripe angle) apart.
std::vector<double> Features(const cv::Mat& bgr) {
  cv::Mat hsv, gray, gx, gy;
  cv::cvtColor(bgr, hsv, cv::COLOR_BGR2HSV);
  double hx = 0, hy = 0;
  for (int y = 0; y < hsv.rows; ++y) {
    for (int x = 0; x < hsv.cols; ++x) {
      cv::Vec3b p = hsv.at<cv::Vec3b>(y, x);
      if (p[1] < 100) continue;
      double a = p[0] * 2 * M_PI / 180;
      hx += std::cos(a);
      hy += std::sin(a);
    }
  }
  double hn = std::hypot(hx, hy) + 1e-9;
  cv::cvtColor(bgr, gray, cv::COLOR_BGR2GRAY);
  cv::Sobel(gray, gx, CV_32F, 1, 0);
  cv::Sobel(gray, gy, CV_32F, 0, 1);
  std::vector<double> hist(8, 0.0);
  double total = 1e-9;
  for (int y = 0; y < gray.rows; ++y) {
    for (int x = 0; x < gray.cols; ++x) {
      double dx = gx.at<float>(y, x), dy = gy.at<float>(y, x), m = std::hypot(dx, dy);
      double angle = std::fmod(std::atan2(dy, dx) + 2 * M_PI, M_PI);
      hist[std::min(7, int(angle / M_PI * 8))] += m;
      total += m;
    }
  }
  std::vector<double> f = {2 * hx / hn, 2 * hy / hn};
  for (double h : hist) f.push_back(4 * h / total);
  return f;
}

TEST(Synth, WritesAnImageNetTreeAndOfficialFormatFiles) {
  testing::TempDir dir;
  SynthResult r = Synthesize(Options(dir.path()));
  EXPECT_EQ(r.families, 4);
  EXPECT_EQ(r.images, 16u * 8);
  ImageNetIndex index = IndexImageNetRoot(dir.path(), {});
  ASSERT_EQ(index.classes.size(), 16u);
  EXPECT_EQ(index.num_train, 16u * 8);
  EXPECT_EQ(index.classes[0].synset.name, r.classes[0].name);
  for (const ClassImages& c : index.classes) {
    cv::Mat img = cv::imread(dir.path() + "/" + c.train[0], cv::IMREAD_UNCHANGED);
    ASSERT_EQ(img.cols, 64);
    ASSERT_EQ(img.rows, 48);
    ASSERT_EQ(img.channels(), 3);
  }
  // Whole families are held out: 1 of 4 families tests, 3 train.
  PairsTable train = PairsTable::Read(r.train_pairs);
  std::vector<TestClass> test = ReadTestPairs(r.test_pairs);
  EXPECT_EQ(train.size(), 12u);
  EXPECT_EQ(test.size(), 4u);
  for (size_t k = 0; k < test.size(); k += 2) {
    EXPECT_EQ(r.classes[std::stoi(test[k].class_id) - 1].family, r.classes[std::stoi(test[k + 1].class_id) - 1].family);
    EXPECT_EQ(test[k].context_samples.size() + test[k].test_samples.size(), 8u);
  }
  nlohmann::json split = nlohmann::json::parse(std::ifstream(r.split));
  EXPECT_EQ(split["train"].size() + split["test"].size(), 16u);
  // Neighbours: the rest of the family first, then the others; every listed image belongs to that
  // class.
  for (size_t i = 0; i < train.size(); ++i) {
    const ClassPairs& c = train.classes()[i];
    const SynthClass& me = r.classes[std::stoi(c.class_id) - 1];
    ASSERT_EQ(c.neighbors.size(), 11u);
    for (size_t j = 0; j < c.neighbors.size(); ++j) {
      const SynthClass& other = r.classes[std::stoi(c.neighbors[j].class_id) - 1];
      EXPECT_EQ(other.family == me.family, j < 3) << c.class_name << " neighbour " << j;
      EXPECT_NE(c.neighbors[j].image_path.find(other.wnid), std::string::npos);
    }
  }
  // The synthetic table drives the episode policy like the official one.
  Episode e = TrainEpisodes(train, EpisodeConfig{}).Build(0, 0);
  EXPECT_EQ(e.examples.size(), 32u);
}

TEST(Synth, SameSeedWritesTheSameBytes) {
  testing::TempDir a, b;
  SynthOptions o = Options(a.path());
  o.classes = 8;
  o.images_per_class = 2;
  Synthesize(o);
  o.out = b.path();
  Synthesize(o);
  for (const char* f : {"/train/n90000003/n90000003_1.JPEG", "/train_pairs.jsonl", "/LOC_synset_mapping.txt"}) {
    EXPECT_TRUE(ReadAll(a.path() + f) == ReadAll(b.path() + f)) << f;
    EXPECT_FALSE(ReadAll(a.path() + f).empty()) << f;
  }
}

TEST(Synth, FamiliesShareColourAndMembersAreLearnableByNearestCentroid) {
  testing::TempDir dir;
  SynthOptions o = Options(dir.path());
  o.images_per_class = 12;
  SynthResult r = Synthesize(o);
  // Features of every image; centroids from the first 8 images of each class, accuracy on the
  // last 4.
  std::vector<std::vector<double>> centroid(r.classes.size(), std::vector<double>(10, 0.0));
  std::vector<std::pair<int, std::vector<double>>> held_out;
  for (const SynthClass& c : r.classes) {
    for (int k = 0; k < o.images_per_class; ++k) {
      cv::Mat img = cv::imread(dir.path() + "/train/" + c.wnid + "/" + c.wnid + "_" + std::to_string(k) + ".JPEG");
      std::vector<double> f = Features(img);
      if (k < 8) {
        for (size_t d = 0; d < f.size(); ++d) centroid[c.id - 1][d] += f[d] / 8;
      } else {
        held_out.push_back({c.id - 1, f});
      }
    }
  }
  auto dist = [](const std::vector<double>& a, const std::vector<double>& b) {
    double s = 0;
    for (size_t d = 0; d < a.size(); ++d) s += (a[d] - b[d]) * (a[d] - b[d]);
    return s;
  };
  int correct = 0, family_correct = 0;
  for (const auto& [label, f] : held_out) {
    int best = 0;
    for (size_t c = 1; c < centroid.size(); ++c) {
      if (dist(f, centroid[c]) < dist(f, centroid[best])) best = int(c);
    }
    correct += best == label;
    family_correct += r.classes[best].family == r.classes[label].family;
  }
  const double n = double(held_out.size());
  EXPECT_GT(correct / n, 0.8) << "chance is 1/16";
  EXPECT_GT(family_correct / n, 0.95);
  // Similar within a family: centroids of family members are closer than those of other families.
  double within = 0, across = 0;
  int nw = 0, na = 0;
  for (size_t a = 0; a < centroid.size(); ++a) {
    for (size_t b = a + 1; b < centroid.size(); ++b) {
      double d = dist({centroid[a][0], centroid[a][1]}, {centroid[b][0], centroid[b][1]});
      (r.classes[a].family == r.classes[b].family ? within : across) += d;
      (r.classes[a].family == r.classes[b].family ? nw : na) += 1;
    }
  }
  EXPECT_LT(within / nw * 5, across / na);
}

}  // namespace
}  // namespace lcl::sampler
