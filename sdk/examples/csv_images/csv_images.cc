// csv_images: grey images in CSV files, one sample a line (label,pixel,pixel,...), as
// Kaggle's Fashion-MNIST and MNIST CSVs hold them, as a dataset plugin built against the
// installed dshost SDK alone. The host fills batches from many threads at once: the files
// are read whole when the dataset is created, and fill() only reads what they hold.
#include <dshost/dataset.hpp>

#include <cctype>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

namespace {

using dshost::cat;

// The keys of this plugin in the manifest's [data] section (beside the host's own: dataset,
// workers, prefetch, ...); the host validates them before any code here runs.
const dshost_option kOptions[] = {
    DSHOST_OPTION("path", DSHOST_OPTION_STRING, "\"\"", nullptr,
                  "the training CSV: label,pixel,... a line"),
    DSHOST_OPTION("test_path", DSHOST_OPTION_STRING, "\"\"", nullptr, "the test CSV; \"\" = none"),
    DSHOST_OPTION_RANGE("side", DSHOST_OPTION_INT, "28", 1, 4096, "images are side x side pixels"),
    DSHOST_OPTION_RANGE("classes", DSHOST_OPTION_INT, "10", 1, 1e6, "labels lie in [0, classes)"),
};

struct Split {
  std::vector<unsigned char> pixels;
  std::vector<int64_t> labels;
};

class CsvImages : public dshost::Dataset {
 public:
  CsvImages(const dshost::Services& s, const dshost::Shape&)
      : Dataset(s), side_(s.get_int("side")), classes_(s.get_int("classes")) {
    train_ = read(s.get_string("path"));
    if (!s.get_string("test_path").empty()) test_ = read(s.get_string("test_path"));
  }

  dshost_dataset_info describe() const override {
    return dshost::image_info(static_cast<int64_t>(train_.labels.size()),
                              static_cast<int64_t>(test_.labels.size()), classes_,
                              {1, side_, side_}, {mean_}, {std_});
  }

  dshost::Shape fill(const dshost::Sample& sample) const override {
    const Split& split = sample.split == DSHOST_TRAIN_SPLIT ? train_ : test_;
    std::memcpy(sample.input, &split.pixels[sample.index * side_ * side_], side_ * side_);
    *sample.target = split.labels[sample.index];
    return {1, side_, side_};
  }

 private:
  // Every line of `path`; a line that is not label + side^2 pixels is an error naming it.
  Split read(const std::string& path) {
    std::ifstream in(path);
    if (!in)
      throw dshost::Error(cat("data.path '", path, "' cannot be read; point it at a CSV file"));
    Split split;
    double sum = 0, squares = 0;
    std::string line;
    for (int64_t number = 1; std::getline(in, line); ++number) {
      if (line.empty() || !std::isdigit(static_cast<unsigned char>(line[0]))) continue;  // a header
      std::stringstream fields(line);
      std::vector<int64_t> values;
      for (std::string field; std::getline(fields, field, ',');)
        values.push_back(std::stoll(field));
      if (static_cast<int64_t>(values.size()) != 1 + side_ * side_ || values[0] < 0 ||
          values[0] >= classes_)
        throw dshost::Error(cat(path, ":", number, ": expected a label in [0, ", classes_, ") and ",
                                side_ * side_, " pixels, found ", values.size(), " values"));
      split.labels.push_back(values[0]);
      for (size_t i = 1; i < values.size(); ++i) {
        split.pixels.push_back(static_cast<unsigned char>(values[i]));
        sum += values[i] / 255.0;
        squares += (values[i] / 255.0) * (values[i] / 255.0);
      }
    }
    if (split.labels.empty()) throw dshost::Error(cat(path, " holds no samples"));
    if (train_.labels.empty()) {  // the training set's statistics normalise both splits
      const double n = static_cast<double>(split.pixels.size());
      mean_ = sum / n;
      std_ = std::sqrt(std::max(squares / n - mean_ * mean_, 1e-12));
    }
    return split;
  }

  const int64_t side_, classes_;
  double mean_ = 0.5, std_ = 0.25;
  Split train_, test_;
};

}  // namespace

DSHOST_DATASET_PLUGIN(CsvImages, "csv_images", "1.0.0",
                      "grey images as CSV lines of label,pixel,...", kOptions,
                      sizeof(kOptions) / sizeof(kOptions[0]))
