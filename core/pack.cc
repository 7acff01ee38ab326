#include "core/pack.h"

#include "core/error.h"
#include "plugins/datasets/common/image_decode.h"
#include "plugins/datasets/common/image_folder.h"
#include "plugins/datasets/common/image_resample.h"
#include "plugins/datasets/common/tar_shards.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace dshost {
namespace {

// The file's bytes, or, where the image is larger than max_side (0: no limit), the image
// resized to fit and stored as a JPEG of quality 90. A file that does not decode is packed
// as it is: training skips it, as it does in the folder.
std::string packed_image(const std::string& path, int64_t max_side) {
  std::string bytes = read_file_bytes(path);
  if (max_side <= 0) return bytes;
  try {
    const EncodedImage image(path, bytes);
    const int64_t longest = std::max(image.height(), image.width());
    if (longest <= max_side) return bytes;
    const double scale = static_cast<double>(max_side) / static_cast<double>(longest);
    RgbImage out;
    out.height = std::max<int64_t>(1, std::lround(static_cast<double>(image.height()) * scale));
    out.width = std::max<int64_t>(1, std::lround(static_cast<double>(image.width()) * scale));
    const RgbImage full = image.decode();
    std::vector<uint8_t> planar(static_cast<size_t>(3 * out.height * out.width));
    resample_rgb(full.pixels.data(), full.height, full.width, full.width * 3,
                 Region{0, 0, static_cast<double>(full.width), static_cast<double>(full.height)},
                 true, out.height, out.width, false, planar.data());
    const int64_t plane = out.height * out.width;
    out.pixels.resize(planar.size());
    for (int64_t i = 0; i < plane; ++i)
      for (int64_t c = 0; c < 3; ++c) out.pixels[i * 3 + c] = planar[c * plane + i];
    return encode_jpeg(out, 90);
  } catch (const Error& e) {
    if (e.status() != DSHOST_BAD_SAMPLE) throw;
    return bytes;
  }
}

// The member extension a file's bytes call for (ImageNet has PNG content behind .JPEG).
const char* extension_of(const std::string& bytes) {
  return bytes.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0 ? "png" : "jpg";
}

std::string padded(const std::string& data) {
  return data + std::string((512 - data.size() % 512) % 512, '\0');
}

// A file being written, removed unless it was renamed (a shard is never left half written).
struct PartialFile {
  explicit PartialFile(std::string p) : path(std::move(p)) {}
  ~PartialFile() {
    std::error_code ignored;
    std::filesystem::remove(path, ignored);
  }
  PartialFile(const PartialFile&) = delete;
  PartialFile& operator=(const PartialFile&) = delete;
  std::string path;
};

// One split's shards; returns their pattern ("PREFIX-train-{000000..000003}.tar").
std::string write_split(const ImageFiles& files, const std::string& prefix, int64_t per_shard,
                        int64_t max_side) {
  const auto n = static_cast<int64_t>(files.paths.size());
  const int64_t shards = (n + per_shard - 1) / per_shard;
  const auto shard_name = [&](int64_t s) {
    char number[24];
    std::snprintf(number, sizeof number, "%06lld", static_cast<long long>(s));
    return prefix + number + ".tar";
  };
  for (int64_t s = 0; s < shards; ++s) {
    const std::string path = shard_name(s);
    const PartialFile temporary(path + ".partial");
    std::ofstream out(temporary.path, std::ios::binary | std::ios::trunc);
    for (int64_t i = s * per_shard; i < std::min(n, (s + 1) * per_shard); ++i) {
      char key[32];
      std::snprintf(key, sizeof key, "%09lld", static_cast<long long>(i));
      const std::string image = packed_image(files.paths[i], max_side);
      const std::string label = std::to_string(files.labels[i]);
      out << tar_header(cat(key, ".", extension_of(image)), static_cast<int64_t>(image.size()))
          << padded(image) << tar_header(cat(key, ".cls"), static_cast<int64_t>(label.size()))
          << padded(label);
    }
    out << std::string(1024, '\0');  // the end-of-archive blocks
    out.close();
    if (!out) throw UserError(cat("cannot write ", temporary.path, ": ", std::strerror(errno)), 1);
    std::filesystem::rename(temporary.path, path);
  }
  return shards == 1 ? shard_name(0)
                     : cat(prefix, "{", shard_name(0).substr(prefix.size(), 6), "..",
                           shard_name(shards - 1).substr(prefix.size(), 6), "}.tar");
}

}  // namespace

std::string pack_image_folder(const std::string& folder, const std::string& out_prefix,
                              int64_t per_shard, int64_t max_side) try {
  const ImageFiles train = scan_image_folder(folder + "/train");
  const ImageFiles val = scan_image_folder(folder + "/val", train.classes);
  const std::string train_pattern = write_split(train, out_prefix + "-train-", per_shard, max_side);
  const std::string val_pattern = write_split(val, out_prefix + "-val-", per_shard, max_side);
  return cat("packed ", train.paths.size(), " training and ", val.paths.size(), " test samples of ",
             folder, " (", train.classes.size(),
             " classes); in the manifest:\n  [data]\n  dataset = \"webdataset\"\n"
             "  path = \"",
             train_pattern, "\"\n  test_path = \"", val_pattern, "\"\n");
} catch (
    const Error& e) {  // the image code's: a folder that is not one, a file that cannot be read
  throw UserError(e.what(), e.status() == DSHOST_INVALID_ARGUMENT ? 2 : 1);
}

}  // namespace dshost
