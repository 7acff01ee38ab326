// Token streams cut into windows of the model's sequence length T: sample i is tokens
// [i T, (i + 1) T) with the tokens one ahead as its targets; the last tenth of the stream is
// the test split. Built twice:
//   data.dataset = "text":   the bytes of text files as tokens 0-255 (Debian's fortunes by
//                            default; a folder's regular files in name order);
//   data.dataset = "tokens": a flat file of little-endian uint16 token ids, as llm.c and
//                            nanoGPT write them.
#include <dshost/dataset.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace fs = std::filesystem;

namespace {

using dshost::cat;
using dshost::Error;

#if DSHOST_TEXT
constexpr bool kText = true;
const dshost_option kOptions[] = {
    DSHOST_OPTION(
        "path", DSHOST_OPTION_STRING, "\"\"", nullptr,
        "a text file, or a folder of them; \"\" = /usr/share/games/fortunes (Debian's fortunes)"),
};
constexpr const char* kDefaultPath = "/usr/share/games/fortunes";
#else
constexpr bool kText = false;
const dshost_option kOptions[] = {
    DSHOST_OPTION("path", DSHOST_OPTION_STRING, "\"\"", nullptr,
                  "a flat file of little-endian uint16 token ids"),
};
constexpr const char* kDefaultPath = "";
#endif

// Regular files of `path` (itself, or a folder's, sorted by name; the fortune-mod index
// files *.dat and *.u8 left out).
std::vector<fs::path> files_of(const std::string& path) {
  if (fs::is_regular_file(path)) return {path};
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(path, ec))
    if (entry.is_regular_file() && entry.path().extension() != ".dat" &&
        entry.path().extension() != ".u8")
      files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<uint16_t> read_tokens(std::string path) {
  if (path.empty()) path = kDefaultPath;
  const std::vector<fs::path> files = path.empty() ? std::vector<fs::path>{} : files_of(path);
  if (files.empty())
    throw Error(kText ? cat("data.path '", path,
                            "' has no text files. Install Debian's fortunes (apt-get install "
                            "fortunes) for the default text, or point data.path at a text file or "
                            "a folder of them.")
                      : cat("data.path '", path,
                            "' has no token file. Point data.path at a flat file of "
                            "little-endian uint16 token ids."));
  std::string bytes;
  for (const auto& file : files) {
    std::ifstream in(file, std::ios::binary);
    bytes.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  if (kText) return std::vector<uint16_t>(data, data + bytes.size());
  if (bytes.size() % 2 != 0)
    throw Error(cat(path, ": not a uint16 token file (odd size, ", bytes.size(), " bytes)"));
  std::vector<uint16_t> ids(bytes.size() / 2);
  for (size_t i = 0; i < ids.size(); ++i)
    ids[i] = static_cast<uint16_t>(data[2 * i] | data[2 * i + 1] << 8);
  return ids;
}

class Tokens : public dshost::Dataset {
 public:
  Tokens(const dshost::Services& s, const dshost::Shape& wanted)
      : Dataset(s),
        tokens_(read_tokens(s.get_string("path"))),
        length_(wanted.size() == 1 ? wanted[0] : 1) {
    const auto n = static_cast<int64_t>(tokens_.size());
    test_first_ = n - n / 10;
    if (n / 10 < length_ + 1)
      throw Error(cat(s.get_string("path"), ": ", n, " tokens are too few for windows of ", length_,
                      " (a tenth must hold one for testing)"));
    vocabulary_ = 1 + *std::max_element(tokens_.begin(), tokens_.end());
  }

  dshost_dataset_info describe() const override {
    const auto n = static_cast<int64_t>(tokens_.size());
    return dshost::token_info((test_first_ - 1) / length_, (n - test_first_ - 1) / length_,
                              vocabulary_, length_);
  }

  dshost::Shape fill(const dshost::Sample& s) const override {
    const int64_t first = (s.split == DSHOST_TRAIN_SPLIT ? 0 : test_first_) + s.index * length_;
    auto* input = static_cast<int64_t*>(s.input);
    for (int64_t t = 0; t < length_; ++t) {
      input[t] = tokens_[first + t];
      s.target[t] = tokens_[first + t + 1];
    }
    return {length_};
  }

 private:
  const std::vector<uint16_t> tokens_;
  const int64_t length_;
  int64_t test_first_ = 0, vocabulary_ = 0;
};

}  // namespace

#if DSHOST_TEXT
DSHOST_DATASET_PLUGIN(Tokens, "text", "1.0.0",
                      "the bytes of text files as tokens 0-255, in windows of the model's length",
                      kOptions, sizeof(kOptions) / sizeof(kOptions[0]))
#else
DSHOST_DATASET_PLUGIN(Tokens, "tokens", "1.0.0",
                      "a flat file of uint16 token ids, in windows of the model's length", kOptions,
                      sizeof(kOptions) / sizeof(kOptions[0]))
#endif
