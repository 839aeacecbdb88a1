// 2-way evaluation by greedy generation; see evaluator.h.
#include "trainer/evaluator.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <functional>

#include "cluster/errors.h"
#include "cluster/log.h"
#include "sampler/held_out_pairs.h"
#include "sampler/pipeline.h"
#include "sampler/prompt.h"
#include "model/generate.h"

namespace lcl::trainer {
namespace {

std::string Lower(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

// The prompt part of row i of a micro-batch: every token before the last answer (the last labelled run).
std::vector<int64_t> PromptOfRow(const sampler::MicroBatch& mb, int64_t i) {
  const int64_t t = mb.input_ids.size(1);
  const int64_t* ids = mb.input_ids.data_ptr<int64_t>() + i * t;
  const int64_t* labels = mb.labels.data_ptr<int64_t>() + i * t;
  const int64_t* mask = mb.attention_mask.data_ptr<int64_t>() + i * t;
  int64_t len = 0;
  while (len < t && mask[len] != 0) ++len;
  int64_t end = len;  // walk back over padding-free tail: the last labelled run starts the answer
  while (end > 0 && labels[end - 1] == sampler::kIgnoreIndex) --end;
  while (end > 0 && labels[end - 1] != sampler::kIgnoreIndex) --end;
  // HF shift: labels[j] is the token at j, predicted from position j - 1; the answer starts at `end`.
  return std::vector<int64_t>(ids, ids + end);
}

}  // namespace

namespace {

bool IsWordChar(char ch) { return std::isalnum(static_cast<unsigned char>(ch)) != 0; }

// Positions of `label` in `text` standing as a whole word or phrase.
std::vector<size_t> WholeMatches(const std::string& text, const std::string& label) {
  std::vector<size_t> at;
  if (label.empty()) return at;
  for (size_t p = text.find(label); p != std::string::npos; p = text.find(label, p + 1)) {
    const bool left = p == 0 || !IsWordChar(text[p - 1]) || !IsWordChar(label.front());
    const size_t end = p + label.size();
    const bool right = end == text.size() || !IsWordChar(text[end]) || !IsWordChar(label.back());
    if (left && right) at.push_back(p);
  }
  return at;
}

}  // namespace

bool AnswerIsCorrect(const std::string& answer, const std::string& positive, const std::string& negative,
                     AnswerMetric metric) {
  std::string a = Lower(answer);
  const std::string pos = Lower(positive), neg = Lower(negative);
  if (metric == AnswerMetric::kOfficial) {
    return a.find(pos) != std::string::npos && a.find(neg) == std::string::npos;
  }
  if (pos == neg) return false;  // an unanswerable episode
  // The longer label first; blank its matches so that the shorter one inside it does not count again.
  const bool pos_longer = pos.size() >= neg.size();
  const std::string& longer = pos_longer ? pos : neg;
  const std::string& shorter = pos_longer ? neg : pos;
  const std::vector<size_t> long_at = WholeMatches(a, longer);
  for (size_t p : long_at)
    std::fill(a.begin() + static_cast<long>(p), a.begin() + static_cast<long>(p + longer.size()), ' ');
  const bool long_named = !long_at.empty(), short_named = !WholeMatches(a, shorter).empty();
  const bool pos_named = pos_longer ? long_named : short_named, neg_named = pos_longer ? short_named : long_named;
  return pos_named && !neg_named;
}

Evaluator::Evaluator(cluster::ClusterContext& ctx, RunModel& model, const LoadedConfig& loaded)
    : ctx_(ctx),
      model_(model),
      config_(loaded.config),
      episodes_(EvalEpisodeOptionsOf(config_)),
      prompt_(PromptOptionsOf(config_, model_.config.vision.num_patches(), EpisodeUse::kEvaluation)) {
  const EvalSection& ev = config_.eval();
  std::string image_root = config_.data().root();
  if (ev.format() == "isekai") {
    isekai_ = std::make_unique<sampler::IsekaiFile>(sampler::ReadIsekaiFile(ev.isekai(), ev.image_root()));
    image_root = isekai_->image_root;
    input_ = "isekai " + ev.isekai();
    LOG_IF(INFO, ctx_.grid().rank() == 0) << "eval: " << isekai_->items.size() << " ISEKAI episodes from "
                                          << ev.isekai() << ", images under " << image_root;
  } else if (ev.format() == "index") {
    sampler::HeldOutPairs pairs = sampler::ReadHeldOutPairs(ev.index(), ev.image_root());
    classes_ = std::move(pairs.classes);
    image_root = pairs.image_root;
    input_ = "held-out classes of " + ev.index();
    LOG_IF(INFO, ctx_.grid().rank() == 0) << "eval: " << classes_.size() << " held-out classes of " << ev.index()
                                          << " in " << classes_.size() / 2 << " pairs, images under " << image_root;
  } else {
    input_ = DataPathsOf(config_).test_pairs;
    classes_ = sampler::ReadTestPairs(input_);
  }
  if (!isekai_ && classes_.size() < 2) {
    throw DataError(input_ + ": " + std::to_string(classes_.size()) +
                    " test classes; 2-way evaluation needs paired classes (an even number, at least 2)");
  }
  loader_ = std::make_unique<sampler::ImageLoader>(image_root, ImageSpecOf(config_, model_.config.vision.image_size),
                                                   config_.data().max_bad_fraction());
}

Evaluator::~Evaluator() = default;

std::vector<EvalRow> Evaluator::Run() {
  std::vector<EvalRow> rows;
  for (int s : episodes_.shots) rows.push_back(RunShot(s));
  return rows;
}

EvalRow Evaluator::RunShot(int shot) {
  // One episode source per input; `build` and `pool` are what the pipeline and the scoring below use.
  std::unique_ptr<sampler::EvalEpisodes> pairs;
  std::unique_ptr<sampler::IsekaiEpisodes> isekai;
  std::function<sampler::Episode(uint64_t)> build;
  std::function<std::vector<std::string>(int)> pool;
  uint64_t total = 0;
  if (isekai_) {
    isekai = std::make_unique<sampler::IsekaiEpisodes>(*isekai_, shot, episodes_.seed, episodes_.templates);
    build = [&isekai](uint64_t i) { return isekai->Build(i); };
    pool = [&isekai](int c) { return isekai->Pool(c); };
    total = isekai->size();
    LOG_IF(WARNING, isekai->short_lines() > 0 && ctx_.grid().rank() == 0)
        << input_ << ": " << isekai->short_lines() << " of " << total << " lines have fewer than " << shot
        << " support images on a side; they are evaluated with all they have (short_support in eval.jsonl)";
  } else {
    pairs =
        std::make_unique<sampler::EvalEpisodes>(classes_, shot, episodes_.seed, episodes_.labels, episodes_.templates,
                                                episodes_.made_up_max_letters, episodes_.lowercase_names,
                                                /*first_support=*/episodes_.official,
                                                /*max_test_per_class=*/episodes_.official ? 50 : 0);
    build = [&pairs](uint64_t i) { return pairs->Build(i); };
    pool = [this](int c) { return classes_[size_t(c)].context_samples; };
    total = pairs->size();
  }
  sampler::EpisodePipeline pipeline([&build](const sampler::EpisodeKey& k) { return build(k.index); }, pool,
                                    *model_.tokenizer, prompt_, *loader_);

  // Evenly spread episodes over all test classes when capped; DP rank r takes r, r + dp, ...
  const uint64_t n = config_.eval().max_episodes() > 0
                         ? std::min<uint64_t>(total, static_cast<uint64_t>(config_.eval().max_episodes()))
                         : total;
  std::vector<uint64_t> mine;
  for (uint64_t k = static_cast<uint64_t>(ctx_.grid().dp_rank()); k < n; k += ctx_.grid().dp()) {
    mine.push_back(k * total / n);
  }
  EvalRow row;
  row.shots = shot;
  torch::NoGradGuard no_grad;
  lcl::model::GenerateOptions gen;
  gen.max_new_tokens = config_.eval().max_new_tokens();
  gen.eos_token_id = model_.tokenizer->eos_id();
  const size_t batch = static_cast<size_t>(config_.eval().batch());
  for (size_t b = 0; b < mine.size(); b += batch) {
    std::vector<sampler::EpisodeKey> keys;
    for (size_t i = b; i < std::min(mine.size(), b + batch); ++i) keys.push_back({0, mine[i]});
    sampler::MicroBatch mb = pipeline.Build(keys);
    for (size_t i = 0; i < keys.size(); ++i) row.too_long += mb.shots[i] < mb.requested_shots[i];
    // Left-pad the prompts so that every row's next token is at the same position.
    std::vector<std::vector<int64_t>> prompts;
    size_t longest = 0;
    for (int64_t i = 0; i < static_cast<int64_t>(keys.size()); ++i) {
      prompts.push_back(PromptOfRow(mb, i));
      longest = std::max(longest, prompts.back().size());
    }
    const int64_t rows = static_cast<int64_t>(keys.size());
    torch::Tensor ids = torch::full({rows, int64_t(longest)}, model_.tokenizer->pad_id(), torch::kInt64);
    torch::Tensor mask = torch::zeros({rows, int64_t(longest)}, torch::kInt64);
    for (int64_t i = 0; i < rows; ++i) {
      const auto& p = prompts[size_t(i)];
      const int64_t pad = int64_t(longest - p.size());
      ids[i].narrow(0, pad, int64_t(p.size())).copy_(torch::tensor(p, torch::kInt64));
      mask[i].narrow(0, pad, int64_t(p.size())).fill_(1);
    }
    lcl::model::MultimodalBatch in;
    in.input_ids = ids.to(model_.device);
    in.attention_mask = mask.to(model_.device);
    in.images = mb.images.to(model_.device, model_.dtype);
    std::vector<std::vector<int64_t>> out = lcl::model::GreedyGenerate(*model_.model, in, gen);
    for (int64_t i = 0; i < rows; ++i) {
      std::vector<int> toks;
      for (int64_t tkn : out[size_t(i)]) {
        if (tkn != gen.eos_token_id) toks.push_back(static_cast<int>(tkn));
      }
      const std::string answer = model_.tokenizer->Decode(toks);
      const sampler::Episode e = build(keys[size_t(i)].index);
      int64_t pos_shown = 0, neg_shown = 0;
      for (const sampler::ExampleTurn& t : e.examples) (t.positive ? pos_shown : neg_shown) += 1;
      row.short_support += std::min(pos_shown, neg_shown) < shot;
      const AnswerMetric metric = episodes_.official ? AnswerMetric::kOfficial : AnswerMetric::kLcl;
      const bool ok = AnswerIsCorrect(answer, e.positive_label, e.negative_label, metric);
      const bool named = ok || AnswerIsCorrect(answer, e.negative_label, e.positive_label, metric);
      row.correct += ok;
      row.unanswered += !named;
      row.n += 1;
      if (row.example_answer.empty()) {
        row.example_answer =
            "'" + answer + "' (positive '" + e.positive_label + "', negative '" + e.negative_label + "')";
      }
    }
  }
  // TP ranks evaluated the same episodes: count each DP rank's result once (from its tp_rank 0).
  const bool counts = ctx_.grid().tp_rank() == 0;
  torch::Tensor totals = torch::tensor({counts ? row.correct : 0, counts ? row.n : 0, counts ? row.unanswered : 0,
                                        counts ? row.short_support : 0, counts ? row.too_long : 0},
                                       torch::kInt64)
                             .to(ctx_.device());
  ctx_.world().AllReduce(totals, cluster::ReduceOp::kSum);
  totals = totals.cpu();
  row.correct = totals[0].item<int64_t>();
  row.n = totals[1].item<int64_t>();
  row.unanswered = totals[2].item<int64_t>();
  row.short_support = totals[3].item<int64_t>();
  row.too_long = totals[4].item<int64_t>();
  LOG_IF(WARNING, row.too_long > 0 && ctx_.grid().rank() == 0)
      << "eval shots " << shot << ": " << row.too_long << " of " << row.n << " episodes need more than data.max_length "
      << prompt_.max_length << " tokens and were evaluated at fewer shots (too_long_episodes in eval.jsonl); raise "
      << "data.max_length to evaluate every shot";
  return row;
}

std::map<std::string, double> EvalRowExtras(const EvalRow& row) {
  return {{"correct", double(row.correct)},
          {"named_neither", double(row.unanswered)},
          {"short_support", double(row.short_support)},
          {"too_long_episodes", double(row.too_long)}};
}

void PrintEvalTable(const std::vector<EvalRow>& rows, const std::string& title, std::ostream& out) {
  bool any_short = false;
  for (const EvalRow& r : rows) any_short = any_short || r.short_support > 0;
  out << title << "\n";
  out << "| shots | accuracy | correct / n | named neither |" << (any_short ? " short support |" : "") << "\n";
  out << "| ---: | ---: | ---: | ---: |" << (any_short ? " ---: |" : "") << "\n";
  for (const EvalRow& r : rows) {
    char line[160];
    std::snprintf(line, sizeof(line), "| %d | %.3f | %lld / %lld | %lld |", r.shots, r.accuracy(),
                  static_cast<long long>(r.correct), static_cast<long long>(r.n), static_cast<long long>(r.unanswered));
    out << line;
    if (any_short) out << " " << r.short_support << " |";
    out << "\n";
  }
  out.flush();
}

}  // namespace lcl::trainer
