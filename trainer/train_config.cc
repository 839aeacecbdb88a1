// Text-format parsing with line-numbered errors, --set overrides through reflection, the value and layout checks,
// and the run plan.
#include "trainer/train_config.h"

#include "cluster/log.h"
#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "cluster/errors.h"
#include "trainer/recipe.h"
#include "trainer/run_options.h"

namespace lcl::trainer {
namespace {

namespace pb = google::protobuf;

// Collects the parser's first error as "file:line:column: message" (lines and columns are 0-based in protobuf).
class FirstErrorCollector : public pb::io::ErrorCollector {
 public:
  explicit FirstErrorCollector(std::string file) : file_(std::move(file)) {}
  void AddError(int line, pb::io::ColumnNumber column, const std::string& message) override {
    if (first_.empty()) {
      first_ = file_ + ":" + std::to_string(line + 1) + ":" + std::to_string(column + 1) + ": " + message;
    }
  }
  void AddWarning(int, pb::io::ColumnNumber, const std::string&) override {}
  const std::string& first() const { return first_; }

 private:
  std::string file_;
  std::string first_;
};

// Records "path.to.field" -> "file:line" for every field present in the parsed file.
void RecordOrigins(const pb::Message& msg, const pb::TextFormat::ParseInfoTree& tree, const std::string& prefix,
                   const std::string& file, std::map<std::string, std::string>* origin) {
  std::vector<const pb::FieldDescriptor*> fields;
  msg.GetReflection()->ListFields(msg, &fields);
  for (const pb::FieldDescriptor* f : fields) {
    const std::string path = prefix.empty() ? f->name() : prefix + "." + f->name();
    pb::TextFormat::ParseLocation loc = tree.GetLocation(f, f->is_repeated() ? 0 : -1);
    if (loc.line >= 0) (*origin)[path] = file + ":" + std::to_string(loc.line + 1);
    if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE && !f->is_repeated()) {
      const pb::TextFormat::ParseInfoTree* nested = tree.GetTreeForNested(f, -1);
      if (nested != nullptr) {
        RecordOrigins(msg.GetReflection()->GetMessage(msg, f), *nested, path, file, origin);
      }
    }
  }
}

std::string FieldNames(const pb::Descriptor* d) {
  std::string names;
  for (int i = 0; i < d->field_count(); ++i) names += (i ? ", " : "") + d->field(i)->name();
  return names;
}

// Sets one scalar (or appends one element of a repeated field) from text; false if the text is not a value of
// the field's type.
bool SetScalar(pb::Message* msg, const pb::FieldDescriptor* f, const std::string& text) {
  const pb::Reflection* r = msg->GetReflection();
  const bool rep = f->is_repeated();
  try {
    size_t used = 0;
    switch (f->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_INT32: {
        int v = std::stoi(text, &used);
        if (used != text.size()) return false;
        rep ? r->AddInt32(msg, f, v) : r->SetInt32(msg, f, v);
        return true;
      }
      case pb::FieldDescriptor::CPPTYPE_INT64: {
        long long v = std::stoll(text, &used);
        if (used != text.size()) return false;
        rep ? r->AddInt64(msg, f, v) : r->SetInt64(msg, f, v);
        return true;
      }
      case pb::FieldDescriptor::CPPTYPE_UINT32:
      case pb::FieldDescriptor::CPPTYPE_UINT64: {
        if (!text.empty() && text[0] == '-') return false;
        unsigned long long v = std::stoull(text, &used);
        if (used != text.size()) return false;
        if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_UINT32) {
          rep ? r->AddUInt32(msg, f, v) : r->SetUInt32(msg, f, v);
        } else {
          rep ? r->AddUInt64(msg, f, v) : r->SetUInt64(msg, f, v);
        }
        return true;
      }
      case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      case pb::FieldDescriptor::CPPTYPE_FLOAT: {
        double v = std::stod(text, &used);
        if (used != text.size()) return false;
        if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_FLOAT) {
          rep ? r->AddFloat(msg, f, v) : r->SetFloat(msg, f, v);
        } else {
          rep ? r->AddDouble(msg, f, v) : r->SetDouble(msg, f, v);
        }
        return true;
      }
      case pb::FieldDescriptor::CPPTYPE_BOOL: {
        bool v;
        if (text == "true" || text == "1") {
          v = true;
        } else if (text == "false" || text == "0") {
          v = false;
        } else {
          return false;
        }
        rep ? r->AddBool(msg, f, v) : r->SetBool(msg, f, v);
        return true;
      }
      case pb::FieldDescriptor::CPPTYPE_STRING:
        rep ? r->AddString(msg, f, text) : r->SetString(msg, f, text);
        return true;
      default:
        return false;
    }
  } catch (const std::exception&) {
    return false;
  }
}

