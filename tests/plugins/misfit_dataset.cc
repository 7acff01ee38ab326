// A dataset plugin that breaks its contract on one sample, for the host's messages: grey
// 28 x 28 images (every pixel the sample's index mod 256) labelled index mod 10, except that
// sample `at` of the training split is filled as `fault` says: "shape" 1 x 28 x 27 where it
// describes 1 x 28 x 28, "throw" an exception on whichever worker thread fills it.
#include <dshost/dataset.hpp>

#include <cstring>
#include <stdexcept>

namespace {

const dshost_option kOptions[] = {
    DSHOST_OPTION("fault", DSHOST_OPTION_STRING, "\"shape\"", "shape|throw",
                  "how sample `at` breaks"),
    DSHOST_OPTION_RANGE("at", DSHOST_OPTION_INT, "5", 0, 1e9, "the training sample that breaks"),
};

class Misfit : public dshost::Dataset {
 public:
  Misfit(const dshost::Services& s, const dshost::Shape&)
      : Dataset(s), throws_(s.get_string("fault") == "throw"), at_(s.get_int("at")) {}

  dshost_dataset_info describe() const override {
    return dshost::image_info(640, 64, 10, {1, 28, 28}, {0.5}, {0.25});
  }

  dshost::Shape fill(const dshost::Sample& s) const override {
    std::memset(s.input, static_cast<int>(s.index % 256), 28 * 28);
    *s.target = s.index % 10;
    if (s.split != DSHOST_TRAIN_SPLIT || s.index != at_) return {1, 28, 28};
    if (throws_) throw std::runtime_error("misfit cannot read its own records");
    return {1, 28, 27};
  }

 private:
  const bool throws_;
  const int64_t at_;
};

}  // namespace

DSHOST_DATASET_PLUGIN(Misfit, "misfit", "1.0.0", "breaks on one sample (tests)", kOptions,
                      sizeof(kOptions) / sizeof(kOptions[0]))
