// The test binary's main: runs the tests, or with --ctest_file=PATH writes the ctest script
// that names each test with its label (test_labels.h), as CMake's gtest_discover_tests does
// without labels.
#include "tests/test_labels.h"

#include <dshost/plugin.hpp>  // this_executable()

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

namespace dshost::test {
namespace {

std::map<std::string, Label>& suite_labels() {
  static std::map<std::string, Label> labels;
  return labels;
}

std::string bracketed(const std::string& text) { return "[==[" + text + "]==]"; }

// One add_test and its properties for each test; slow and gpu tests are named "slow.X" and
// "gpu.X" and run serially.
bool write_ctest_file(const std::string& path) {
  const std::filesystem::path exe = this_executable();
  std::ofstream out(path);
  const testing::UnitTest& all = *testing::UnitTest::GetInstance();
  for (int s = 0; s < all.total_test_suite_count(); ++s) {
    const testing::TestSuite& suite = *all.GetTestSuite(s);
    for (int t = 0; t < suite.total_test_count(); ++t) {
      const testing::TestInfo& test = *suite.GetTestInfo(t);
      const std::string full = cat(suite.name(), ".", test.name());
      const Label label = label_of(test);
      const std::string name = label == Label::unit ? full : cat(label_name(label), ".", full);
      out << "add_test(" << bracketed(name) << " " << bracketed(exe.string()) << " "
          << bracketed("--gtest_filter=" + full) << ")\n"
          << "set_tests_properties(" << bracketed(name) << " PROPERTIES LABELS "
          << label_name(label) << " WORKING_DIRECTORY " << bracketed(exe.parent_path().string())
          << " SKIP_REGULAR_EXPRESSION " << bracketed("\\[  SKIPPED \\]")
          << (label == Label::unit ? "" : " RUN_SERIAL TRUE TIMEOUT 900") << ")\n";
    }
  }
  return static_cast<bool>(out.flush());
}

}  // namespace

bool label_suite(const char* suite, Label label) {
  suite_labels()[suite] = label;
  return true;
}

Label label_of(const testing::TestInfo& test) {
  const std::string name = test.name();
  const size_t parameter = name.find('/');
  if (parameter != std::string::npos && name.find("cuda", parameter) != std::string::npos)
    return Label::gpu;
  std::string suite = test.test_suite_name();
  suite = suite.substr(suite.find('/') + 1);  // without the instantiation's name
  const auto found = suite_labels().find(suite);
  return found == suite_labels().end() ? Label::unit : found->second;
}

std::string label_name(Label label) {
  return label == Label::slow ? "slow" : label == Label::gpu ? "gpu" : "unit";
}

}  // namespace dshost::test

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  const char* flag = "--ctest_file=";
  for (int i = 1; i < argc; ++i)
    if (std::strncmp(argv[i], flag, std::strlen(flag)) == 0)
      return dshost::test::write_ctest_file(argv[i] + std::strlen(flag)) ? 0 : 1;
  return RUN_ALL_TESTS();
}
