// Image folders as torchvision's ImageFolder reads them: ROOT/train/CLASS/IMAGE and
// ROOT/val/CLASS/IMAGE (see core/image_decode.h), one class per subfolder in name order.
// Images are decoded when a batch needs them, with torchvision's ImageNet transforms on
// 8-bit pixels: random-resized-crop (scale 0.08-1, ratio 3/4-4/3) and a horizontal flip for
// training, resize (to size x 256/224 on the short side) and a center crop for evaluation.
#pragma once

#include "core/image_decode.h"

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

// A crop of an image: rows [top, top + height), columns [left, left + width).
struct CropBox {
  int64_t top, left, height, width;
};

// The random numbers RandomResizedCrop draws, in the order it draws them: a try's fraction
// of the area (uniform in [0.08, 1)) and aspect ratio (exp of a uniform log ratio in
// [log 3/4, log 4/3)), then the accepted crop's top and left (each uniform in [0, max]).
class CropDraws {
 public:
  virtual ~CropDraws() = default;
  virtual double area_fraction() = 0;
  virtual double aspect_ratio() = 0;
  virtual int64_t offset(int64_t max) = 0;
};

// torchvision's RandomResizedCrop.get_params (scale 0.08-1, ratio 3/4-4/3) for an image of
// height x width: up to ten tries at a crop of random area and aspect ratio, else the center
// crop at the nearest allowed ratio (the whole image when its own is allowed); sides rounded
// as Python's round() rounds them. The same draws give torchvision's box.
CropBox random_resized_crop_box(int64_t height, int64_t width, CropDraws& draws);

// One training sample of `image` written planar into `out` (uint8 [3, size, size]):
// torchvision's RandomResizedCrop(size) and RandomHorizontalFlip with draws from `seed` (the
// same seed, the same crop and flip), the image decoded at the smallest scale that leaves the
// crop at least `size` pixels on each side.
void training_sample(const EncodedImage& image, int64_t size, uint64_t seed, uint8_t* out);

// Evaluation's: torchvision's Resize(size * 256 / 224) and CenterCrop(size).
void evaluation_sample(const EncodedImage& image, int64_t size, uint8_t* out);

// `box` of the full-size image resized to size x size (Pillow's bilinear) into `out`,
// mirrored when `mirror`.
void resized_crop(const EncodedImage& image, const CropBox& box, int64_t size, bool mirror, uint8_t* out);

}  // namespace dshost
