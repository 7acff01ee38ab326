// data.dataset = "cifar10": CIFAR-10's binary version (cifar-10-batches-bin): records of a
// label byte (0-9) and a 32 x 32 image as three planes (red, green, blue), 3073 bytes each,
// in data_batch_1.bin to 5 (training) and test_batch.bin. Files are read as they are, any
// number of records each.
#include <dshost/dataset.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace {

using dshost::cat;
using dshost::Error;

const dshost_option kOptions[] = {
    DSHOST_OPTION(
        "path", DSHOST_OPTION_STRING, "\"\"", nullptr,
        "the folder of CIFAR-10's binary version (data_batch_1.bin to 5, test_batch.bin)"),
};

constexpr int64_t kImage = 3 * 32 * 32, kRecord = 1 + kImage;
const char* const kTrainFiles[] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                                   "data_batch_4.bin", "data_batch_5.bin"};

// The records of `files`, one after another.
std::string read_records(const std::string& dir, const std::vector<std::string>& files) {
  std::string all;
  for (const auto& name : files) {
    const std::string file = dir + "/" + name;
    if (!std::filesystem::is_regular_file(file))
      throw Error(
          cat("data.path '", dir, "' has no ", name,
              ". Point data.path at the folder of CIFAR-10's "
              "binary version (cifar-10-batches-bin: data_batch_1.bin to 5, test_batch.bin)."));
    std::ifstream in(file, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (bytes.empty() || bytes.size() % kRecord != 0)
      throw Error(cat(file, ": not a CIFAR-10 binary batch (", bytes.size(),
                      " bytes, not a whole number of 3073-byte records)"));
    for (size_t r = 0; r < bytes.size(); r += kRecord)
      if (static_cast<unsigned char>(bytes[r]) > 9)
        throw Error(cat(file, ": record ", r / kRecord, " has label ",
                        int(static_cast<unsigned char>(bytes[r])), "; CIFAR-10 labels are 0-9"));
    all += bytes;
  }
  return all;
}

class Cifar10 : public dshost::Dataset {
 public:
  Cifar10(const dshost::Services& s, const dshost::Shape&) : Dataset(s) {
    const std::string dir = s.get_string("path");
    if (dir.empty())
      throw Error(
          "data.dataset = \"cifar10\" needs data.path: the folder of CIFAR-10's binary version "
          "(cifar-10-batches-bin)");
    train_ = read_records(dir, {std::begin(kTrainFiles), std::end(kTrainFiles)});
    test_ = read_records(dir, {"test_batch.bin"});
  }

  dshost_dataset_info describe() const override {
    // Normalised with the training set's pixel statistics, over the three channels.
    return dshost::image_info(static_cast<int64_t>(train_.size()) / kRecord,
                              static_cast<int64_t>(test_.size()) / kRecord, 10, {3, 32, 32},
                              {0.4734}, {0.2516});
  }

  dshost::Shape fill(const dshost::Sample& s) const override {
    const char* record =
        (s.split == DSHOST_TRAIN_SPLIT ? train_ : test_).data() + s.index * kRecord;
    *s.target = static_cast<unsigned char>(record[0]);
    std::memcpy(s.input, record + 1, kImage);
    return {3, 32, 32};
  }

 private:
  std::string train_, test_;
};

}  // namespace

DSHOST_DATASET_PLUGIN(Cifar10, "cifar10", "1.0.0",
                      "CIFAR-10's binary batches (32x32 colour, 10 classes)", kOptions,
                      sizeof(kOptions) / sizeof(kOptions[0]))