std::string TypeName(const pb::FieldDescriptor* f) {
  return f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE ? "message " + f->message_type()->name()
                                                               : f->cpp_type_name();
}

// Marks every unset scalar as set to its default, so the printed config shows every value the run uses.
void MaterializeDefaults(pb::Message* msg) {
  const pb::Reflection* r = msg->GetReflection();
  const pb::Descriptor* d = msg->GetDescriptor();
  for (int i = 0; i < d->field_count(); ++i) {
    const pb::FieldDescriptor* f = d->field(i);
    if (f->is_repeated()) continue;
    switch (f->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_MESSAGE:
        MaterializeDefaults(r->MutableMessage(msg, f));
        break;
      case pb::FieldDescriptor::CPPTYPE_INT32:
        r->SetInt32(msg, f, r->GetInt32(*msg, f));
        break;
      case pb::FieldDescriptor::CPPTYPE_INT64:
        r->SetInt64(msg, f, r->GetInt64(*msg, f));
        break;
      case pb::FieldDescriptor::CPPTYPE_UINT32:
        r->SetUInt32(msg, f, r->GetUInt32(*msg, f));
        break;
      case pb::FieldDescriptor::CPPTYPE_UINT64:
        r->SetUInt64(msg, f, r->GetUInt64(*msg, f));
        break;
      case pb::FieldDescriptor::CPPTYPE_DOUBLE:
        r->SetDouble(msg, f, r->GetDouble(*msg, f));
        break;
      case pb::FieldDescriptor::CPPTYPE_FLOAT:
        r->SetFloat(msg, f, r->GetFloat(*msg, f));
        break;
      case pb::FieldDescriptor::CPPTYPE_BOOL:
        r->SetBool(msg, f, r->GetBool(*msg, f));
        break;
      case pb::FieldDescriptor::CPPTYPE_STRING:
        r->SetString(msg, f, r->GetString(*msg, f));
        break;
      default:
        break;
    }
  }
}

// The value checks ValidateConfig and ValidateLayout share: each throws ConfigError "<where>: <field> <problem>".
class FieldChecks {
 public:
  explicit FieldChecks(const LoadedConfig& loaded) : loaded_(loaded) {}
  [[noreturn]] void Fail(const std::string& field, const std::string& problem) const {
    throw ConfigError(loaded_.Where(field) + ": " + field + " " + problem);
  }
  void Positive(const std::string& field, double v) const {
    if (!(v > 0) || !std::isfinite(v)) Fail(field, "= " + std::to_string(v) + " must be > 0");
  }
  void NonNegative(const std::string& field, double v) const {
    if (!(v >= 0) || !std::isfinite(v)) Fail(field, "= " + std::to_string(v) + " must be >= 0");
  }
  void InUnitInterval(const std::string& field, double v) const {
    if (!(v >= 0 && v <= 1)) Fail(field, "= " + std::to_string(v) + " must be in [0, 1]");
  }
  void OneOf(const std::string& field, const std::string& v, const std::vector<std::string>& choices) const {
    for (const std::string& ok : choices) {
      if (v == ok) return;
    }
    std::string list;
    for (const std::string& ok : choices) list += (list.empty() ? "" : " | ") + ok;
    Fail(field, "= '" + v + "' is not one of " + list);
  }

