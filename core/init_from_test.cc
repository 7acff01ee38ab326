// model.init_from's reading of a weights file's names (core/init_from.h).
#include <dshost/torch.hpp>  // first: ATen's DLPack

#include "core/error.h"
#include "core/init_from.h"
#include "core/safetensors.h"
#include "tests/test_util.h"

#include <gtest/gtest.h>

namespace dshost {
namespace {

// A small GPT-2's tensors by dshost's (Hugging Face GPT2Model's) names, zeros of their shapes.
std::map<std::string, at::Tensor> gpt_like() {
  return {{"wte.weight", at::zeros({16, 4})},
          {"h.0.attn.c_attn.weight", at::zeros({4, 12})},
          {"h.0.ln_1.bias", at::zeros({4})},
          {"ln_f.weight", at::zeros({4})}};
}

std::vector<std::string> with_prefix(const std::string& prefix) {
  std::vector<std::string> names;
  for (const auto& entry : gpt_like()) names.push_back(prefix + entry.first);
  return names;
}

// Of the prefixes a wrapper leaves, the one that matches the model's names, however deep;
// none where the names match as they are or where no prefix makes them.
TEST(InitFromNames, FindTheWrappersPrefix) {
  const auto model = gpt_like();
  EXPECT_EQ(wrapper_prefix(with_prefix("module."), model), "module.");
  EXPECT_EQ(wrapper_prefix(with_prefix("_orig_mod.module."), model), "_orig_mod.module.");
  std::vector<std::string> lm_head = with_prefix("transformer.");
  lm_head.push_back("lm_head.weight");
  EXPECT_EQ(wrapper_prefix(lm_head, model), "transformer.");
  EXPECT_EQ(wrapper_prefix(with_prefix(""), model), "");
  EXPECT_EQ(wrapper_prefix({"features.0.weight", "classifier.1.bias"}, model), "");
  // ln_f.weight alone under "module." does not outweigh the three matching as they are.
  std::vector<std::string> mostly_plain = with_prefix("");
  mostly_plain.erase(mostly_plain.begin());
  mostly_plain.push_back("module.ln_f.weight");
  EXPECT_EQ(wrapper_prefix(mostly_plain, model), "");
}

// A file of `names` (with the model's shapes under their unprefixed names) holding 1, 2, ...
std::string weights_file(const std::string& file, const std::vector<std::string>& names,
                         const std::string& prefix) {
  const auto model = gpt_like();
  std::vector<NamedTensor> tensors;
  float fill = 1;
  for (const std::string& name : names) {
    const auto it = model.find(name.substr(name.rfind(prefix, 0) == 0 ? prefix.size() : 0));
    tensors.push_back(
        {name, at::full(it == model.end() ? at::IntArrayRef{16, 4} : it->second.sizes(), fill++)});
  }
  const std::string path = test::scratch_dir("init_from_names") + "/" + file;
  write_safetensors(path, tensors, {});
  return path;
}

// A DistributedDataParallel state_dict loads into the model it wrapped, every tensor from
// its prefixed name.
TEST(InitFromNames, ADdpStateDictLoadsWithoutItsPrefix) {
  const auto model = gpt_like();
  const std::string path = weights_file("ddp.safetensors", with_prefix("module."), "module.");
  const InitResult r = init_model_from(path, "", "test.toml:1:1", model);
  EXPECT_EQ(r.prefix, "module.");
  EXPECT_EQ(r.loaded, 4);
  float expected = 1;  // the file's order: its names sorted, as the model's are
  for (const auto& [name, value] : model)
    EXPECT_TRUE(at::equal(value, at::full_like(value, expected++))) << name;
}

// GPT2LMHeadModel's state_dict: its transformer's names carry "transformer.", and lm_head's
// weight (tied to wte) has no place in the model: named in the error, loadable once skipped.
TEST(InitFromNames, AnLmHeadModelsStateDictNamesWhatDoesNotFit) {
  std::vector<std::string> names = with_prefix("transformer.");
  names.push_back("lm_head.weight");
  const std::string path = weights_file("lm_head.safetensors", names, "transformer.");
  try {
    init_model_from(path, "", "test.toml:3:1", gpt_like());
    ADD_FAILURE() << "loaded a file with a tensor the model lacks";
  } catch (const UserError& e) {
    EXPECT_EQ(std::string(e.what()),
              "test.toml:3:1: error: model.init_from: " + path +
                  " does not match the model's names (read without the prefix \"transformer.\"); "
                  "the file's tensors not in the model: lm_head.weight. Name those to leave as "
                  "they are in model.init_skip (comma-separated globs, e.g. \"classifier.*\"), or "
                  "check that the file holds this model's weights");
  }
  const auto model = gpt_like();
  const InitResult r = init_model_from(path, "lm_head.weight", "test.toml:3:1", model);
  EXPECT_EQ(r.loaded, 4);
  EXPECT_EQ(model.at("ln_f.weight").sum().item<float>(), 3 * 4) << "the file's third tensor";
}

}  // namespace
}  // namespace dshost
