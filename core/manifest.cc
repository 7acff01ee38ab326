#include "core/manifest.h"

#include "core/error.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

namespace dshost {
namespace {

const char* type_name(dshost_option_type t) {
  switch (t) {
    case DSHOST_OPTION_INT:
      return "an integer";
    case DSHOST_OPTION_FLOAT:
      return "a number";
    case DSHOST_OPTION_BOOL:
      return "true or false";
    case DSHOST_OPTION_STRING:
      return "a string";
  }
  return "?";
}

std::string describe(const toml::node& node) {
  std::ostringstream out;
  if (node.is_table()) return "a table";
  if (node.is_array()) return "an array";
  out << node.type() << " ";
  node.visit([&](auto&& v) {
    if constexpr (toml::is_value<decltype(v)>) out << v;
  });
  return out.str();
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1] ? 1u : 0u)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

std::string suggestion(const std::string& word, const std::vector<std::string>& known) {
  const std::string best = closest(word, known);
  std::string out = best.empty() ? "" : "; did you mean '" + best + "'?";
  return out + " Known: " + join(known) + ".";
}

// Splits "section.key=value".
void split_override(const std::string& text, std::string& section, std::string& key,
                    std::string& value) {
  const size_t eq = text.find('=');
  const size_t dot = text.find('.');
  if (eq == std::string::npos || dot == std::string::npos || dot > eq || dot == 0 || dot + 1 == eq)
    throw UserError(
        cat("--set ", text, ": expected section.key=value, for example ", "--set train.epochs=3"));
  section = text.substr(0, dot);
  key = text.substr(dot + 1, eq - dot - 1);
  value = text.substr(eq + 1);
}

// `node` as the value of option `opt` (`full`: section.key), checked against the option's
// type, range and allowed values; errors name `where`.
Value to_value(const dshost_option& opt, const toml::node& node, const std::string& where,
               const std::string& full) {
  const auto wrong_type = [&] {
    return UserError(
        cat(where, ": error: ", full, " must be ", type_name(opt.type), ", not ", describe(node)));
  };
  Value v;
  v.type = opt.type;
  v.origin = where;
  double number = 0;
  switch (opt.type) {
    case DSHOST_OPTION_INT:
      if (!node.is_integer()) throw wrong_type();
      v.i = **node.as_integer();
      number = static_cast<double>(v.i);
      break;
    case DSHOST_OPTION_FLOAT:
      if (!node.is_number()) throw wrong_type();
      v.f =
          node.is_integer() ? static_cast<double>(**node.as_integer()) : **node.as_floating_point();
      number = v.f;
      break;
    case DSHOST_OPTION_BOOL:
      if (!node.is_boolean()) throw wrong_type();
      v.b = **node.as_boolean();
      break;
    case DSHOST_OPTION_STRING:
      if (!node.is_string()) throw wrong_type();
      v.s = **node.as_string();
      break;
  }
  // Written so that NaN, which compares false with everything, is out of every range.
  if (opt.has_range && !(number >= opt.min && number <= opt.max))
    throw UserError(cat(where, ": error: ", full, " = ", describe(node), " is out of range [",
                        opt.min, ", ", opt.max, "]: ", opt.help));
  if (opt.type == DSHOST_OPTION_STRING && opt.allowed != nullptr) {
    const std::vector<std::string> allowed = split(opt.allowed, '|');
    if (std::find(allowed.begin(), allowed.end(), v.s) == allowed.end()) {
      const std::string best = closest(v.s, allowed);
      throw UserError(cat(where, ": error: ", full, " = \"", v.s, "\" is not one of: ",
                          join(allowed), best.empty() ? "" : "; did you mean '" + best + "'?"));
    }
  }
  return v;
}

}  // namespace

struct Manifest::Impl {
  std::string path;
  toml::table root;
  std::map<std::string, std::string> overridden;  // "section.key" -> "--set section.key=v"