 private:
  const LoadedConfig& loaded_;
};

}  // namespace

std::string LoadedConfig::Where(const std::string& field_path) const {
  auto it = origin.find(field_path);
  if (it != origin.end()) return it->second;
  return (path.empty() ? std::string("defaults") : path) + " (" + field_path + " not set: default)";
}

void ApplyOverride(const std::string& assignment, LoadedConfig* loaded) {
  const std::string where = "--set " + assignment;
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw ConfigError(where + ": expected path.to.field=value (e.g. --set optimizer.lr=3e-4)");
  }
  const std::string path = assignment.substr(0, eq);
  const std::string value = assignment.substr(eq + 1);
  pb::Message* msg = &loaded->config;
  std::string walked;
  std::stringstream parts(path);
  std::string part;
  std::vector<std::string> names;
  while (std::getline(parts, part, '.')) names.push_back(part);
  for (size_t i = 0; i < names.size(); ++i) {
    const pb::Descriptor* d = msg->GetDescriptor();
    const pb::FieldDescriptor* f = d->FindFieldByName(names[i]);
    const std::string scope = walked.empty() ? std::string("the top level") : "'" + walked + "'";
    if (f == nullptr) {
      throw ConfigError(where + ": no field '" + names[i] + "' in " + scope + "; fields there: " + FieldNames(d));
    }
    walked += (walked.empty() ? "" : ".") + names[i];
    const bool last = i + 1 == names.size();
    if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      if (last)
        throw ConfigError(where + ": '" + walked +
                          "' is a section; set one of its fields: " + FieldNames(f->message_type()));
      msg = msg->GetReflection()->MutableMessage(msg, f);
      continue;
    }
    if (!last) throw ConfigError(where + ": '" + walked + "' is a " + TypeName(f) + ", not a section");
    if (f->is_repeated()) {
      msg->GetReflection()->ClearField(msg, f);
      std::stringstream items(value);
      std::string item;
      while (std::getline(items, item, ',')) {
        if (!SetScalar(msg, f, item)) {
          throw ConfigError(where + ": '" + item + "' is not a " + TypeName(f) + " (a comma-separated list)");
        }
      }
    } else if (!SetScalar(msg, f, value)) {
      throw ConfigError(where + ": '" + value + "' is not a " + TypeName(f) + " value for " + walked);
    }
  }
  loaded->origin[path] = where;
}

LoadedConfig LoadTrainConfig(const std::string& path, const std::vector<std::string>& overrides) {
  LoadedConfig loaded;
  loaded.path = path;
  if (!path.empty()) {
    std::ifstream in(path);
    // An ifstream opens a directory and reads it as empty: an empty config, silently.
    if (std::filesystem::is_directory(path)) {
      throw ConfigError("config file '" + path +
                        "' is a directory; give a .pbtxt file with --config (examples: launch/configs/)");
    }
    if (!in) {
      throw ConfigError("config file '" + path + "' cannot be read (" + std::strerror(errno) +
                        "); give an existing .pbtxt with --config (examples: launch/configs/)");
    }
    std::stringstream text;
    text << in.rdbuf();
    FirstErrorCollector errors(path);
    pb::TextFormat::ParseInfoTree tree;
    pb::TextFormat::Parser parser;
    parser.RecordErrorsTo(&errors);
    parser.WriteLocationsTo(&tree);
    if (!parser.ParseFromString(text.str(), &loaded.config)) {
      throw ConfigError(errors.first() + " (the schema with every field is trainer/config.proto; docs/config.md)");
    }
    RecordOrigins(loaded.config, tree, "", path, &loaded.origin);
  }
  for (const std::string& o : overrides) ApplyOverride(o, &loaded);
  ApplyRecipe(&loaded);  // last: the file's fields and every --set win over the recipe's
  return loaded;
}

