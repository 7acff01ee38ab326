// Dataset plugins: derive from dshost::Dataset and export with DSHOST_DATASET_PLUGIN.
// Needs no LibTorch. The class is constructed as CLASS(services, wanted) where `wanted` is
// the sample shape the model takes (empty when none is known; see dshost_dataset_request).
#pragma once

#include <dshost/plugin.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace dshost {

using Shape = std::vector<int64_t>;

// splitmix64: the next of a stream of well-mixed 64-bit draws from `state`, the same on every
// machine. Datasets draw a sample's augmentation with it from the sample's seed alone (the
// host's sampler draws each epoch's order with it too).
inline uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// What the host resamples of an image a dataset gives encoded: see dshost_sample.box.
struct ImageBox {
  double top, left, height, width;  // in pixels of the full-size image
  bool mirror;                      // left to right, after resampling
  bool box_only;                    // the filter reads inside the box only (a crop resized)
};

// One sample to write; see dshost_sample.
struct Sample {
  dshost_split split;
  int64_t index;
  bool augment;  // training's random augmentation, drawn from `seed` alone
  uint64_t seed;
  void* input;  // the described input shape and dtype, contiguous
  int64_t* target;
  dshost_sample* raw;  // the host's record, for giving the image encoded

  // Whether the host decodes JPEG files itself (data.decode = "gpu"), so that fill may give
  // a complete JPEG of grey or YCbCr pixels with give_jpeg instead of writing its pixels.
  bool host_decodes_jpeg() const {
    return raw->struct_size >= DSHOST_STRUCT_SIZE(dshost_sample, box_only) &&
           raw->encoded_buffer != nullptr;
  }
  // Gives this sample as the JPEG file `bytes` of which the host resamples `box` to the
  // input's height and width (fill still returns that shape).
  void give_jpeg(const void* bytes, size_t size, const ImageBox& box) const {
    void* buffer = raw->encoded_buffer(raw, size);
    if (buffer == nullptr)
      throw Error(cat("the host has no memory for an encoded image of ", size, " bytes"),
                  DSHOST_OUT_OF_MEMORY);
    std::memcpy(buffer, bytes, size);
    raw->encoded_size = size;
    raw->box[0] = box.top;
    raw->box[1] = box.left;
    raw->box[2] = box.height;
    raw->box[3] = box.width;
    raw->mirror = box.mirror;
    raw->box_only = box.box_only;
  }
};

class Dataset {
 public:
  explicit Dataset(const Services& services) : services_(services) {}
  virtual ~Dataset() = default;

  virtual dshost_dataset_info describe() const = 0;
  // Writes `sample` and returns the input shape it wrote (the host checks it against
  // describe's). Called from many threads at once: see dshost_dataset_api.fill. A sample
  // that cannot be made: throw Error(message naming its file, DSHOST_BAD_SAMPLE).
  virtual Shape fill(const Sample& sample) const = 0;

  const Services& services() const { return services_; }

 private:
  Services services_;
};

// The info of uint8 images of `shape` [C, H, W] with one class id each, normalised with
// per-channel `mean` and `std` (of value / 255; one value applies to every channel).
inline dshost_dataset_info image_info(int64_t train, int64_t test, int64_t classes,
                                      const Shape& shape, const std::vector<double>& mean,
                                      const std::vector<double>& std) {
  dshost_dataset_info info{sizeof(dshost_dataset_info)};
  info.samples[DSHOST_TRAIN_SPLIT] = train;
  info.samples[DSHOST_TEST_SPLIT] = test;
  info.classes = classes;
  info.input_ndim = static_cast<int32_t>(shape.size());
  std::copy(shape.begin(), shape.end(), info.input_shape);
  info.input_dtype = DLDataType{kDLUInt, 8, 1};
  for (size_t c = 0; c < 4; ++c) {
    info.mean[c] = mean[std::min(c, mean.size() - 1)];
    info.std[c] = std[std::min(c, std.size() - 1)];
  }
  return info;
}

// The info of int64 token windows of `length`, each with the next token at every position
// as its target.
inline dshost_dataset_info token_info(int64_t train, int64_t test, int64_t vocabulary,
                                      int64_t length) {
  dshost_dataset_info info{sizeof(dshost_dataset_info)};
  info.samples[DSHOST_TRAIN_SPLIT] = train;
  info.samples[DSHOST_TEST_SPLIT] = test;
  info.classes = vocabulary;
  info.input_ndim = info.target_ndim = 1;
  info.input_shape[0] = info.target_shape[0] = length;
  info.input_dtype = DLDataType{kDLInt, 64, 1};
  return info;
}

template <class D>
const dshost_dataset_api* dataset_api() {
  static const dshost_dataset_api api = {
      sizeof(dshost_dataset_api),
      [](const dshost_services* t, const dshost_dataset_request* request, dshost_dataset** out,
         dshost_error* err) {
        return guarded(err, [&] {
          const Shape wanted(request->shape, request->shape + request->ndim);
          *out = reinterpret_cast<dshost_dataset*>(new D(Services(t), wanted));
        });
      },
      [](dshost_dataset* d) { delete reinterpret_cast<D*>(d); },
      [](dshost_dataset* d, dshost_dataset_info* out, dshost_error* err) {
        return guarded(err, [&] { *out = reinterpret_cast<D*>(d)->describe(); });
      },
      [](dshost_dataset* d, dshost_sample* s, dshost_error* err) {
        return guarded(err, [&] {
          const Shape written = reinterpret_cast<const D*>(d)->fill(
              Sample{s->split, s->index, s->augment != 0, s->seed, s->input, s->target, s});
          if (written.size() > 8)
            throw Error(cat("a sample of ", written.size(), " dimensions (at most 8)"));
          s->written_ndim = static_cast<int32_t>(written.size());
          std::copy(written.begin(), written.end(), s->written_shape);
        });
      },
  };
  return &api;
}

}  // namespace dshost

#define DSHOST_DATASET_PLUGIN(CLASS, NAME, VERSION, DESCRIPTION, OPTIONS, OPTION_COUNT)            \
  DSHOST_DEFINE_PLUGIN(DSHOST_KIND_DATASET, NAME, VERSION, DESCRIPTION, "", OPTIONS, OPTION_COUNT, \
                       ::dshost::dataset_api<CLASS>())
