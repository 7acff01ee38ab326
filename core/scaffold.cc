#include "core/scaffold.h"

#include "core/error.h"

#include <cctype>
#include <filesystem>
#include <fstream>
#include <regex>
#include <vector>

namespace fs = std::filesystem;

namespace dshost {
namespace {

struct Template {
  std::string kind, name;
  std::vector<std::pair<std::string, std::string>> files;  // file name, text
};

const std::vector<Template>& templates() {
  static const std::vector<Template> all = {
#include "dshost_scaffolds.inc"
  };
  return all;
}

// tiny_mlp -> TinyMlp: the example's class name.
std::string camel_case(const std::string& name) {
  std::string out;
  bool upper = true;
  for (char c : name) {
    if (c == '_' || c == '-') {
      upper = true;
      continue;
    }
    out += upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : c;
    upper = false;
  }
  return out;
}

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (size_t at = 0; (at = text.find(from, at)) != std::string::npos; at += to.size())
    text.replace(at, from.size(), to);
  return text;
}

const Template& template_for(const std::string& kind) {
  for (const auto& t : templates())
    if (t.kind == kind) return t;
  throw UserError(
      cat("new-plugin: --kind must be model, strategy, launcher or dataset, not '", kind, "'"));
}

}  // namespace

std::string write_scaffold(const std::string& kind, const std::string& name,
                           const std::string& parent) {
  const Template& t = template_for(kind);
  if (!std::regex_match(name, std::regex("[a-z][a-z0-9_]*")))
    throw UserError(cat("new-plugin: '", name,
                        "' is not a plugin name: use lower case letters, "
                        "digits and _, starting with a letter (it names files, a CMake target "
                        "and a C++ class)"));
  const fs::path dir = fs::path(parent) / name;
  if (fs::exists(dir))
    throw UserError(cat("new-plugin: ", dir.string(),
                        " already exists; nothing was written. "
                        "Pick another name or --dir"));
  fs::create_directories(dir);
  for (const auto& [file, text] : t.files) {
    const std::string renamed =
        replace_all(replace_all(text, t.name, name), camel_case(t.name), camel_case(name));
    std::ofstream out(dir / replace_all(file, t.name, name));
    out << renamed;
    if (!out) throw UserError(cat("new-plugin: cannot write in ", dir.string()), 1);
  }
  return dir.string();
}

}  // namespace dshost
