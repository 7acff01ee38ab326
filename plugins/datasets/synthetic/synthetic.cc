// data.dataset = "synthetic": random images for benchmarks, of the shape the model takes
// (ImageNet's 3 x 224 x 224 where no model asks): a pool of at most 256 fixed images (the
// same on every rank and run), sample i showing image i % pool with label i % classes.
#include <dshost/dataset.hpp>

#include <cstring>

namespace {

const dshost_option kOptions[] = {
    DSHOST_OPTION_RANGE("synthetic_samples", DSHOST_OPTION_INT, "10000", 1, 1e9,
                        "training samples (test: a tenth)"),
    DSHOST_OPTION_RANGE("synthetic_classes", DSHOST_OPTION_INT, "1000", 2, 1e6, "label classes"),
};

class Synthetic : public dshost::Dataset {
 public:
  Synthetic(const dshost::Services& s, const dshost::Shape& wanted)
      : Dataset(s),
        samples_(s.get_int("synthetic_samples")),
        classes_(s.get_int("synthetic_classes")),
        shape_(wanted.size() == 3 ? wanted : dshost::Shape{3, 224, 224}),
        image_bytes_(shape_[0] * shape_[1] * shape_[2]),
        pool_(static_cast<size_t>(std::min<int64_t>(samples_, 256) * image_bytes_)) {
    uint64_t state = 0;
    for (auto& pixel : pool_) pixel = static_cast<unsigned char>(dshost::splitmix64(state) >> 56);
  }

  dshost_dataset_info describe() const override {
    // The statistics of uniform pixels.
    return dshost::image_info(samples_, std::max<int64_t>(1, samples_ / 10), classes_, shape_,
                              {0.5}, {0.29});
  }

  dshost::Shape fill(const dshost::Sample& s) const override {
    const int64_t images = static_cast<int64_t>(pool_.size()) / image_bytes_;
    std::memcpy(s.input, &pool_[(s.index % images) * image_bytes_], image_bytes_);
    *s.target = s.index % classes_;
    return shape_;
  }

 private:
  const int64_t samples_, classes_;
  const dshost::Shape shape_;
  const int64_t image_bytes_;
  std::vector<unsigned char> pool_;
};

}  // namespace

DSHOST_DATASET_PLUGIN(Synthetic, "synthetic", "1.0.0",
                      "random images of the model's shape, for benchmarks", kOptions,
                      sizeof(kOptions) / sizeof(kOptions[0]))
