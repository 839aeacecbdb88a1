// Recipes (data.recipe): named sets of data.* values that fill the fields a config leaves unset. "lcl" is this
// project's recipe, the field defaults themselves; "official" is the official LCL code's (docs/training.md says,
// field by field, what it sets and why lcl's own differs).
//
//   LoadedConfig c = LoadTrainConfig("x.pbtxt", {"data.recipe=official", "data.loss_on=all"});
//   // LoadTrainConfig called ApplyRecipe: c.config.data().prompt_layout() == "official", loss_on stays "all"
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "trainer/train_config.h"

namespace lcl::trainer {

// The recipe names, in the order errors list them.
const std::vector<std::string>& RecipeNames();

// The ("field", "value") pairs a recipe sets, field names relative to data. "lcl" sets none. Throws
// lcl::ConfigError listing RecipeNames() for an unknown name.
const std::vector<std::pair<std::string, std::string>>& RecipeFields(const std::string& recipe);

// Sets each field of data.recipe's recipe that neither the file nor a --set gave (a field given explicitly always
// wins), recording its origin as "data.recipe=NAME (where data.recipe was set)". Throws lcl::ConfigError naming
// where data.recipe was set and listing the choices when it names no recipe.
void ApplyRecipe(LoadedConfig* loaded);

}  // namespace lcl::trainer