void ValidateConfig(const LoadedConfig& loaded) {
  const TrainConfig& c = loaded.config;
  const FieldChecks check(loaded);
  if (c.run_dir().empty()) check.Fail("run_dir", "is empty; give an output directory");
  if (c.model().path().empty()) {
    check.Fail("model.path",
               "is empty; give a model directory (a LLaVA checkpoint, or make one from a preset with "
               "`lcl model init --preset tiny --out DIR`)");
  }
  // An evaluation of an ISEKAI file or an index needs no ImageNet root; training does (BuildData checks it).
  if (c.data().root().empty() && c.eval().format() == "test_pairs" && c.eval().test_pairs().empty()) {
    check.Fail("data.root", "is empty; give an ImageNet-style root (`lcl data synth` makes one)");
  }
  check.OneOf("data.policy", c.data().policy(), {"2way_weight", "2way_random_shot", "2way_ref", "jigsaw"});
  if (c.data().policy() == "2way_ref" && c.data().shot() < 3) {
    check.Fail("data.shot", "= " + std::to_string(c.data().shot()) +
                                " must be >= 3 with data.policy 2way_ref (it draws 3..shot images per side)");
  }
  check.OneOf("data.pad_color", c.data().pad_color(), {"mean", "white"});
  check.OneOf("data.prompt_layout", c.data().prompt_layout(), {"vicuna", "official", "compact"});
  check.OneOf("data.recipe", c.data().recipe(), RecipeNames());
  check.OneOf("data.loss_on", c.data().loss_on(), {"all", "final"});
  check.OneOf("data.too_long", c.data().too_long(), {"drop_shots", "reject"});
  check.Positive("data.min_shot", c.data().min_shot());
  if (!c.data().eval_question().empty()) {
    const std::string& q = c.data().eval_question();
    const size_t at = q.find("<image>");
    if (at == std::string::npos || q.find("<image>", at + 1) != std::string::npos) {
      check.Fail("data.eval_question",
                 "= '" + q + "' must contain \"<image>\" exactly once (where the query image goes)");
    }
  }
  if (!c.data().mix_files().empty() || !c.data().mix_weights().empty()) {
    try {
      MixFilesOf(c);
    } catch (const ConfigError& e) {
      throw ConfigError(loaded.Where(c.data().mix_weights().empty() ? "data.mix_files" : "data.mix_weights") + ": " +
                        e.what());
    }
  }
  check.Positive("data.shot", c.data().shot());
  check.Positive("data.made_up_max_letters", c.data().made_up_max_letters());
  check.Positive("data.max_length", c.data().max_length());
  check.Positive("data.workers", c.data().workers());
  check.Positive("data.prefetch", c.data().prefetch());
  check.NonNegative("data.feature_cache_memory_mb", c.data().feature_cache_memory_mb());
  check.InUnitInterval("data.max_bad_fraction", c.data().max_bad_fraction());
  check.InUnitInterval("data.made_up_negative", c.data().made_up_negative());
  check.OneOf("parallel.device", c.parallel().device(), {"auto", "cpu", "cuda"});
  if (c.parallel().tp() < 1) check.Fail("parallel.tp", "= " + std::to_string(c.parallel().tp()) + " must be >= 1");
  check.Positive("parallel.bucket_mb", c.parallel().bucket_mb());
  check.Positive("parallel.collective_timeout_s", c.parallel().collective_timeout_s());
  check.NonNegative("parallel.threads", c.parallel().threads());
  check.OneOf("parallel.wait", c.parallel().wait(), {"sleep", "spin"});
  check.OneOf("precision", c.precision(), {"auto", "fp32", "bf16"});
  if (c.batch().micro_batch() < 1) {
    check.Fail("batch.micro_batch", "= " + std::to_string(c.batch().micro_batch()) + " must be >= 1");
  }
  if (c.batch().grad_accum() < 0) {
    check.Fail("batch.grad_accum", "= " + std::to_string(c.batch().grad_accum()) + " must be >= 0 (0 = derived)");
  }
  if (c.batch().pack_tokens() < 0) {
    check.Fail("batch.pack_tokens", "= " + std::to_string(c.batch().pack_tokens()) +
                                        " must be >= 0 (0 = no packing; N = rows of at most N tokens)");
  }
  if (c.batch().global_batch() < 0) {
    check.Fail("batch.global_batch", "= " + std::to_string(c.batch().global_batch()) + " must be >= 0 (0 = derived)");
  }
  check.Positive("optimizer.lr", c.optimizer().lr());
  check.NonNegative("optimizer.min_lr", c.optimizer().min_lr());
  if (c.optimizer().min_lr() > c.optimizer().lr()) {
    check.Fail("optimizer.min_lr", "= " + std::to_string(c.optimizer().min_lr()) + " is above optimizer.lr");
  }
  for (const char* b : {"optimizer.beta1", "optimizer.beta2"}) {
    double v = std::string(b) == "optimizer.beta1" ? c.optimizer().beta1() : c.optimizer().beta2();
    if (!(v >= 0 && v < 1)) check.Fail(b, "= " + std::to_string(v) + " must be in [0, 1)");
  }
  check.Positive("optimizer.eps", c.optimizer().eps());
  check.NonNegative("optimizer.weight_decay", c.optimizer().weight_decay());
  check.InUnitInterval("optimizer.warmup_ratio", c.optimizer().warmup_ratio());
  check.NonNegative("optimizer.clip_norm", c.optimizer().clip_norm());
  if (c.schedule().total_steps() < 0) check.Fail("schedule.total_steps", "must be >= 0");
  if (c.schedule().total_steps() == 0) check.Positive("schedule.epochs", c.schedule().epochs());
  check.Positive("logging.every_steps", c.logging().every_steps());
  try {
    ParseStepList(c.logging().trace_steps());
  } catch (const ConfigError& e) {
    check.Fail("logging.trace_steps", e.what());
  }
  check.NonNegative("eval.every_steps", c.eval().every_steps());
  check.NonNegative("eval.max_episodes", c.eval().max_episodes());
  check.Positive("eval.max_new_tokens", c.eval().max_new_tokens());
  check.Positive("eval.batch", c.eval().batch());
  check.OneOf("eval.labels", c.eval().labels(), {"made_up", "class_names"});
  check.OneOf("eval.format", c.eval().format(), {"test_pairs", "isekai", "index"});
  check.OneOf("eval.protocol", c.eval().protocol(), {"lcl", "official"});
  if (c.eval().protocol() == "official" && c.eval().has_labels() && c.eval().labels() != "class_names") {
    check.Fail("eval.labels", "= " + c.eval().labels() +
                                  " but eval.protocol = official scores the class names; drop eval.labels or set "
                                  "eval.protocol: lcl");
  }
  if (c.eval().format() == "isekai" && c.eval().isekai().empty()) {
    check.Fail("eval.isekai", "is empty but eval.format is isekai; give the ISEKAI-style jsonl file");
  }
  if (c.eval().format() == "index" && c.eval().index().empty()) {
    check.Fail("eval.index", "is empty but eval.format is index; give an index JSON from `lcl data index --out`");
  }
  for (int s : c.eval().shots()) {
    if (s < 0) check.Fail("eval.shots", "contains " + std::to_string(s) + "; shots must be >= 0");
  }
  check.NonNegative("checkpoint.every_steps", c.checkpoint().every_steps());
  check.NonNegative("checkpoint.keep_last", c.checkpoint().keep_last());
  check.NonNegative("checkpoint.keep_every", c.checkpoint().keep_every());
  check.NonNegative("checkpoint.test_phase_delay_ms", c.checkpoint().test_phase_delay_ms());
}

