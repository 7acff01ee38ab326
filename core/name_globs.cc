#include "core/name_globs.h"

#include "core/manifest.h"  // join

#include <dshost/plugin.hpp>  // cat, split

#include <fnmatch.h>

#include <algorithm>

namespace dshost {
namespace {

bool matches(const std::string& glob, const std::string& name) {
  return fnmatch(glob.c_str(), name.c_str(), 0) == 0;
}

}  // namespace

NameGlobs::NameGlobs(const std::string& comma_separated) {
  for (const std::string& item : split(comma_separated, ',')) {
    const size_t first = item.find_first_not_of(' ');
    if (first != std::string::npos)
      globs_.push_back(item.substr(first, item.find_last_not_of(' ') - first + 1));
  }
}

bool NameGlobs::match(const std::string& name) const {
  return std::any_of(globs_.begin(), globs_.end(),
                     [&](const std::string& glob) { return matches(glob, name); });
}

std::vector<std::string> NameGlobs::unmatched(const std::vector<std::string>& names) const {
  std::vector<std::string> out;
  for (const std::string& glob : globs_)
    if (std::none_of(names.begin(), names.end(),
                     [&](const std::string& name) { return matches(glob, name); }))
      out.push_back(glob);
  return out;
}

std::string listed(const std::vector<std::string>& names, size_t shown) {
  shown = std::min(names.size(), shown);
  const std::vector<std::string> head(names.begin(), names.begin() + static_cast<int64_t>(shown));
  return join(head) + (names.size() > shown ? cat(" and ", names.size() - shown, " more") : "");
}

}  // namespace dshost
