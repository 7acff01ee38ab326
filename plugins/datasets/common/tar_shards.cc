#include "plugins/datasets/common/tar_shards.h"

#include <dshost/plugin.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>

namespace dshost {
namespace {

constexpr int64_t kBlock = 512;

// An octal header field (NUL or space terminated).
int64_t octal(const char* field, size_t width) {
  int64_t value = 0;
  for (size_t i = 0; i < width && field[i] >= '0' && field[i] <= '7'; ++i)
    value = value * 8 + (field[i] - '0');
  return value;
}

// The header's checksum: its bytes summed with the checksum field read as spaces.
int64_t checksum(const char* header) {
  int64_t sum = 0;
  for (int64_t i = 0; i < kBlock; ++i)
    sum += (i >= 148 && i < 156) ? ' ' : static_cast<unsigned char>(header[i]);
  return sum;
}

std::string field(const char* start, size_t width) {
  return std::string(start, strnlen(start, width));
}

// A PAX extended header's "path" record ("LENGTH path=VALUE\n"), or "".
std::string pax_path(const std::string& records) {
  for (size_t at = 0; at < records.size();) {
    const size_t space = records.find(' ', at);
    if (space == std::string::npos) break;
    const size_t length = std::stoul(records.substr(at, space - at));
    const std::string record = records.substr(space + 1, length - (space + 1 - at) - 1);
    if (record.rfind("path=", 0) == 0) return record.substr(5);
    at += length;
  }
  return "";
}

struct Member {
  std::string name;
  int64_t offset, size;
};

class Shard {
 public:
  explicit Shard(const std::string& path)
      : path_(path), fd_(open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
    struct stat st {};
    if (fd_ < 0 || fstat(fd_, &st) != 0)
      throw Error(cat(path, ": cannot be read: ", std::strerror(errno)));
    size_ = st.st_size;
  }
  ~Shard() {
    if (fd_ >= 0) close(fd_);
  }
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  std::string read(int64_t offset, int64_t size) const {
    std::string bytes(static_cast<size_t>(size), '\0');
    if (pread(fd_, bytes.data(), bytes.size(), offset) != size)
      throw Error(cat(path_, ": cut short at byte ", offset, " (not a whole tar file)"),
                  DSHOST_BAD_SAMPLE);
    return bytes;
  }

  // Every regular file member, in order, with GNU long names and PAX paths applied.
  std::vector<Member> members() const {
    std::vector<Member> out;
    std::string long_name;
    for (int64_t at = 0; at + kBlock <= size_;) {
      const std::string header = read(at, kBlock);
      if (header == std::string(kBlock, '\0')) break;  // the end-of-archive blocks
      if (octal(&header[148], 8) != checksum(header.data()))
        throw Error(
            at == 0
                ? cat(path_, " is not a tar file (a shard must be one; dshost pack writes them)")
                : cat(path_, ": a damaged tar header at byte ", at));
      const int64_t size = octal(&header[124], 12), data = at + kBlock;
      const char type = header[156];
      std::string name = field(&header[0], 100);
      if (header.compare(257, 5, "ustar") == 0 && header[345] != '\0')
        name = field(&header[345], 155) + "/" + name;
      if (type == 'L')
        long_name = field(read(data, size).c_str(), static_cast<size_t>(size));
      else if (type == 'x')
        long_name = pax_path(read(data, size));
      else if (type == '0' || type == '\0')
        out.push_back({long_name.empty() ? name : long_name, data, size});
      if (type != 'L' && type != 'x') long_name.clear();
      at = data + (size + kBlock - 1) / kBlock * kBlock;
    }
    return out;
  }

