// The recipe table and its application to a loaded config; see recipe.h.
#include "trainer/recipe.h"

#include "cluster/errors.h"

namespace lcl::trainer {
namespace {

// What the official code does, with where it does it (github isekai-portal/Link-Context-Learning).
const std::vector<std::pair<std::string, std::string>>& OfficialFields() {
  static const std::vector<std::pair<std::string, std::string>> fields = {
      // single_image_convsation.py: one conversation per turn, each with its bos; base_conversation.py: the
      // causal_v1.0 / hypnotized_ans_v1.0 / final_v1.0 templates.
      {"prompt_layout", "official"},
      // __getitem_icl__ sets every label before the last turn to IGNORE_INDEX.
      {"loss_on", "final"},
      {"system",
       "You should find the causal relationship between the examples I am going to show you. And use that to answer "
       "to the [FINAL QUESTION]."},
      // ImageNetTest100Eval2Way.policy_2way and ISEKAIEval2Way.policy_2way ask this, whatever the template file.
      {"eval_question", "Based on the previous examples, what is in the image <image>?"},
      // It never drops an example pair (model_max_length 30000): an episode that does not fit is not its recipe.
      {"too_long", "reject"},
      // lcl_7b.py: mm_use_im_start_end=True.
      {"image_markers", "true"},
      // imagenet1k.py get_samples: random.choice over the samples at every draw; names .lower()'d; transform.py
      // Expand2square pads with (255, 255, 255).
      {"draw_with_replacement", "true"},
      {"lowercase_names", "true"},
      {"pad_color", "white"},
  };
  return fields;
}

std::string Choices() {
  std::string list;
  for (const std::string& name : RecipeNames()) list += (list.empty() ? "" : " | ") + name;
  return list;
}

}  // namespace

const std::vector<std::string>& RecipeNames() {
  static const std::vector<std::string> names = {"lcl", "official"};
  return names;
}

const std::vector<std::pair<std::string, std::string>>& RecipeFields(const std::string& recipe) {
  static const std::vector<std::pair<std::string, std::string>> none;
  if (recipe == "lcl") return none;  // the field defaults are lcl's recipe
  if (recipe == "official") return OfficialFields();
  throw ConfigError("unknown recipe '" + recipe + "': use " + Choices());
}

void ApplyRecipe(LoadedConfig* loaded) {
  const std::string recipe = loaded->config.data().recipe();
  const std::string where = loaded->Where("data.recipe");
  if (recipe != "lcl" && recipe != "official") {
    throw ConfigError(where + ": data.recipe = '" + recipe + "' is not one of " + Choices());
  }
  for (const auto& [field, value] : RecipeFields(recipe)) {
    const std::string path = "data." + field;
    if (loaded->origin.count(path) != 0) continue;  // given explicitly: it wins
    ApplyOverride(path + "=" + value, loaded);
    loaded->origin[path] = "data.recipe=" + recipe + " (" + where + ")";
  }
}

}  // namespace lcl::trainer
