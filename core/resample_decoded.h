// The resampling a dataset leaves to the host when it gives an image as its JPEG file
// (dshost_sample.box), on the device the image was decoded on: LibTorch's antialiased
// bilinear filter, which is Pillow's bilinear filter in float, as torchvision's tensor
// transforms resize.
#pragma once

#include <dshost/dataset.hpp>  // ImageBox

#include <ATen/core/Tensor.h>

namespace dshost {

// `box` of `rgb` (uint8 [H, W, 3], a decoded image) resampled to the height and width of
// `out` (uint8 [3, h, w] on rgb's device) and rounded into it, mirrored where box.mirror.
void resample_decoded(const at::Tensor& rgb, const ImageBox& box, const at::Tensor& out);

}  // namespace dshost
