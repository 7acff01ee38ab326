// The plugin loader refuses every file that is not a usable plugin, each with its own
// message, and loads the real ones.
#include "core/error.h"
#include "core/plugin_loader.h"
#include "tests/test_util.h"

#include <gtest/gtest.h>

#include <filesystem>

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
  const std::string file =
      test::write_file(test::scratch_dir("loader_text") + "/dshost_model_text.so", "just text\n");
  EXPECT_NE(refusal(file).find("not a shared library (no ELF header)"), std::string::npos)
      << refusal(file);
}

TEST(Loader, RefusesASharedLibraryWithoutTheEntrySymbol) {
  const std::string why = refusal(test_plugin("dshost_launcher_bad_no_entry.so"));
  EXPECT_NE(why.find("a shared library but not a dshost plugin: it exports no dshost_plugin_v1"),
            std::string::npos)
      << why;
}

TEST(Loader, RefusesAnotherAbiMajorNamingBothVersions) {
  const std::string why = refusal(test_plugin("dshost_launcher_bad_abi_major.so"));
  EXPECT_NE(
      why.find("built for dshost ABI 2." + kMinor + ", but this host implements ABI 1." + kMinor),
      std::string::npos)
      << why;
}

TEST(Loader, RefusesANewerAbiMinor) {
  const std::string why = refusal(test_plugin("dshost_launcher_bad_abi_minor.so"));
  EXPECT_NE(why.find("built for dshost ABI 1." + std::to_string(DSHOST_ABI_MINOR + 1) +
                     ", but this host implements ABI 1." + kMinor),
            std::string::npos)
      << why;
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

// A launcher that says it succeeded without starting any rank is caught: rank 0 never wrote
// this launch's id into the run directory.
TEST(Loader, ALauncherThatStartsNoRankIsAnError) {
  const std::string dir = test::scratch_dir("loader_idle_launcher");
  const std::string manifest = test::write_file(
      dir + "/m.toml",
      "[plugins]\npaths = \"" + std::string(DSHOST_TEST_PLUGIN_DIR) +
          "\"\n[launcher]\nplugin = \"idle\"\n[model]\n"
          "plugin = \"basic_cnn\"\n[strategy]\nplugin = \"ddp\"\n[run]\noutput_dir = \"" +
          dir + "\"\n");
  const test::Ran r = test::dshost({"run", manifest});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("dshost: error: launcher 'idle' (" DSHOST_TEST_PLUGIN_DIR
                       "/dshost_launcher_idle.so) "
                       "reported success, but no rank 0 of this launch ran: " +
                       dir +
                       "/run/.lock "
                       "does not hold its launch id"),
            std::string::npos)
      << r.err;
}

// A plugin's option declarations are checked when it loads, so an author's mistake is
// reported as theirs and never reaches a run (a NULL default crashed the host).
TEST(Loader, RefusesOptionDeclarationsThatCannotBeUsed) {
  const std::vector<std::pair<std::string, std::string>> cases{
      {"null_default", "option 'depth' has no default value"},
      {"unparsable_default", "option 'mode' has the default 'fast', which is not a TOML value ("},
      {"out_of_range_default",
       "option 'depth' has a default that its own declaration refuses: "
       "depth = integer 0 is out of range [1, 8]: how deep"},
      {"duplicate_option", "option 'mode' is declared twice"},
      {"option_named_plugin",
       "option 'plugin' is named 'plugin', the key that names the plugin itself"}};
  for (const auto& [bad, said] : cases) {
    const std::string file = test_plugin("dshost_launcher_bad_" + bad + ".so");
    const std::string why = refusal(file);
    EXPECT_EQ(why.rfind("plugin " + file + ": " + said, 0), 0u) << why;
    // `plugins --check` makes the same checks as `run`.
    const test::Ran r = test::dshost({"plugins", "--check", file});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.out.find("not a usable plugin: plugin " + file + ": " + said), std::string::npos)
        << r.out;
  }
}

TEST(Loader, RefusesAFileWhoseNameDiffersFromTheDeclaredPlugin) {
  const std::string file = test_plugin("dshost_launcher_bad_misnamed.so");
  EXPECT_EQ(refusal(file),
            "plugin " + file +
                ": it declares launcher 'bad', so its file must be "
                "named dshost_launcher_bad.so to be found; rename the file or the plugin");
}

// A plugin earlier in the search path replaces a bundled one of the same kind and name,
// and `check` and `run` say so, naming both files.
TEST(Loader, APluginThatHidesABundledOneIsNamedWithBoth) {
  const std::string dir = test::scratch_dir("loader_hides");
  const std::string bundled = std::string(DSHOST_BUILD_PLUGIN_DIR) + "/dshost_strategy_ddp.so";
  std::filesystem::copy_file(bundled, dir + "/dshost_strategy_ddp.so");
  const std::string manifest =
      test::write_file(dir + "/m.toml", "[plugins]\npaths = \"" + dir +
                                            "\"\n[launcher]\nplugin = \"local\"\n[model]\nplugin = "
                                            "\"basic_cnn\"\n[strategy]\nplugin = \"ddp\"\n");
  const test::Ran r = test::dshost({"check", manifest});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("dshost: warning: strategy plugin 'ddp' is loaded from " + dir +
                       "/dshost_strategy_ddp.so, which comes first in the search path and hides " +
                       std::filesystem::canonical(bundled).string()),
            std::string::npos)
      << r.err;
}

}  // namespace
}  // namespace dshost