  std::string where(const std::string& section, const std::string& key,
                    const toml::source_region& source) const {
    const auto it = overridden.find(section + "." + key);
    if (it != overridden.end()) return it->second;
    if (source.begin.line == 0)  // a section that only --set made
      for (const auto& [name, given] : overridden)
        if (name.rfind(section + ".", 0) == 0) return given;
    return cat(path, ":", source.begin.line, ":", source.begin.column);
  }
  std::string where(const std::string& section, const std::string& key,
                    const toml::node& node) const {
    return where(section, key, node.source());
  }

  const toml::table* section(const std::string& name) const {
    const toml::node* node = root.get(name);
    if (node == nullptr) return nullptr;
    if (!node->is_table())
      throw UserError(cat(path, ":", node->source().begin.line, ":", node->source().begin.column,
                          ": error: '", name, "' must be a table ([", name, "]), not ",
                          describe(*node)));
    return node->as_table();
  }
};

const Value& Section::at(const std::string& key) const {
  const auto it = values.find(key);
  if (it == values.end())
    throw UserError(cat("internal: [", name, "] has no option '", key, "' declared"), 1);
  return it->second;
}

Manifest Manifest::load(const std::string& path, const std::vector<std::string>& overrides) {
  auto impl = std::make_shared<Impl>();
  impl->path = path;
  // Checked before opening: opening a FIFO would wait for a writer forever.
  std::error_code ec;
  const bool regular = std::filesystem::is_regular_file(path, ec);
  std::ifstream in;
  if (regular) in.open(path);
  if (!in.is_open())
    throw UserError(cat("cannot read manifest '", path, "': ",
                        regular ? std::strerror(errno)
                        : std::filesystem::exists(path, ec)
                            ? "not a regular file (a folder, FIFO or device)"
                            : std::strerror(ENOENT),
                        ". Check the path (configs/quickstart.toml is a working example)."));
  std::stringstream text;
  text << in.rdbuf();
  try {
    impl->root = toml::parse(text.str(), path);
  } catch (const toml::parse_error& e) {
    const auto& b = e.source().begin;
    throw UserError(
        cat(path, ":", b.line, ":", b.column, ": error: malformed TOML: ", e.description()));
  }
  for (const auto& text_override : overrides) {
    std::string section, key, value;
    split_override(text_override, section, key, value);
    toml::table parsed;
    try {
      parsed = toml::parse("v = " + value);
    } catch (const toml::parse_error&) {
      parsed.insert("v", value);  // not a TOML literal: a bare string such as zero2
    }
    auto* table = impl->root[section].as_table();
    if (table == nullptr) {
      impl->root.insert_or_assign(section, toml::table{});
      table = impl->root[section].as_table();
    }
    table->insert_or_assign(key, *parsed.get("v"));
    impl->overridden[section + "." + key] = "--set " + text_override;
  }
  Manifest m;
  m.impl_ = std::move(impl);
  return m;
}

const std::string& Manifest::path() const { return impl_->path; }

void Manifest::check_sections(const std::vector<std::string>& known) const {
  for (const auto& [key, node] : impl_->root) {
    const std::string name(key.str());
    if (std::find(known.begin(), known.end(), name) != known.end()) continue;
    throw UserError(cat(impl_->where(name, "", key.source()), ": error: unknown section [", name,
                        "]", suggestion(name, known)));
  }
}

Value Manifest::plugin_name(const std::string& section, const std::string& key,
                            const std::string& fallback) const {
  const toml::table* table = impl_->section(section);
  const toml::node* node = table ? table->get(key) : nullptr;
  if (node == nullptr && !fallback.empty()) {
    Value v;
    v.s = fallback;
    v.origin = "default";
    return v;
  }
  if (node == nullptr)
    throw UserError(cat(impl_->path, ": error: [", section, "] needs a plugin key, for example ",
                        "plugin = \"",
                        section == "model"      ? "basic_cnn"
                        : section == "strategy" ? "ddp"
                                                : "local",
                        "\" (`dshost plugins` lists them)"));
  const std::string where = impl_->where(section, key, *node);
  if (!node->is_string())
    throw UserError(
        cat(where, ": error: ", section, ".", key, " must be a string, not ", describe(*node)));
  Value v;
  v.s = **node->as_string();
  v.origin = where;
  return v;
}

