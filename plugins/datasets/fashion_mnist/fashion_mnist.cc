// data.dataset = "fashion_mnist": Fashion-MNIST from its four gzip IDX files, as Debian's
// dataset-fashion-mnist installs them: 60,000 training and 10,000 test images of 28 x 28
// grey pixels in 10 classes.
#include <dshost/dataset.hpp>

#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <iomanip>
#include <memory>

namespace {

using dshost::cat;
using dshost::Error;

const dshost_option kOptions[] = {
    DSHOST_OPTION("path", DSHOST_OPTION_STRING, "\"\"", nullptr,
                  "the folder of the four IDX .gz files; \"\" = /usr/share/datasets/fashion-mnist, "
                  "where Debian's "
                  "dataset-fashion-mnist installs them"),
};

constexpr int64_t kSide = 28, kPixels = kSide * kSide;

uint32_t big_endian(const unsigned char* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

// The whole decompressed content of a gzip file.
std::vector<unsigned char> read_gzip(const std::string& file) {
  std::unique_ptr<gzFile_s, int (*)(gzFile)> in(gzopen(file.c_str(), "rb"), gzclose);
  if (!in) throw Error(cat("cannot open ", file));
  std::vector<unsigned char> out;
  unsigned char chunk[1 << 16];
  int n = 0;
  while ((n = gzread(in.get(), chunk, sizeof(chunk))) > 0) out.insert(out.end(), chunk, chunk + n);
  int code = Z_OK;
  const char* message = gzerror(in.get(), &code);
  if (n < 0 || (code != Z_OK && code != Z_STREAM_END))
    throw Error(cat(file, ": corrupt gzip data (", message, ")"));
  return out;
}

// IDX: magic (0, 0, type 0x08 = uint8, ndim), ndim big-endian sizes, then the data; returns
// the data, checked to hold `per_item` bytes per item.
std::vector<unsigned char> read_idx(const std::string& file, int ndim, int64_t per_item,
                                    int64_t* items) {
  std::vector<unsigned char> bytes = read_gzip(file);
  const auto bad = [&](const std::string& why) {
    return Error(cat(file, ": not a valid IDX file (", why, ")"));
  };
  if (bytes.size() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 || bytes[3] != ndim)
    throw bad("unexpected magic number");
  const size_t header = 4 + 4 * static_cast<size_t>(ndim);
  if (bytes.size() < header) throw bad("truncated header");
  // Multiplied in floating point: the product of the header's sizes can overflow int64.
  double promised = 1;
  std::string shape;
  for (int d = 0; d < ndim; ++d) {
    const uint32_t size = big_endian(&bytes[4 + 4 * d]);
    promised *= static_cast<double>(size);
    shape += cat(d ? ", " : "", size);
  }
  if (promised != static_cast<double>(bytes.size() - header))
    throw bad(cat("holds ", bytes.size() - header, " data bytes, its header promises [", shape,
                  "] = ", std::fixed, std::setprecision(0), promised));
  *items = static_cast<int64_t>(big_endian(&bytes[4]));
  if (*items * per_item != static_cast<int64_t>(bytes.size() - header))
    throw bad(cat("items of other than ", per_item, " bytes"));
  bytes.erase(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(header));
  return bytes;
}

struct Split {
  std::vector<unsigned char> images, labels;
  int64_t size = 0;
};

Split read_split(const std::string& dir, const std::string& prefix) {
  Split s;
  int64_t labels = 0;
  s.images = read_idx(dir + "/" + prefix + "-images-idx3-ubyte.gz", 3, kPixels, &s.size);
  s.labels = read_idx(dir + "/" + prefix + "-labels-idx1-ubyte.gz", 1, 1, &labels);
  if (s.size != labels)
    throw Error(cat(dir, ": ", prefix, " has ", s.size, " images but ", labels, " labels"));
  for (int64_t i = 0; i < labels; ++i)
    if (s.labels[i] > 9)
      throw Error(cat(dir, "/", prefix, "-labels-idx1-ubyte.gz: label ", i, " is ",
                      int(s.labels[i]), "; Fashion-MNIST labels are 0-9"));
  return s;
}

class FashionMnist : public dshost::Dataset {
 public:
  FashionMnist(const dshost::Services& s, const dshost::Shape&) : Dataset(s) {
    std::string dir = s.get_string("path");
    if (dir.empty()) dir = "/usr/share/datasets/fashion-mnist";
    for (const char* name : {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"})
      if (!std::filesystem::is_regular_file(dir + "/" + name))
        throw Error(cat(
            "data.path '", dir, "' has no ", name,
            ". Install Debian's dataset-fashion-mnist "
            "(apt-get install dataset-fashion-mnist) or point data.path at a folder with the four "
            "Fashion-MNIST IDX .gz files."));
    train_ = read_split(dir, "train");
    test_ = read_split(dir, "t10k");
  }

  dshost_dataset_info describe() const override {
    // Normalised with the training set's pixel statistics.
    return dshost::image_info(train_.size, test_.size, 10, {1, kSide, kSide}, {0.2860}, {0.3530});
  }

  dshost::Shape fill(const dshost::Sample& s) const override {
    const Split& split = s.split == DSHOST_TRAIN_SPLIT ? train_ : test_;
    std::memcpy(s.input, &split.images[s.index * kPixels], kPixels);
    *s.target = split.labels[s.index];
    return {1, kSide, kSide};
  }

 private:
  Split train_, test_;
};

}  // namespace

DSHOST_DATASET_PLUGIN(FashionMnist, "fashion_mnist", "1.0.0",
                      "Fashion-MNIST's gzip IDX files (28x28 grey, 10 classes)", kOptions,
                      sizeof(kOptions) / sizeof(kOptions[0]))
