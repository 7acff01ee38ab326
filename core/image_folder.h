// Image folders as torchvision's ImageFolder reads them: ROOT/train/CLASS/IMAGE and
// ROOT/val/CLASS/IMAGE (JPEG or PNG, decoded by Debian's libstb), one class per subfolder in
// name order. Images are decoded when a batch needs them, with torchvision's ImageNet
// transforms: random-resized-crop (scale 0.08-1, ratio 3/4-4/3) and a horizontal flip for
// training, resize (to size x 256/224 on the short side) and a center crop for evaluation.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

namespace dshost {

struct ImageFiles {
  std::vector<std::string> paths;
  at::Tensor labels;  // int64 [N]
  std::vector<std::string> classes;
};

// The image files under `dir`/CLASS/ for `classes` (empty: every subfolder of `dir`), taken
// by their extension as torchvision's ImageFolder takes them; no file is opened.
ImageFiles scan_image_folder(const std::string& dir, const std::vector<std::string>& classes = {});

// `path` as uint8 [3, H, W] (grey and alpha images made RGB); a UserError naming the file
// when it cannot be decoded.
at::Tensor decode_image(const std::string& path);

// `image` (uint8 [3, H, W]) as float [3, size, size] in [0, 1]: the training transform drawn
// from `seed` (the same seed, the same crop and flip), or the evaluation one when seed is 0.
at::Tensor transform_image(const at::Tensor& image, int64_t size, uint64_t seed);

}  // namespace dshost
