// data.dataset = "webdataset": WebDataset tar shards of KEY.jpg|png with KEY.cls (see
// common/tar_shards.h; `dshost pack` writes them from an image folder), transformed as the
// image folder's samples are, so a shard set trains as the folder it was packed from.
#include "plugins/datasets/common/image_folder.h"
#include "plugins/datasets/common/tar_shards.h"

#include <dshost/dataset.hpp>

#include <algorithm>

namespace {

const dshost_option kOptions[] = {
    DSHOST_OPTION(
        "path", DSHOST_OPTION_STRING, "\"\"", nullptr,
        "the training shards: a brace range such as \"shards/train-{000000..000127}.tar\""),
    DSHOST_OPTION("test_path", DSHOST_OPTION_STRING, "\"\"", nullptr,
                  "the test split's shards (a brace range); \"\" = none, no evaluation"),
};

class WebDataset : public dshost::Dataset {
 public:
  WebDataset(const dshost::Services& s, const dshost::Shape& wanted)
      : Dataset(s), size_(dshost::image_side(wanted)) {
    const std::string path = s.get_string("path"), test_path = s.get_string("test_path");
    if (path.empty())
      throw dshost::Error(
          "data.dataset = \"webdataset\" needs data.path: the training shards, a brace range such "
          "as \"shards/train-{000000..000127}.tar\" (dshost pack writes them from an image "
          "folder)");
    train_ = dshost::index_shards(dshost::expand_shards(path));
    if (!test_path.empty()) test_ = dshost::index_shards(dshost::expand_shards(test_path));
  }

  dshost_dataset_info describe() const override {
    int64_t classes = 0;
    for (const auto* index : {&train_, &test_})
      for (const auto& sample : index->samples) classes = std::max(classes, sample.label + 1);
    return dshost::image_info(static_cast<int64_t>(train_.samples.size()),
                              static_cast<int64_t>(test_.samples.size()), classes,
                              {3, size_, size_}, dshost::kImageNetMean, dshost::kImageNetStd);
  }

  dshost::Shape fill(const dshost::Sample& s) const override {
    const dshost::ShardIndex& index = s.split == DSHOST_TRAIN_SPLIT ? train_ : test_;
    const dshost::ShardSample& sample = index.samples[s.index];
    const std::string& shard = index.shards[sample.shard];
    const dshost::EncodedImage image(dshost::cat(shard, ": ", sample.member),
                                     dshost::read_bytes(shard, sample.offset, sample.size));
    dshost::write_image_sample(image, s, size_);
    *s.target = sample.label;
    return {3, size_, size_};
  }

 private:
  const int64_t size_;
  dshost::ShardIndex train_, test_;
};

}  // namespace

DSHOST_DATASET_PLUGIN(WebDataset, "webdataset", "1.0.0",
                      "WebDataset tar shards of KEY.jpg|png with KEY.cls", kOptions,
                      sizeof(kOptions) / sizeof(kOptions[0]))
