// Drawing and writing the synthetic ImageNet-format dataset (needs OpenCV).
#include "sampler/synth.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "cluster/errors.h"
#include "sampler/class_index.h"
#include "sampler/pairs_file.h"
#include "sampler/rng.h"

namespace lcl::sampler {
namespace fs = std::filesystem;
namespace {

cv::Scalar HsvToBgr(double hue, double sat, double val) {
  cv::Mat hsv(1, 1, CV_8UC3, cv::Scalar(std::fmod(hue, 360.0) / 2.0, sat * 255, val * 255));
  cv::Mat bgr;
  cv::cvtColor(hsv, bgr, cv::COLOR_HSV2BGR);
  cv::Vec3b p = bgr.at<cv::Vec3b>(0, 0);
  return cv::Scalar(p[0], p[1], p[2]);
}

// The family's shape, centred at c with radius r, as a filled mask.
void DrawShape(cv::Mat& mask, int shape, cv::Point2d c, double r, double rot) {
  std::vector<cv::Point> pts;
  auto poly = [&](int n, double phase) {
    for (int k = 0; k < n; ++k) {
      double a = phase + rot + 2 * M_PI * k / n;
      pts.emplace_back(int(c.x + r * std::cos(a)), int(c.y + r * std::sin(a)));
    }
  };
  switch (shape) {
    case 0:
      cv::circle(mask, c, int(r), 255, cv::FILLED, cv::LINE_AA);
      return;
    case 1:
      poly(4, M_PI / 4);
      break;
    case 2:
      poly(3, -M_PI / 2);
      break;
    default:
      poly(4, 0);
      break;
  }
  cv::fillConvexPoly(mask, pts, 255, cv::LINE_AA);
}

// One image: a pale, nearly uniform background, the family's shape (large, near the centre) in the
// family's hue at the member's shade, dark stripes at the member's angle. Family members differ in both
// shade and stripes: a frozen random tower barely sees stripe angle alone (nearest-support 2-way accuracy
// within a family 0.56 with stripes only, 0.85 with shades; docs/data.md).
cv::Mat DrawImage(const SynthClass& cls, const SynthOptions& o, int k) {
  CounterRng rng({o.seed, static_cast<uint64_t>(cls.id), static_cast<uint64_t>(k), 0x696d67ULL});  // "img"
  const int w = o.width, h = o.height;
  cv::Mat img(h, w, CV_8UC3, HsvToBgr(360 * rng.Uniform(), 0.05 * rng.Uniform(), 0.85 + 0.1 * rng.Uniform()));
  const double side = std::min(w, h);
  const double r = side * (0.38 + 0.03 * rng.Uniform());
  cv::Point2d c(w / 2.0 + (rng.Uniform() - 0.5) * (w - 2 * r) * 0.15,
                h / 2.0 + (rng.Uniform() - 0.5) * (h - 2 * r) * 0.15);
  cv::Mat mask = cv::Mat::zeros(h, w, CV_8U);
  DrawShape(mask, cls.shape, c, r, (rng.Uniform() - 0.5) * 0.3);
  const cv::Scalar base = HsvToBgr(cls.hue + (rng.Uniform() - 0.5) * 10, 0.35 + 0.6 * cls.shade, 1.0 - 0.5 * cls.shade);
  const cv::Scalar dark = base * 0.35;
  const double angle = (cls.stripe_deg + (rng.Uniform() - 0.5) * 8) * M_PI / 180;
  const double period = std::max(4.0, r / 2.5);  // about five stripes across the shape
  const double ca = std::cos(angle), sa = std::sin(angle), phase = rng.Uniform() * period;
  for (int y = 0; y < h; ++y) {
    const uint8_t* m = mask.ptr<uint8_t>(y);
    cv::Vec3b* p = img.ptr<cv::Vec3b>(y);
    for (int x = 0; x < w; ++x) {
      if (m[x] == 0) continue;
      const double t = std::fmod((x - c.x) * ca + (y - c.y) * sa + 1e6 * period + phase, period) / period;
      const cv::Scalar& col = t < 0.5 ? base : dark;
      const double a = m[x] / 255.0;  // antialiased edge
      for (int ch = 0; ch < 3; ++ch) p[x][ch] = cv::saturate_cast<uint8_t>(p[x][ch] * (1 - a) + col[ch] * a);
    }
  }
  // Sensor-like noise from a generator seeded by this image's key (never OpenCV's global RNG).
  cv::Mat noisy, noise(h, w, CV_16SC3);
  cv::RNG noise_rng(rng.NextU64());
  noise_rng.fill(noise, cv::RNG::NORMAL, 0, 6);
  img.convertTo(noisy, CV_16SC3);
  noisy += noise;
  noisy.convertTo(img, CV_8UC3);  // saturating
  return img;
}

// Train neighbours of class `self`: the rest of its family first (nearest stripe angle first), then
// families of the same shape, then the rest; ties by id.
std::vector<int> RankNeighbors(const std::vector<SynthClass>& cls, int self, const std::vector<int>& pool) {
  auto angle_gap = [](double a, double b) {
    double d = std::fabs(a - b);
    return std::min(d, 180 - d);
  };
  auto key = [&](int j) {
    const SynthClass& a = cls[self];
    const SynthClass& b = cls[j];
    int tier = b.family == a.family ? 0 : (b.shape == a.shape ? 1 : 2);
    return std::make_tuple(tier, angle_gap(a.stripe_deg, b.stripe_deg), b.id);
  };
  std::vector<int> out;
  for (int j : pool) {
    if (j != self) out.push_back(j);
  }
  std::sort(out.begin(), out.end(), [&](int x, int y) { return key(x) < key(y); });
  return out;
}

void WriteJson(const nlohmann::json& doc, const std::string& path) {
  std::ofstream out(path, std::ios::trunc);
  out << doc.dump() << "\n";
  out.flush();
  if (!out) throw DataError("cannot write " + path);
}

// Draws and writes every class's JPEGs; returns the relative paths per class.
std::vector<std::vector<std::string>> WriteImages(const std::vector<SynthClass>& classes, const SynthOptions& o) {
  const fs::path root(o.out);
  std::vector<std::vector<std::string>> images(classes.size());
  for (const SynthClass& c : classes) {
    fs::path dir = root / "train" / c.wnid;
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) throw DataError("cannot create " + dir.string() + ": " + ec.message());
    for (int k = 0; k < o.images_per_class; ++k) {
      std::string rel = "train/" + c.wnid + "/" + c.wnid + "_" + std::to_string(k) + ".JPEG";
      if (!cv::imwrite((root / rel).string(), DrawImage(c, o, k), {cv::IMWRITE_JPEG_QUALITY, o.jpeg_quality})) {
        throw DataError("cannot write " + (root / rel).string() + " (disk full or no permission?)");
      }
      images[c.id - 1].push_back(rel);
    }
  }
  return images;
}

// The official train table over the train classes, neighbours family-first.
void WriteTrainPairs(const std::vector<SynthClass>& classes, const std::vector<std::vector<std::string>>& images,
                     const std::vector<int>& train, const SynthOptions& o, const std::string& path) {
  std::vector<ClassPairs> pairs;
  for (int i : train) {
    ClassPairs p{std::to_string(classes[i].id), classes[i].name, images[i], {}};
    std::vector<int> ranked = RankNeighbors(classes, i, train);
    if (ranked.size() > size_t(o.neighbors)) ranked.resize(o.neighbors);
    for (int j : ranked) {
      const std::vector<std::string>& pool = images[j];
      CounterRng rng({o.seed, uint64_t(i), uint64_t(j), 0x6e6272ULL});  // "nbr": the listed image
      p.neighbors.push_back({std::to_string(classes[j].id), classes[j].name, pool[rng.Below(pool.size())]});
    }
    pairs.push_back(std::move(p));
  }
  PairsTable::FromClasses(std::move(pairs), path).Write(path);
}

// Test classes in family order, so that 2k and 2k+1 are members of one family (the hard 2-way
// case); each class's images are split into context (first half) and test samples.
void WriteTestTable(const std::vector<SynthClass>& classes, const std::vector<std::vector<std::string>>& images,
                    const std::vector<int>& test, const std::string& path) {
  std::vector<TestClass> tests;
  for (int i : test) {
    const std::vector<std::string>& all = images[i];
    const long half = long(all.size() / 2);
    tests.push_back({std::to_string(classes[i].id),
                     classes[i].name,
                     {all.begin(), all.begin() + half},
                     {all.begin() + half, all.end()}});
  }
  WriteTestPairs(tests, path);
}

void WriteSplit(const std::vector<SynthClass>& classes, const std::vector<int>& train, const std::vector<int>& test,
                const std::string& path) {
  nlohmann::json families = nlohmann::json::array();
  for (const SynthClass& c : classes) {
    if (c.member == 0) families.push_back(nlohmann::json::array());
    families.back().push_back(c.id);
  }
  nlohmann::json train_ids = nlohmann::json::array(), test_ids = nlohmann::json::array();
  for (int i : train) train_ids.push_back(classes[i].id);
  for (int i : test) test_ids.push_back(classes[i].id);
  WriteJson({{"train", train_ids}, {"test", test_ids}, {"families", families}}, path);
}

// A LLaVA-format instruction file over the train classes: one image -> class name conversation per image, the
// question drawn from a few phrasings (LLaVA's pretraining captions ask about the image the same way).
void WriteInstruct(const std::vector<SynthClass>& classes, const std::vector<std::vector<std::string>>& images,
                   const std::vector<int>& train, const SynthOptions& o, const std::string& path) {
  static const char* const kQuestions[] = {"What is in the image?", "What is this?", "Name the object in the picture.",
                                           "What does this image show?"};
  nlohmann::json records = nlohmann::json::array();
  for (int i : train) {
    for (size_t k = 0; k < images[size_t(i)].size(); ++k) {
      CounterRng rng({o.seed, uint64_t(i), uint64_t(k), 0x696e73ULL});  // "ins": the question
      const std::string question = std::string("<image>\n") + kQuestions[rng.Below(4)];
      records.push_back(
          {{"id", classes[size_t(i)].wnid + "_" + std::to_string(k)},
           {"image", images[size_t(i)][k]},
           {"conversations",
            {{{"from", "human"}, {"value", question}}, {{"from", "gpt"}, {"value", classes[size_t(i)].name}}}}});
    }
  }
  WriteJson(records, path);
}

}  // namespace

