// Plugins that are wrong on purpose, one per refusal the loader must make. Each is built
// from this file with one of the BAD_* macros defined (see tests/CMakeLists.txt); each
// declares the launcher 'bad', so the file name is all that is wrong with BAD_MISNAMED.
#include "idle.hpp"

#if defined(BAD_NO_ENTRY)
// A real shared library that exports something, but not dshost_plugin_v1.
extern "C" DSHOST_EXPORT int not_a_dshost_entry(void) { return 42; }
#else

namespace {

// One option declaration with the defect its BAD_* macro names.
#if defined(BAD_NULL_DEFAULT)
const dshost_option kOptions[] = {
    DSHOST_OPTION("depth", DSHOST_OPTION_INT, nullptr, nullptr, "how deep")};
#elif defined(BAD_UNPARSABLE_DEFAULT)
const dshost_option kOptions[] = {
    DSHOST_OPTION("mode", DSHOST_OPTION_STRING, "fast", nullptr, "how")};
#elif defined(BAD_OUT_OF_RANGE_DEFAULT)
const dshost_option kOptions[] = {
    DSHOST_OPTION_RANGE("depth", DSHOST_OPTION_INT, "0", 1, 8, "how deep")};
#elif defined(BAD_DUPLICATE_OPTION)
const dshost_option kOptions[] = {
    DSHOST_OPTION("mode", DSHOST_OPTION_STRING, "\"a\"", nullptr, "how"),
    DSHOST_OPTION("mode", DSHOST_OPTION_STRING, "\"b\"", nullptr, "how")};
#elif defined(BAD_OPTION_NAMED_PLUGIN)
const dshost_option kOptions[] = {
    DSHOST_OPTION("plugin", DSHOST_OPTION_STRING, "\"a\"", nullptr, "which")};
#else
const dshost_option kOptions[] = {
    DSHOST_OPTION("mode", DSHOST_OPTION_STRING, "\"a\"", "a|b", "how")};
#endif

[[maybe_unused]] dshost_launcher_api small_table() {
  dshost_launcher_api api = *dshost::launcher_api<Idle>();
  api.struct_size = sizeof(size_t) * 2;  // claims to end before create/destroy/launch
  return api;
}

}  // namespace

extern "C" DSHOST_EXPORT const dshost_plugin_descriptor* dshost_plugin_v1(void) {
  static dshost_plugin_descriptor d = {sizeof(dshost_plugin_descriptor),
                                       DSHOST_ABI_MAJOR,
                                       DSHOST_ABI_MINOR,
                                       DSHOST_KIND_LAUNCHER,
                                       "bad",
                                       "0.0.1",
                                       "wrong on purpose",
                                       "",
                                       DSHOST_CXX11_ABI,
                                       kOptions,
                                       sizeof(kOptions) / sizeof(kOptions[0]),
                                       dshost::launcher_api<Idle>()};
#if defined(BAD_ABI_MAJOR)
  d.abi_major = DSHOST_ABI_MAJOR + 1;
#elif defined(BAD_ABI_MINOR)
  d.abi_minor = DSHOST_ABI_MINOR + 1;
#elif defined(BAD_TORCH)
  d.torch_version = "0.1.0";
#elif defined(BAD_TABLE_SIZE)
  static const dshost_launcher_api api = small_table();
  d.api = &api;
#endif
  return &d;
}
#endif
