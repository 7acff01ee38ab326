#include "core/resample_decoded.h"

#include <ATen/ATen.h>

#include <cmath>

namespace dshost {

void resample_decoded(const at::Tensor& rgb, const ImageBox& box, const at::Tensor& out) {
  const int64_t height = out.size(1), width = out.size(2);
  const at::Tensor picture = rgb.permute({2, 0, 1}).unsqueeze(0);
  at::Tensor resized;
  if (box.box_only) {  // a crop, resized as if it were the whole image
    const int64_t top = std::llround(box.top), left = std::llround(box.left);
    const at::Tensor crop = picture.slice(2, top, top + std::llround(box.height))
                                .slice(3, left, left + std::llround(box.width));
    resized =
        at::_upsample_bilinear2d_aa(crop.to(at::kFloat), {height, width}, /*align_corners=*/false);
  } else {  // the whole image resized, the box cut from the result
    const double sy = height / box.height, sx = width / box.width;
    const int64_t top = std::llround(box.top * sy), left = std::llround(box.left * sx);
    resized = at::_upsample_bilinear2d_aa(
                  picture.to(at::kFloat),
                  {std::llround(rgb.size(0) * sy), std::llround(rgb.size(1) * sx)}, false)
                  .slice(2, top, top + height)
                  .slice(3, left, left + width);
  }
  if (box.mirror) resized = resized.flip({3});
  out.copy_(resized.squeeze(0).round_().clamp_(0, 255));
}

}  // namespace dshost
