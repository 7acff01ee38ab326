// The plugin loader refuses every file that is not a usable plugin, each with its own
// message, and loads the real ones.
#include "core/error.h"
#include "core/plugin_loader.h"
#include "tests/test_util.h"

#include <gtest/gtest.h>

namespace dshost {
namespace {

const std::string kMinor = std::to_string(DSHOST_ABI_MINOR);  // this host's ABI minor

std::string test_plugin(const std::string& name) {
  return std::string(DSHOST_TEST_PLUGIN_DIR) + "/" + name;
}

// The message of the UserError that loading `file` throws ("" if it loads).
std::string refusal(const std::string& file) {
  try {
    load_plugin_file(file);
  } catch (const UserError& e) {
    EXPECT_EQ(e.exit_code(), 2);
    return e.what();
  }
  return "";
}

TEST(Loader, LoadsTheBundledPlugins) {
  const PluginCatalog catalog(DSHOST_BUILD_PLUGIN_DIR);
  const LoadedPlugin ddp = catalog.load(DSHOST_KIND_STRATEGY, "ddp", "test");
  EXPECT_STREQ(ddp.descriptor->name, "ddp");
  EXPECT_EQ(ddp.descriptor->abi_major, DSHOST_ABI_MAJOR);
  const LoadedPlugin local = catalog.load(DSHOST_KIND_LAUNCHER, "local", "test");
  EXPECT_STREQ(local.descriptor->torch_version, "");  // launchers need no LibTorch
}

TEST(Loader, RefusesAFileThatIsNotASharedLibrary) {
  const std::string file = test::write_file(test::scratch_dir("loader_text") +
                                            "/dshost_model_text.so", "just text\n");
  EXPECT_NE(refusal(file).find("not a shared library (no ELF header)"), std::string::npos)
      << refusal(file);
}

TEST(Loader, RefusesASharedLibraryWithoutTheEntrySymbol) {
  const std::string why = refusal(test_plugin("dshost_launcher_bad_no_entry.so"));
  EXPECT_NE(why.find("a shared library but not a dshost plugin: it exports no dshost_plugin_v1"),
            std::string::npos) << why;
}

TEST(Loader, RefusesAnotherAbiMajorNamingBothVersions) {
  const std::string why = refusal(test_plugin("dshost_launcher_bad_abi_major.so"));
  EXPECT_NE(why.find("built for dshost ABI 2." + kMinor + ", but this host implements ABI 1." + kMinor),
            std::string::npos) << why;
}

TEST(Loader, RefusesANewerAbiMinor) {
  const std::string why = refusal(test_plugin("dshost_launcher_bad_abi_minor.so"));
  EXPECT_NE(why.find("built for dshost ABI 1." + std::to_string(DSHOST_ABI_MINOR + 1) + ", but this host implements ABI 1." + kMinor),
            std::string::npos) << why;
}

TEST(Loader, RefusesAnotherLibTorch) {
  const std::string why = refusal(test_plugin("dshost_launcher_bad_torch.so"));
  EXPECT_NE(why.find("built against LibTorch 0.1.0"), std::string::npos) << why;
  EXPECT_NE(why.find("rebuild the plugin against the host's LibTorch"), std::string::npos) << why;
}

TEST(Loader, RefusesATableSmallerThanTheAbiRequires) {
  const std::string why = refusal(test_plugin("dshost_launcher_bad_table_size.so"));
  EXPECT_NE(why.find("its launcher table is 16 bytes, smaller than the"), std::string::npos) << why;
}

TEST(Loader, APluginWhoseCreateFailsStopsTheRunWithItsMessage) {
  const std::string dir = test::scratch_dir("loader_create_fails");
  const std::string manifest = test::write_file(dir + "/m.toml", R"(
[plugins]
paths = ")" + std::string(DSHOST_TEST_PLUGIN_DIR) + R"("
[launcher]
plugin = "local"
nprocs = 2
[model]
plugin = "failing_model"
[strategy]
plugin = "ddp"
[run]
output_dir = ")" + dir + R"("
)");
  const test::Ran r = test::dshost({"run", manifest});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("model create failed: failing_model refuses to build"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("dshost: error: rank "), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("terminate called"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace dshost
