// state_dicts saved by torch.save (Debian's python3-torch) read without Python
// (core/torch_pickle.h).
#include "core/torch_pickle.h"

#include "core/error.h"
#include "tests/test_util.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace dshost {
namespace {

// Runs `script` with `path` (and `more`) as sys.argv[1:] under the tests' python3 (with torch).
void python_writes(const std::string& script, const std::string& path,
                   const std::string& more = "") {
  const test::Ran r = test::run({test::python(), "-c", "import sys, torch\n" + script, path, more});
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

class TorchPickle : public testing::TestWithParam<std::string> {};

// In the zip format and in the legacy one (PyTorch before 1.6), which torch.save still writes
// with _use_new_zipfile_serialization=False.
TEST_P(TorchPickle, ReadsEveryDtypeViewsAndSharedStoragesOfAStateDict) {
  const std::string path = test::scratch_dir("torch_pickle_" + GetParam()) + "/state.pth";
  python_writes(
      "from collections import OrderedDict\n"
      "base = torch.arange(12, dtype=torch.float32).reshape(3, 4)\n"
      "torch.save(OrderedDict([('weight', base), ('transposed', base.t()),\n"
      "    ('row', base[1]), ('half', torch.arange(4).half()), ('bf16', "
      "torch.arange(4).bfloat16()),\n"
      "    ('count', torch.tensor(7)), ('ids', torch.arange(-2, 3)), ('mask', torch.tensor([True, "
      "False])),\n"
      "    ('big', torch.arange(70000, dtype=torch.float64))]), sys.argv[1],\n"
      "    _use_new_zipfile_serialization=sys.argv[2] == 'zip')\n",
      path, GetParam());
  EXPECT_TRUE(is_torch_save_file(path));
  const auto t = read_torch_state_dict(path);
  ASSERT_EQ(t.size(), 9u);
  const at::Tensor base = at::arange(12, at::kFloat).reshape({3, 4});
  EXPECT_TRUE(at::equal(t.at("weight"), base));
  EXPECT_TRUE(at::equal(t.at("transposed"), base.t()));
  EXPECT_TRUE(at::equal(t.at("row"), base[1]));
  EXPECT_EQ(t.at("half").scalar_type(), at::kHalf);
  EXPECT_TRUE(at::equal(t.at("half").to(at::kFloat), at::arange(4, at::kFloat)));
  EXPECT_TRUE(at::equal(t.at("bf16").to(at::kFloat), at::arange(4, at::kFloat)));
  EXPECT_EQ(t.at("count").dim(), 0);
  EXPECT_EQ(t.at("count").item<int64_t>(), 7);
  EXPECT_TRUE(at::equal(t.at("ids"), at::arange(-2, 3, at::kLong)));
  EXPECT_TRUE(at::equal(t.at("mask"), at::tensor({1, 0}).to(at::kBool)));
  EXPECT_TRUE(at::equal(t.at("big"), at::arange(70000, at::kDouble)));
  EXPECT_EQ(t.at("transposed").data_ptr(), t.at("weight").data_ptr());  // one storage
}

INSTANTIATE_TEST_SUITE_P(Formats, TorchPickle, testing::Values("zip", "legacy"));

TEST(TorchPickleErrors, WhatIsNotAStateDictIsRefusedNamingTheFile) {
  const std::string dir = test::scratch_dir("torch_pickle_bad");
  python_writes("torch.save(torch.nn.Linear(2, 3), sys.argv[1])\n", dir + "/module.pth");
  try {
    read_torch_state_dict(dir + "/module.pth");
    ADD_FAILURE() << "a pickled module was read";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find(dir + "/module.pth: not a state_dict saved by torch.save "
                                               "that dshost can read (an object of class "
                                               "torch.nn.modules.linear.Linear, not a state_dict)"),
              std::string::npos)
        << e.what();
  }
  python_writes("torch.save({'w': torch.ones(100000)}, sys.argv[1])\n", dir + "/cut.pth");
  const std::string whole = test::read_file(dir + "/cut.pth");
  test::write_file(dir + "/cut.pth", whole.substr(0, whole.size() / 2));
  EXPECT_THROW(read_torch_state_dict(dir + "/cut.pth"), UserError);
  python_writes(
      "torch.save({'w': torch.ones(100000)}, sys.argv[1],"
      " _use_new_zipfile_serialization=False)\n",
      dir + "/cut_legacy.pth");
  const std::string legacy = test::read_file(dir + "/cut_legacy.pth");
  test::write_file(dir + "/cut_legacy.pth", legacy.substr(0, legacy.size() - 100));
  try {
    read_torch_state_dict(dir + "/cut_legacy.pth");
    ADD_FAILURE() << "a cut legacy file was read";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("(the file ends early)"), std::string::npos) << e.what();
  }
  test::write_file(dir + "/text", "not a zip");
  EXPECT_FALSE(is_torch_save_file(dir + "/text"));
}

}  // namespace
}  // namespace dshost
