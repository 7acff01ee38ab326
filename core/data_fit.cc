#include "core/data_fit.h"

#include "core/error.h"

#include <ATen/core/TensorBody.h>  // at::IntArrayRef's printing

namespace dshost {
namespace {

void check_kind(const Job& job, const DatasetPlugin& data, const dshost_model_info& model_info) {
  const bool model_takes_tokens = model_info.input_dtype.code == kDLInt;
  if (model_takes_tokens == data.is_tokens()) return;
  throw UserError(cat(
      job.manifest.origin("data", "dataset"), ": error: model '", job.model.plugin.descriptor->name,
      "' takes ", model_takes_tokens ? "token ids" : "images", " but dataset '", data.name(),
      "' gives ", data.is_tokens() ? "token ids" : "images", "; choose a dataset of that kind"));
}

void check_shape(const Job& job, const DatasetPlugin& data, const dshost_model_info& model_info) {
  const std::vector<int64_t> want(model_info.input_shape,
                                  model_info.input_shape + model_info.input_ndim);
  const std::vector<int64_t> given = data.input_shape();
  const auto& d = job.config.data;
  const std::vector<int64_t> have =
      presented_shape(given, data.is_images(), d.channels, d.image_size);
  if (data.is_images() && have[0] != given[0] && given[0] != 1)
    throw UserError(cat(job.manifest.origin("data", "channels"), ": error: data.channels = ",
                        have[0], " cannot be made from dataset '", data.name(), "''s ", given[0],
                        " channels (only grey images are repeated)"));
  if (have != want)
    throw UserError(
        cat(job.manifest.origin("model", "plugin"), ": error: model '",
            job.model.plugin.descriptor->name, "' expects samples of shape ", at::IntArrayRef(want),
            " but dataset '", data.name(), "' gives ", at::IntArrayRef(have),
            "; set the model's in_channels / image_size, or ",
            "present the data as the model takes it with data.channels / data.image_size"));
}

// Known where the model declares num_classes (image models) or vocab_size (token models):
// targets it has no output for are named here rather than met as its indexing error mid-step.
void check_classes(const Job& job, const DatasetPlugin& data) {
  const std::string key = data.is_tokens() ? "vocab_size" : "num_classes";
  const Section& model = job.model.options;
  const int64_t classes = data.info().classes;
  if (model.values.count(key) == 0 || model.get_int(key) >= classes) return;
  throw UserError(cat(
      job.manifest.origin("data", "dataset"), ": error: dataset '", data.name(), "' has ", classes,
      data.is_tokens() ? " token ids (0 to " : " classes (labels 0 to ", classes - 1,
      ") but model '", job.model.plugin.descriptor->name, "' has ", key, " = ", model.get_int(key),
      " (", model.at(key).origin, "); raise model.", key, " or correct the data"));
}

}  // namespace

void check_data_fits_model(const Job& job, const DatasetPlugin& data,
                           const dshost_model_info& model_info) {
  check_kind(job, data, model_info);
  check_shape(job, data, model_info);
  check_classes(job, data);
}

std::vector<int64_t> presented_shape(std::vector<int64_t> shape, bool images, int64_t channels,
                                     int64_t image_size) {
  if (!images) return shape;
  if (channels > 0) shape[0] = channels;
  if (image_size > 0) shape[1] = shape[2] = image_size;
  return shape;
}

}  // namespace dshost
