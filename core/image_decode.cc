#include "core/image_decode.h"

#include "core/error.h"

#include <stb/stb_image.h>
#include <turbojpeg.h>

#include <fstream>
#include <iterator>
#include <memory>

namespace dshost {
namespace {

// One decompressor per thread: a TurboJPEG handle serves one call at a time.
tjhandle decompressor() {
  thread_local const std::unique_ptr<void, int (*)(tjhandle)> handle(tjInitDecompress(), tjDestroy);
  return handle.get();
}

bool starts_as_jpeg(const std::string& bytes) {
  return bytes.size() > 3 && static_cast<unsigned char>(bytes[0]) == 0xFF &&
         static_cast<unsigned char>(bytes[1]) == 0xD8 && static_cast<unsigned char>(bytes[2]) == 0xFF;
}

const unsigned char* data_of(const std::string& bytes) {
  return reinterpret_cast<const unsigned char*>(bytes.data());
}

// Pillow's CMYK to RGB, from the inverted CMYK that Adobe's JPEGs store (and libjpeg-turbo
// returns as stored): each channel is (255 - ink) * (255 - black) / 255, rounded.
void cmyk_to_rgb(const std::vector<uint8_t>& cmyk, std::vector<uint8_t>& rgb) {
  const size_t pixels = cmyk.size() / 4;
  rgb.resize(pixels * 3);
  for (size_t i = 0; i < pixels; ++i) {
    const unsigned black = cmyk[i * 4 + 3];
    for (int c = 0; c < 3; ++c) {
      const unsigned t = cmyk[i * 4 + c] * black + 128;
      rgb[i * 3 + c] = static_cast<uint8_t>((t + (t >> 8)) >> 8);
    }
  }
}

}  // namespace

EncodedImage::EncodedImage(const std::string& path) : path_(path) {
  std::ifstream in(path, std::ios::binary);
  bytes_.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof())
    throw UserError(cat(path, ": cannot be read"));
  jpeg_ = starts_as_jpeg(bytes_);
  int w = 0, h = 0, subsampling = 0, colorspace = 0, channels = 0;
  if (jpeg_) {
    if (tjDecompressHeader3(decompressor(), data_of(bytes_), bytes_.size(), &w, &h, &subsampling, &colorspace) != 0)
      throw UserError(cat(path, ": not a JPEG or PNG image that can be decoded (",
                          tjGetErrorStr2(decompressor()), ")"));
    cmyk_ = colorspace == TJCS_CMYK || colorspace == TJCS_YCCK;
  } else if (!stbi_info_from_memory(data_of(bytes_), static_cast<int>(bytes_.size()), &w, &h, &channels)) {
    throw UserError(cat(path, ": not a JPEG or PNG image that can be decoded (",
                        stbi_failure_reason() ? stbi_failure_reason() : "unknown", ")"));
  }
  height_ = h;
  width_ = w;
}

RgbImage EncodedImage::decode(double min_scale) const {
  return jpeg_ ? decode_jpeg(min_scale) : decode_other();
}

RgbImage EncodedImage::decode_jpeg(double min_scale) const {
  int count = 0;
  const tjscalingfactor* factors = tjGetScalingFactors(&count);
  tjscalingfactor chosen{1, 1};
  for (int i = 0; i < count; ++i) {
    const double s = static_cast<double>(factors[i].num) / factors[i].denom;
    if (s <= 1 && s >= min_scale && s < static_cast<double>(chosen.num) / chosen.denom) chosen = factors[i];
  }
  RgbImage out;
  out.height = TJSCALED(static_cast<int>(height_), chosen);
  out.width = TJSCALED(static_cast<int>(width_), chosen);
  const int format = cmyk_ ? TJPF_CMYK : TJPF_RGB;
  std::vector<uint8_t> decoded(static_cast<size_t>(out.height * out.width * tjPixelSize[format]));
  if (tjDecompress2(decompressor(), data_of(bytes_), bytes_.size(), decoded.data(), static_cast<int>(out.width), 0,
                    static_cast<int>(out.height), format, 0) != 0)
    throw UserError(cat(path_, ": not a JPEG or PNG image that can be decoded (",
                        tjGetErrorStr2(decompressor()), ")"));
  if (cmyk_) cmyk_to_rgb(decoded, out.pixels);
  else out.pixels = std::move(decoded);
  return out;
}

RgbImage EncodedImage::decode_other() const {
  int w = 0, h = 0, channels = 0;
  unsigned char* pixels = stbi_load_from_memory(data_of(bytes_), static_cast<int>(bytes_.size()), &w, &h, &channels, 3);
  if (pixels == nullptr)
    throw UserError(cat(path_, ": not a JPEG or PNG image that can be decoded (",
                        stbi_failure_reason() ? stbi_failure_reason() : "unknown", ")"));
  RgbImage out;
  out.height = h;
  out.width = w;
  out.pixels.assign(pixels, pixels + static_cast<size_t>(w) * h * 3);
  stbi_image_free(pixels);
  return out;
}

}  // namespace dshost