SynthResult Synthesize(const SynthOptions& o) {
  SynthResult result;
  result.classes = PlanSynthClasses(o);
  const std::vector<SynthClass>& classes = result.classes;
  result.families = classes.back().family + 1;
  std::vector<int> train, test;
  for (size_t i = 0; i < classes.size(); ++i) (classes[i].test ? test : train).push_back(int(i));
  if (test.size() < 2) {
    throw ConfigError("data synth: the plan left " + std::to_string(test.size()) +
                      " test classes; use more --classes or a larger --family-size");
  }
  const fs::path root(o.out);
  std::vector<std::vector<std::string>> images = WriteImages(classes, o);
  result.images = classes.size() * size_t(o.images_per_class);
  std::vector<SynsetEntry> synsets;
  for (const SynthClass& c : classes) {
    synsets.push_back({c.id, c.wnid, c.name, c.name + ", synthetic"});
  }
  result.synset_mapping = (root / "LOC_synset_mapping.txt").string();
  WriteSynsetMapping(synsets, result.synset_mapping);
  result.train_pairs = (root / "train_pairs.jsonl").string();
  WriteTrainPairs(classes, images, train, o, result.train_pairs);
  result.test_pairs = (root / "test_pairs.jsonl").string();
  WriteTestTable(classes, images, test, result.test_pairs);
  result.split = (root / "class_split.json").string();
  WriteSplit(classes, train, test, result.split);
  result.instruct = (root / "llava_instruct.json").string();
  WriteInstruct(classes, images, train, o, result.instruct);
  return result;
}

}  // namespace lcl::sampler