void ValidateLayout(const LoadedConfig& loaded, int world_size) {
  const TrainConfig& c = loaded.config;
  const FieldChecks check(loaded);
  const int tp = c.parallel().tp();
  if (world_size % tp != 0) {
    check.Fail("parallel.tp", "= " + std::to_string(tp) + " does not divide the world size " +
                                  std::to_string(world_size) + "; launch a multiple of tp ranks or change parallel.tp");
  }
  const int dp = world_size / tp;
  const int micro = c.batch().micro_batch();
  const int per_accum = micro * dp;  // episodes one accumulation step takes over all DP ranks
  const int ga = c.batch().grad_accum();
  const int gb = c.batch().global_batch();
  if (gb == 0) return;
  if (gb % per_accum != 0) {
    check.Fail("batch.global_batch", "= " + std::to_string(gb) + " cannot be formed from micro_batch " +
                                         std::to_string(micro) + " x dp " + std::to_string(dp) +
                                         " (= " + std::to_string(per_accum) + " episodes per micro-step); use a " +
                                         "multiple of " + std::to_string(per_accum));
  }
  if (ga > 0 && ga != gb / per_accum) {
    check.Fail("batch.grad_accum", "= " + std::to_string(ga) + " disagrees with global_batch " + std::to_string(gb) +
                                       " / (micro_batch " + std::to_string(micro) + " x dp " + std::to_string(dp) +
                                       ") = " + std::to_string(gb / per_accum) + "; set only one of them");
  }
}

