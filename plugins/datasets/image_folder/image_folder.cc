// data.dataset = "image_folder": an image folder as torchvision's ImageFolder reads ImageNet,
// ROOT/train/CLASS/IMAGE and ROOT/val/CLASS/IMAGE (JPEG, PNG, ...), classes named by
// train/'s subfolders; each sample decoded and transformed with torchvision's ImageNet
// recipe (see common/image_folder.h) at the model's image size.
#include "plugins/datasets/common/image_folder.h"

#include <dshost/dataset.hpp>

#include <filesystem>

namespace {

using dshost::cat;

const dshost_option kOptions[] = {
    DSHOST_OPTION("path", DSHOST_OPTION_STRING, "\"\"", nullptr,
                  "the folder holding train/CLASS/IMAGE and val/CLASS/IMAGE"),
};

class ImageFolder : public dshost::Dataset {
 public:
  ImageFolder(const dshost::Services& s, const dshost::Shape& wanted)
      : Dataset(s), size_(dshost::image_side(wanted)) {
    const std::string root = s.get_string("path");
    for (const char* part : {"train", "val"})
      if (!std::filesystem::is_directory(root + "/" + part))
        throw dshost::Error(
            cat("data.path '", root, "' has no ", part,
                "/ folder. An image folder holds "
                "train/CLASS/IMAGE and val/CLASS/IMAGE (JPEG or PNG), as torchvision's ImageFolder "
                "reads ImageNet."));
    train_ = dshost::scan_image_folder(root + "/train");
    val_ = dshost::scan_image_folder(root + "/val", train_.classes);
  }

  dshost_dataset_info describe() const override {
    return dshost::image_info(static_cast<int64_t>(train_.paths.size()),
                              static_cast<int64_t>(val_.paths.size()),
                              static_cast<int64_t>(train_.classes.size()), {3, size_, size_},
                              dshost::kImageNetMean, dshost::kImageNetStd);
  }

  dshost::Shape fill(const dshost::Sample& s) const override {
    const dshost::ImageFiles& files = s.split == DSHOST_TRAIN_SPLIT ? train_ : val_;
    dshost::write_image_sample(dshost::EncodedImage(files.paths[s.index]), s, size_);
    *s.target = files.labels[s.index];
    return {3, size_, size_};
  }

 private:
  const int64_t size_;
  dshost::ImageFiles train_, val_;
};

}  // namespace

DSHOST_DATASET_PLUGIN(
    ImageFolder, "image_folder", "1.0.0",
    "a folder of train/CLASS/IMAGE and val/CLASS/IMAGE, with torchvision's ImageNet transforms",
    kOptions, sizeof(kOptions) / sizeof(kOptions[0]))
