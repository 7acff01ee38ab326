// The TOML manifest: read once, overridden by --set, and validated section by section
// against option tables (dshost_option arrays). The host's own sections and every
// plugin's section go through the same validator, so unknown keys, types, ranges and
// allowed values are reported the same way, with file:line:column.
#pragma once

#include <dshost/abi.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace dshost {

struct Value {
  dshost_option_type type = DSHOST_OPTION_STRING;
  int64_t i = 0;
  double f = 0;
  bool b = false;
  std::string s;
  std::string origin;  // "m.toml:12:5", "--set train.epochs=3" or "default"
};

// One validated section: every declared key, given or defaulted.
struct Section {
  std::string name;
  std::map<std::string, Value> values;

  const Value& at(const std::string& key) const;
  int64_t get_int(const std::string& key) const { return at(key).i; }
  double get_float(const std::string& key) const { return at(key).f; }
  bool get_bool(const std::string& key) const { return at(key).b; }
  const std::string& get_string(const std::string& key) const { return at(key).s; }
};

struct OptionTable {
  const dshost_option* options = nullptr;
  size_t count = 0;
};

class Manifest {
 public:
  // Reads `path` and applies `overrides` ("section.key=value"; the value is read as TOML,
  // else taken as a string). Throws UserError (exit 2) naming file:line:column.
  static Manifest load(const std::string& path, const std::vector<std::string>& overrides);

  const std::string& path() const;
  // Refuses top-level sections that are not in `known`, with a did-you-mean.
  void check_sections(const std::vector<std::string>& known) const;
  // Validates [name] against `table`; a plugin section also has its `plugin` key.
  Section resolve(const std::string& name, OptionTable table, bool plugin_section = false) const;
  // The value of [section].`key` (the plugin's name) and where it was given; where absent,
  // `fallback`, or an error when there is none.
  Value plugin_name(const std::string& section, const std::string& key = "plugin",
                    const std::string& fallback = "") const;
  // Where [section].key was given, for messages about its value ("m.toml:3:1").
  std::string origin(const std::string& section, const std::string& key) const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

// Checks that a plugin's option declaration can be used: a name other than `plugin`, a
// known type, help text, and a default that parses as TOML of its type and passes its own
// range and allowed values. Throws UserError saying what is wrong with it.
void check_option_declaration(const dshost_option& opt);

// The closest of `candidates` to `word`, or "" if none is close.
std::string closest(const std::string& word, const std::vector<std::string>& candidates);
std::string join(const std::vector<std::string>& items, const std::string& sep = ", ");

}  // namespace dshost
