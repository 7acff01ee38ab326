// Resampling of 8-bit RGB images as Pillow's Image.resize(size, BILINEAR, box) resamples
// them, which is what torchvision's RandomResizedCrop and Resize do to the PIL images its
// ImageFolder loads: a triangle filter stretched by the reduction factor (so a reduction
// averages every source pixel it covers), applied along rows and then along columns, with
// weights in 22-bit fixed point and each pass rounded to 8 bits.
#pragma once

#include <cstdint>

namespace dshost {

// A region of a source image, in pixels: columns x0 to x1, rows y0 to y1. Its edges may be
// fractional, as where a crop chosen on the full image is taken from a smaller decode.
struct Region {
  double x0, y0, x1, y1;
};

// Region `from` of `rgb` (height x width pixels, 3 interleaved channels, `stride` bytes a
// row) resampled to out_height x out_width and written planar (3 x out_height x out_width)
// into `out`, mirrored left to right when `mirror`. The filter reads no pixel outside
// `from` when `cropped` (as when Pillow resizes an image cropped first: torchvision's
// resized_crop), else any pixel of the image (as when it resizes the whole image and the
// region is cut from the result: Resize, then CenterCrop).
void resample_rgb(const uint8_t* rgb, int64_t height, int64_t width, int64_t stride, Region from,
                  bool cropped, int64_t out_height, int64_t out_width, bool mirror, uint8_t* out);

}  // namespace dshost