 private:
  std::string path_;
  int fd_;
  int64_t size_ = 0;
};

// A member's sample key and extension: its name split at the first dot of its last
// component.
std::pair<std::string, std::string> key_and_extension(const std::string& name) {
  const size_t slash = name.rfind('/');
  const size_t dot = name.find('.', slash == std::string::npos ? 0 : slash + 1);
  if (dot == std::string::npos) return {name, ""};
  std::string ext = name.substr(dot + 1);
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return {name.substr(0, dot), ext};
}

int64_t parse_label(const std::string& shard, const std::string& member, const std::string& text) {
  size_t used = 0;
  int64_t label = -1;
  try {
    label = std::stoll(text, &used);
  } catch (const std::exception&) {
  }
  while (used < text.size() && std::isspace(static_cast<unsigned char>(text[used]))) ++used;
  if (label < 0 || used != text.size())
    throw Error(
        cat(shard, ": ", member, " holds '", text.substr(0, 20), "', not a class id (0, 1, ...)"));
  return label;
}

}  // namespace

std::vector<std::string> expand_shards(const std::string& pattern) {
  const size_t open = pattern.find('{'), dots = pattern.find("..", open),
               close = pattern.find('}', open);
  std::vector<std::string> files;
  if (open == std::string::npos) {
    files.push_back(pattern);
  } else {
    const std::string first = pattern.substr(open + 1, dots - open - 1);
    const std::string last = dots < close ? pattern.substr(dots + 2, close - dots - 2) : "";
    const bool digits = !first.empty() && !last.empty() &&
                        std::all_of(first.begin(), first.end(), ::isdigit) &&
                        std::all_of(last.begin(), last.end(), ::isdigit);
    if (close == std::string::npos || dots > close || !digits ||
        std::stoll(first) > std::stoll(last))
      throw Error(cat("'", pattern,
                      "' has no brace range of shard numbers, as in "
                      "train-{000000..000127}.tar"));
    for (int64_t n = std::stoll(first); n <= std::stoll(last); ++n) {
      std::string number = std::to_string(n);
      if (number.size() < first.size()) number.insert(0, first.size() - number.size(), '0');
      files.push_back(pattern.substr(0, open) + number + pattern.substr(close + 1));
    }
  }
  for (const std::string& file : files)
    if (!std::filesystem::is_regular_file(file))
      throw Error(cat("shard ", file, " of '", pattern, "' does not exist",
                      files.size() > 1 ? "; every shard of the range must" : ""));
  return files;
}

ShardIndex index_shards(const std::vector<std::string>& shards) {
  ShardIndex index;
  index.shards = shards;
  for (size_t s = 0; s < shards.size(); ++s) {
    const Shard shard(shards[s]);
    struct Parts {
      const Member* image = nullptr;
      const Member* label = nullptr;
    };
    const std::vector<Member> members = shard.members();
    std::vector<std::string> keys;  // in order of first appearance
    std::map<std::string, Parts> samples;
    for (const Member& m : members) {
      const auto [key, ext] = key_and_extension(m.name);
      if (ext != "jpg" && ext != "jpeg" && ext != "png" && ext != "cls") continue;
      Parts& parts = samples[key];
      if (parts.image == nullptr && parts.label == nullptr) keys.push_back(key);
      (ext == "cls" ? parts.label : parts.image) = &m;
    }
    for (const std::string& key : keys) {
      const Parts& p = samples[key];
      if (p.label == nullptr || p.image == nullptr)
        throw Error(cat(shards[s], ": sample '", key, "' has ",
                        p.label == nullptr ? "no .cls label" : "no .jpg or .png image",
                        " (a WebDataset sample is KEY.jpg or KEY.png with KEY.cls)"));
      const int64_t label =
          parse_label(shards[s], p.label->name, shard.read(p.label->offset, p.label->size));
      index.samples.push_back(
          {static_cast<int32_t>(s), p.image->offset, p.image->size, p.image->name, label});
    }
  }
  if (index.samples.empty())
    throw Error(cat(shards.front(), ": holds no samples (KEY.jpg with KEY.cls)"));
  return index;
}

std::string read_bytes(const std::string& path, int64_t offset, int64_t size) {
  return Shard(path).read(offset, size);
}

std::string tar_header(const std::string& name, int64_t size) {
  std::string h(kBlock, '\0');
  std::snprintf(&h[0], 100, "%s", name.c_str());
  std::snprintf(&h[100], 8, "%07o", 0644);
  std::snprintf(&h[108], 8, "%07o", 0);
  std::snprintf(&h[116], 8, "%07o", 0);
  std::snprintf(&h[124], 12, "%011llo", static_cast<unsigned long long>(size));
  std::snprintf(&h[136], 12, "%011o", 0);
  h[156] = '0';
  std::memcpy(&h[257],
              "ustar\0"
              "00",
              8);
  std::snprintf(&h[148], 8, "%06o", static_cast<unsigned>(checksum(h.data()) & 0777777));
  h[155] = ' ';
  return h;
}

}  // namespace dshost
