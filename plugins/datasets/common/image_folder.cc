#include "plugins/datasets/common/image_folder.h"

#include "plugins/datasets/common/image_resample.h"

#include <dshost/plugin.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>

namespace fs = std::filesystem;

namespace dshost {
namespace {

// A stream of independent draws from one seed (splitmix64), drawn as torchvision's
// RandomResizedCrop draws (see CropDraws).
struct Draws : CropDraws {
  explicit Draws(uint64_t seed) : state(seed) {}
  uint64_t state;
  double uniform(double lo, double hi) {
    return lo + (hi - lo) * static_cast<double>(splitmix64(state) >> 11) / 9007199254740992.0;
  }
  double area_fraction() override { return uniform(0.08, 1.0); }
  double aspect_ratio() override { return std::exp(uniform(std::log(3.0 / 4), std::log(4.0 / 3))); }
  int64_t offset(int64_t max) override {
    return std::min(max, static_cast<int64_t>(uniform(0, static_cast<double>(max + 1))));
  }
};

// Python's round(): to the nearest integer, halves to the even one.
int64_t round_half_even(double x) { return static_cast<int64_t>(std::nearbyint(x)); }

// `box` of the full-size image (as `decoded` holds it, scaled and cut to a window) resampled
// to size x size into `out` (see resample_rgb for `cropped`).
void resample_box(const EncodedImage& image, const RgbImage& decoded, const PixelBox& box,
                  bool cropped, int64_t size, bool mirror, uint8_t* out) {
  const double sx = static_cast<double>(decoded.scaled_width) / image.width();
  const double sy = static_cast<double>(decoded.scaled_height) / image.height();
  const Region region{box.left * sx - decoded.left, box.top * sy - decoded.top,
                      (box.left + box.width) * sx - decoded.left,
                      (box.top + box.height) * sy - decoded.top};
  resample_rgb(decoded.pixels.data(), decoded.height, decoded.width, decoded.width * 3, region,
               cropped, size, size, mirror, out);
}

// torchvision's ImageFolder takes files by extension, without opening them: a scan of
// ImageNet's 1.28 million files then reads directories only. What does not decode is
// found when a batch needs it.
bool image_extension(const fs::path& file) {
  std::string ext = file.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  for (const char* known :
       {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"})
    if (ext == known) return true;
  return false;
}

}  // namespace

CropBox random_resized_crop_box(int64_t height, int64_t width, CropDraws& draws) {
  const double area = static_cast<double>(height * width);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * draws.area_fraction();
    const double ratio = draws.aspect_ratio();
    const int64_t w = round_half_even(std::sqrt(target * ratio));
    const int64_t h = round_half_even(std::sqrt(target / ratio));
    if (w <= 0 || h <= 0 || w > width || h > height) continue;
    const int64_t top = draws.offset(height - h);
    return {top, draws.offset(width - w), h, w};
  }
  // The center crop at the nearest allowed aspect ratio: the whole image where its own is.
  const double ratio = static_cast<double>(width) / static_cast<double>(height);
  int64_t h = height, w = width;
  if (ratio < 3.0 / 4)
    h = round_half_even(static_cast<double>(w) / (3.0 / 4));
  else if (ratio > 4.0 / 3)
    w = round_half_even(static_cast<double>(h) * (4.0 / 3));
  return {(height - h) / 2, (width - w) / 2, h, w};
}

ImageFiles scan_image_folder(const std::string& dir, const std::vector<std::string>& classes) {
  ImageFiles out;
  out.classes = classes;
  std::error_code ec;
  if (out.classes.empty()) {
    for (const auto& e : fs::directory_iterator(dir, ec))
      if (e.is_directory()) out.classes.push_back(e.path().filename().string());
    std::sort(out.classes.begin(), out.classes.end());
  }
  if (ec || out.classes.empty())
    throw Error(cat(dir, " has no class folders (", dir,
                    "/CLASS/IMAGE, as torchvision's ImageFolder reads)"));
  std::vector<int64_t> labels;
  for (size_t c = 0; c < out.classes.size(); ++c) {
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(fs::path(dir) / out.classes[c], ec))
      if (e.is_regular_file()) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const auto& file : files) {
      if (!image_extension(file)) continue;
      out.paths.push_back(file.string());
      labels.push_back(static_cast<int64_t>(c));
    }
  }
  if (out.paths.empty())
    throw Error(cat(dir, " holds no image files (.jpg, .jpeg, .png, ...) in its class folders"));
  out.labels = std::move(labels);
  return out;
}

ImageBox sample_box(const EncodedImage& image, bool augment, uint64_t seed, int64_t size) {
  if (augment) {
    Draws draws(seed);
    const CropBox b = random_resized_crop_box(image.height(), image.width(), draws);
    return {static_cast<double>(b.top),    static_cast<double>(b.left),
            static_cast<double>(b.height), static_cast<double>(b.width),
            draws.uniform(0, 1) < 0.5,     true};
  }
  // Resize's output size as torchvision computes it (the long side truncated), then the
  // center crop's corner as CenterCrop rounds it: the crop is a box of the resized image,
  // which maps back onto the full-size one.
  const int64_t h = image.height(), w = image.width();
  const int64_t short_side = std::lround(static_cast<double>(size) * 256 / 224);
  const int64_t resized_h =
      h <= w ? short_side : static_cast<int64_t>(static_cast<double>(short_side) * h / w);
  const int64_t resized_w =
      h <= w ? static_cast<int64_t>(static_cast<double>(short_side) * w / h) : short_side;
  const int64_t top = round_half_even(static_cast<double>(resized_h - size) / 2);
  const int64_t left = round_half_even(static_cast<double>(resized_w - size) / 2);
  const double fy = static_cast<double>(h) / resized_h, fx = static_cast<double>(w) / resized_w;
  return {top * fy, left * fx, size * fy, size * fx, false, false};
}

void resample_image(const EncodedImage& image, const ImageBox& box, int64_t size, uint8_t* out) {
  const PixelBox region{box.top, box.left, box.height, box.width};
  const double min_scale = std::max(size / box.height, size / box.width);
  resample_box(image, image.decode(min_scale, box.box_only ? &region : nullptr), region,
               box.box_only, size, box.mirror, out);
}

void write_image_sample(const EncodedImage& image, const Sample& s, int64_t size) {
  const ImageBox box = sample_box(image, s.augment, s.seed, size);
  if (s.host_decodes_jpeg() && image.plain_jpeg())
    s.give_jpeg(image.bytes().data(), image.bytes().size(), box);
  else
    resample_image(image, box, size, static_cast<uint8_t*>(s.input));
}

}  // namespace dshost