RunPlan PlanRun(const LoadedConfig& loaded, int world_size, uint64_t episodes_per_epoch) {
  const TrainConfig& c = loaded.config;
  RunPlan plan;
  plan.world_size = world_size;
  plan.tp = c.parallel().tp();
  CHECK(plan.tp >= 1 && world_size % plan.tp == 0 && c.batch().micro_batch() >= 1)
      << "PlanRun takes a config that ValidateConfig and ValidateLayout accepted";
  plan.dp = world_size / plan.tp;
  plan.micro_batch = c.batch().micro_batch();
  const int per_accum = plan.micro_batch * plan.dp;
  const int ga = c.batch().grad_accum();
  const int gb = c.batch().global_batch();
  plan.grad_accum = gb > 0 ? gb / per_accum : std::max(ga, 1);
  plan.global_batch = plan.grad_accum * per_accum;
  plan.episodes_per_epoch = episodes_per_epoch;
  plan.total_steps = c.schedule().total_steps();
  if (plan.total_steps == 0 && episodes_per_epoch > 0) {
    plan.total_steps = static_cast<int64_t>(
        std::ceil(c.schedule().epochs() * static_cast<double>(episodes_per_epoch) / plan.global_batch));
  }
  return plan;
}

std::string ConfigText(const TrainConfig& config) {
  TrainConfig full = config;
  MaterializeDefaults(&full);
  std::string out;
  pb::TextFormat::Printer printer;
  printer.PrintToString(full, &out);
  return out;
}

std::set<int64_t> ParseStepList(const std::string& text) {
  std::set<int64_t> steps;
  const auto bad = [&](const std::string& why) {
    return ConfigError("= '" + text + "' " + why + "; write steps from 1 as \"5\", \"5-7\" or \"3,10-12\"");
  };
  const auto number = [&](const std::string& s) {
    if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos || s.size() > 12) {
      throw bad("has '" + s + "', which is not a step number");
    }
    const int64_t v = std::stoll(s);
    if (v < 1) throw bad("names step 0");
    return v;
  };
  size_t pos = 0;
  while (pos < text.size()) {
    size_t comma = text.find(',', pos);
    if (comma == std::string::npos) comma = text.size();
    std::string item = text.substr(pos, comma - pos);
    item.erase(0, item.find_first_not_of(' '));
    item.erase(item.find_last_not_of(' ') + 1);
    const size_t dash = item.find('-');
    const int64_t lo = number(item.substr(0, dash));
    const int64_t hi = dash == std::string::npos ? lo : number(item.substr(dash + 1));
    if (hi < lo) throw bad("has the range '" + item + "', which ends before it starts");
    if (hi - lo > 100000) throw bad("has the range '" + item + "', more than 100000 steps");
    for (int64_t v = lo; v <= hi; ++v) steps.insert(v);
    pos = comma + 1;
    if (comma + 1 == text.size()) throw bad("ends with a comma");
  }
  return steps;
}

}  // namespace lcl::trainer
