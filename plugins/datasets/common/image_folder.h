// Image folders as torchvision's ImageFolder reads them: ROOT/train/CLASS/IMAGE and
// ROOT/val/CLASS/IMAGE (see image_decode.h), one class per subfolder in name order.
// Images are decoded when a batch needs them, with torchvision's ImageNet transforms on
// 8-bit pixels: random-resized-crop (scale 0.08-1, ratio 3/4-4/3) and a horizontal flip for
// training, resize (to size x 256/224 on the short side) and a center crop for evaluation.
#pragma once

#include "plugins/datasets/common/image_decode.h"

#include <dshost/dataset.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace dshost {

struct ImageFiles {
  std::vector<std::string> paths;
  std::vector<int64_t> labels;
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

// The box of `image` a sample of size x size pixels resamples: with `augment`, torchvision's
// RandomResizedCrop and RandomHorizontalFlip with draws from `seed` (the same seed, the same
// box and flip); else evaluation's Resize(size * 256 / 224) and CenterCrop(size).
ImageBox sample_box(const EncodedImage& image, bool augment, uint64_t seed, int64_t size);

// `box` of `image` resampled to size x size (Pillow's bilinear) and written planar into `out`
// (uint8 [3, size, size]), the image decoded at the smallest scale that leaves the box at
// least `size` pixels on each side.
void resample_image(const EncodedImage& image, const ImageBox& box, int64_t size, uint8_t* out);

// Sample `s` of `image`: given as the file itself where the host decodes JPEG and can decode
// this one, else resampled into s.input.
void write_image_sample(const EncodedImage& image, const Sample& s, int64_t size);

// ImageNet's per-channel statistics, which torchvision's recipe normalises with.
const std::vector<double> kImageNetMean{0.485, 0.456, 0.406}, kImageNetStd{0.229, 0.224, 0.225};

// The side of the square crops a model of sample shape `wanted` ([3, S, S]) takes: S, or
// 224 where no model asks (`dshost check`) or the model's images are not square.
inline int64_t image_side(const std::vector<int64_t>& wanted) {
  return wanted.size() == 3 && wanted[1] == wanted[2] ? wanted[1] : 224;
}

}  // namespace dshost
