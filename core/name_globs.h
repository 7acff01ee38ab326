// Comma-separated globs over tensor names (model.init_skip, model.freeze), spaces around each
// ignored, matched as the shell matches file names (fnmatch: `*`, `?`, `[...]`; a `*` also
// crosses dots).
#pragma once

#include <string>
#include <vector>

namespace dshost {

class NameGlobs {
 public:
  explicit NameGlobs(const std::string& comma_separated);
  bool empty() const { return globs_.empty(); }
  // Whether any of the globs matches `name`.
  bool match(const std::string& name) const;
  // The globs that match none of `names`, in the order given.
  std::vector<std::string> unmatched(const std::vector<std::string>& names) const;

 private:
  std::vector<std::string> globs_;
};

// `names` for a message: the first `shown` of them, then how many more.
std::string listed(const std::vector<std::string>& names, size_t shown = 20);

}  // namespace dshost
