#include "plugins/datasets/common/image_decode.h"

#include <dshost/plugin.hpp>

#include <stb/stb_image.h>

#include <csetjmp>
#include <cstdio>  // jpeglib.h needs FILE
#include <jerror.h>
#include <jpeglib.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>

namespace dshost {
namespace {

// libjpeg reports errors by calling error_exit, which must not return: it jumps back to
// the decoding function with the message.
struct JpegErrors {
  jpeg_error_mgr manager;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

[[noreturn]] void jpeg_failed(j_common_ptr jpeg) {
  auto* errors = reinterpret_cast<JpegErrors*>(jpeg->err);
  jpeg->err->format_message(jpeg, errors->message);
  std::longjmp(errors->jump, 1);
}

// A file cut short is an error, as Pillow refuses truncated files; other corrupt-data
// warnings (stray bytes between markers) are decoded through, as Pillow does.
void jpeg_warned(j_common_ptr jpeg, int level) {
  if (level < 0 && jpeg->err->msg_code == JWRN_JPEG_EOF) jpeg_failed(jpeg);
}

Error undecodable(const std::string& path, const std::string& why) {
  return Error(cat(path, ": not a JPEG or PNG image that can be decoded (", why, ")"),
               DSHOST_BAD_SAMPLE);
}

std::string stb_reason() { return stbi_failure_reason() ? stbi_failure_reason() : "unknown"; }

const unsigned char* data_of(const std::string& bytes) {
  return reinterpret_cast<const unsigned char*>(bytes.data());
}

bool starts_as_jpeg(const std::string& bytes) {
  const unsigned char* b = data_of(bytes);
  return bytes.size() > 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF;
}

// The end-of-image marker within the last bytes (some writers pad after it). Coded data
// never holds it (a 0xFF there is followed by 0x00), so a file cut short has none.
bool ends_as_jpeg(const std::string& bytes) {
  const size_t from = bytes.size() > 64 ? bytes.size() - 64 : 0;
  return bytes.find("\xFF\xD9", from) != std::string::npos;
}

// Pillow's CMYK to RGB, from the inverted CMYK that Adobe's JPEGs store (and libjpeg
// returns as stored): each channel is (255 - ink) * (255 - black) / 255, rounded.
void cmyk_to_rgb(const uint8_t* cmyk, size_t pixels, uint8_t* rgb) {
  for (size_t i = 0; i < pixels; ++i) {
    const unsigned black = cmyk[i * 4 + 3];
    for (int c = 0; c < 3; ++c) {
      const unsigned t = cmyk[i * 4 + c] * black + 128;
      rgb[i * 3 + c] = static_cast<uint8_t>((t + (t >> 8)) >> 8);
    }
  }
}

// The smallest n/8 >= min_scale (to rounding), at most 1.
int eighths_for(double min_scale) {
  for (int n = 1; n < 8; ++n)
    if (n / 8.0 >= min_scale - 1e-9) return n;
  return 8;
}

// The rows and columns of the scaled image that cover `need` (scaled by s) and a margin.
struct Window {
  int64_t top, left, bottom, right;
};
Window window_for(const PixelBox* need, double sy, double sx, int64_t height, int64_t width) {
  if (need == nullptr) return {0, 0, height, width};
  constexpr double kMargin = 2;
  return {std::max<int64_t>(0, static_cast<int64_t>(std::floor(need->top * sy - kMargin))),
          std::max<int64_t>(0, static_cast<int64_t>(std::floor(need->left * sx - kMargin))),
          std::min<int64_t>(
              height, static_cast<int64_t>(std::ceil((need->top + need->height) * sy + kMargin))),
          std::min<int64_t>(
              width, static_cast<int64_t>(std::ceil((need->left + need->width) * sx + kMargin)))};
}

// Runs use(decompressor) once it has read the header of JPEG `bytes`, then destroys it.
// libjpeg's errors jump back here: false, with its message. (`use` must hold nothing that
// needs destroying: the jump would skip it.)
template <class Use>
bool read_jpeg(const std::string& bytes, char* message, const Use& use) {
  jpeg_decompress_struct jpeg{};
  JpegErrors errors{};
  jpeg.err = jpeg_std_error(&errors.manager);
  errors.manager.error_exit = jpeg_failed;
  errors.manager.emit_message = jpeg_warned;
  if (setjmp(errors.jump)) {
    jpeg_destroy_decompress(&jpeg);
    std::snprintf(message, JMSG_LENGTH_MAX, "%s", errors.message);
    return false;
  }
  jpeg_create_decompress(&jpeg);
  jpeg_mem_src(&jpeg, data_of(bytes), bytes.size());
  jpeg_read_header(&jpeg, TRUE);
  use(jpeg);
  jpeg_destroy_decompress(&jpeg);
  return true;
}

}  // namespace

std::string read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(cat(path, ": cannot be read: ", std::strerror(errno)), DSHOST_BAD_SAMPLE);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

EncodedImage::EncodedImage(const std::string& path) : EncodedImage(path, read_file_bytes(path)) {}

EncodedImage::EncodedImage(std::string name, std::string bytes)
    : path_(std::move(name)), bytes_(std::move(bytes)) {
  const std::string& path = path_;
  jpeg_ = starts_as_jpeg(bytes_);
  if (jpeg_) {
    char message[JMSG_LENGTH_MAX] = {};
    const bool read = read_jpeg(bytes_, message, [&](const jpeg_decompress_struct& jpeg) {
      height_ = jpeg.image_height;
      width_ = jpeg.image_width;
      plain_jpeg_ = jpeg.jpeg_color_space == JCS_GRAYSCALE || jpeg.jpeg_color_space == JCS_YCbCr;
    });
    if (!read) throw undecodable(path, message);
    plain_jpeg_ = plain_jpeg_ && ends_as_jpeg(bytes_);
    return;
  }
  int w = 0, h = 0, channels = 0;
  if (!stbi_info_from_memory(data_of(bytes_), static_cast<int>(bytes_.size()), &w, &h, &channels))
    throw undecodable(path, stb_reason());
  height_ = h;
  width_ = w;
}

RgbImage EncodedImage::decode(double min_scale, const PixelBox* need) const {
  return jpeg_ ? decode_jpeg(min_scale, need) : decode_other();
}

namespace {

// A JPEG scaled by n/8, its window's columns widened to whole blocks by jpeg_crop_scanline
// and the rows above and below it skipped (read, not decoded into pixels), into *out's
// geometry and *decoded (RGB or CMYK rows). False, with libjpeg's message, where the data
// does not decode.
bool decode_window(const std::string& bytes, int64_t height, int64_t width, double min_scale,
                   const PixelBox* need, RgbImage* out, std::vector<uint8_t>* decoded, bool* cmyk,
                   char* message) {
  return read_jpeg(bytes, message, [&](jpeg_decompress_struct& jpeg) {
    *cmyk = jpeg.jpeg_color_space == JCS_CMYK || jpeg.jpeg_color_space == JCS_YCCK;
    jpeg.out_color_space = *cmyk ? JCS_CMYK : JCS_RGB;
    jpeg.scale_num = static_cast<unsigned>(eighths_for(min_scale));
    jpeg.scale_denom = 8;
    jpeg_start_decompress(&jpeg);
    out->scaled_height = jpeg.output_height;
    out->scaled_width = jpeg.output_width;
    const Window w = window_for(need, static_cast<double>(out->scaled_height) / height,
                                static_cast<double>(out->scaled_width) / width, out->scaled_height,
                                out->scaled_width);
    auto left = static_cast<JDIMENSION>(w.left),
         columns = static_cast<JDIMENSION>(w.right - w.left);
    if (columns < jpeg.output_width) jpeg_crop_scanline(&jpeg, &left, &columns);
    if (w.top > 0) jpeg_skip_scanlines(&jpeg, static_cast<JDIMENSION>(w.top));
    out->top = w.top;
    out->left = left;
    out->height = w.bottom - w.top;
    out->width = jpeg.output_width;
    const int64_t row_bytes = out->width * jpeg.output_components;
    decoded->resize(static_cast<size_t>(out->height * row_bytes));
    while (jpeg.output_scanline < static_cast<JDIMENSION>(w.bottom)) {
      JSAMPROW row = decoded->data() + (jpeg.output_scanline - w.top) * row_bytes;
      jpeg_read_scanlines(&jpeg, &row, 1);
    }
    // The rest is read without being decoded into pixels, so a file cut short is refused
    // wherever its crop lies (as Pillow refuses it).
    jpeg_skip_scanlines(&jpeg, jpeg.output_height - jpeg.output_scanline);
    jpeg_finish_decompress(&jpeg);
  });
}

}  // namespace

RgbImage EncodedImage::decode_jpeg(double min_scale, const PixelBox* need) const {
  RgbImage out;
  std::vector<uint8_t> decoded;
  bool cmyk = false;
  char message[JMSG_LENGTH_MAX] = {};
  if (!decode_window(bytes_, height_, width_, min_scale, need, &out, &decoded, &cmyk, message))
    throw undecodable(path_, message);
  if (!cmyk) {
    out.pixels = std::move(decoded);
    return out;
  }
  out.pixels.resize(static_cast<size_t>(out.height * out.width * 3));
  cmyk_to_rgb(decoded.data(), static_cast<size_t>(out.height * out.width), out.pixels.data());
  return out;
}

std::string encode_jpeg(const RgbImage& image, int quality) {
  jpeg_compress_struct jpeg{};
  JpegErrors errors{};
  jpeg.err = jpeg_std_error(&errors.manager);
  errors.manager.error_exit = jpeg_failed;
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  if (setjmp(errors.jump)) {
    jpeg_destroy_compress(&jpeg);
    std::free(buffer);
    throw Error(cat("cannot encode a JPEG: ", errors.message), DSHOST_INTERNAL);
  }
  jpeg_create_compress(&jpeg);
  jpeg_mem_dest(&jpeg, &buffer, &size);
  jpeg.image_width = static_cast<JDIMENSION>(image.width);
  jpeg.image_height = static_cast<JDIMENSION>(image.height);
  jpeg.input_components = 3;
  jpeg.in_color_space = JCS_RGB;
  jpeg_set_defaults(&jpeg);
  jpeg_set_quality(&jpeg, quality, TRUE);
  jpeg_start_compress(&jpeg, TRUE);
  while (jpeg.next_scanline < jpeg.image_height) {
    auto* row = const_cast<JSAMPROW>(image.pixels.data() + jpeg.next_scanline * image.width * 3);
    jpeg_write_scanlines(&jpeg, &row, 1);
  }
  jpeg_finish_compress(&jpeg);
  jpeg_destroy_compress(&jpeg);
  std::string out(reinterpret_cast<const char*>(buffer), size);
  std::free(buffer);
  return out;
}

RgbImage EncodedImage::decode_other() const {
  int w = 0, h = 0, channels = 0;
  unsigned char* pixels =
      stbi_load_from_memory(data_of(bytes_), static_cast<int>(bytes_.size()), &w, &h, &channels, 3);
  if (pixels == nullptr) throw undecodable(path_, stb_reason());
  RgbImage out;
  out.height = out.scaled_height = h;
  out.width = out.scaled_width = w;
  out.pixels.assign(pixels, pixels + static_cast<size_t>(w) * h * 3);
  stbi_image_free(pixels);
  return out;
}

}  // namespace dshost