std::string Manifest::origin(const std::string& section, const std::string& key) const {
  const toml::table* table = impl_->section(section);
  const toml::node* node = table ? table->get(key) : nullptr;
  return node ? impl_->where(section, key, *node) : impl_->path;
}

Section Manifest::resolve(const std::string& name, OptionTable table, bool plugin_section) const {
  Section out;
  out.name = name;
  std::vector<std::string> known;
  for (size_t k = 0; k < table.count; ++k) known.emplace_back(table.options[k].name);
  const toml::table* given = impl_->section(name);

  if (given != nullptr) {
    for (const auto& [key, node] : *given) {
      const std::string k(key.str());
      if (plugin_section && k == "plugin") continue;
      if (std::find(known.begin(), known.end(), k) != known.end()) continue;
      std::vector<std::string> all = known;
      if (plugin_section) all.insert(all.begin(), "plugin");
      throw UserError(cat(impl_->where(name, k, key.source()), ": error: unknown key '", k,
                          "' in [", name, "]", suggestion(k, all)));
    }
  }

  for (size_t k = 0; k < table.count; ++k) {
    const dshost_option& opt = table.options[k];
    const toml::node* node = given ? given->get(opt.name) : nullptr;
    toml::table fallback;
    std::string where;
    if (node != nullptr) {
      where = impl_->where(name, opt.name, *node);
    } else {
      fallback = toml::parse(std::string("v = ") + opt.default_value);
      node = fallback.get("v");
      where = "default";
    }
    out.values[opt.name] = to_value(opt, *node, where, name + "." + opt.name);
  }
  return out;
}

void check_option_declaration(const dshost_option& opt) {
  if (opt.name == nullptr || opt.name[0] == '\0') throw UserError("an option has no name");
  const std::string name = opt.name;
  const auto wrong = [&](const std::string& why) {
    return UserError(cat("option '", name, "' ", why));
  };
  if (name == "plugin") throw wrong("is named 'plugin', the key that names the plugin itself");
  if (opt.type < DSHOST_OPTION_INT || opt.type > DSHOST_OPTION_STRING)
    throw wrong(cat("has an unknown type ", static_cast<int>(opt.type)));
  if (opt.help == nullptr) throw wrong("has no help text");
  if (opt.has_range && !(opt.min <= opt.max))
    throw wrong(cat("has an empty range [", opt.min, ", ", opt.max, "]"));
  if (opt.default_value == nullptr) throw wrong("has no default value");
  toml::table parsed;
  try {
    parsed = toml::parse(std::string("v = ") + opt.default_value);
  } catch (const toml::parse_error& e) {
    throw wrong(cat("has the default '", opt.default_value, "', which is not a TOML value (",
                    e.description(), "; a string default is written \"\\\"text\\\"\")"));
  }
  const toml::node* node = parsed.get("v");
  if (node == nullptr || parsed.size() != 1)
    throw wrong(cat("has the default '", opt.default_value, "', which is not one value"));
  try {
    to_value(opt, *node, "default", name);
  } catch (const UserError& e) {
    const std::string message = e.what();
    throw wrong(cat("has a default that its own declaration refuses: ",
                    message.substr(message.find("error: ") + 7)));
  }
}

std::string closest(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = std::numeric_limits<size_t>::max();
  for (const auto& c : candidates) {
    const size_t d = edit_distance(word, c);
    if (d > std::max<size_t>(2, std::max(word.size(), c.size()) / 3)) continue;
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  return best;
}

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? sep : "") + items[i];
  return out;
}

}  // namespace dshost
