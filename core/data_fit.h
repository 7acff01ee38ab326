// Whether a dataset can feed a model, checked before the first step: the kind of sample
// (images or token ids), the shape as presented (data.channels, data.image_size) and the
// targets within the model's outputs. Each refusal names the manifest key to change.
#pragma once

#include "core/dataset.h"
#include "core/job.h"

#include <cstdint>
#include <vector>

namespace dshost {

// Throws UserError at the manifest's key where `data` cannot feed the model `model_info`
// describes.
void check_data_fits_model(const Job& job, const DatasetPlugin& data,
                           const dshost_model_info& model_info);

// An image dataset's sample shape [C, H, W] as data.channels and data.image_size present it
// (0: as the dataset gives it); other samples as they are.
std::vector<int64_t> presented_shape(std::vector<int64_t> shape, bool images, int64_t channels,
                                     int64_t image_size);

}  // namespace dshost
