// Image files decoded to 8-bit RGB. JPEG goes through libjpeg-turbo at the smallest of its
// DCT scales (eighths) that the caller says is enough, and into pixels only over the region
// the caller needs (whole blocks of columns; the other rows are read but not decoded), so a
// photo that is cropped and resized to 224 pixels is neither decoded at full size nor whole.
// PNG and the
// other formats stb reads are decoded whole, whatever the file's name says (ImageNet has
// PNG content behind .JPEG names). Grey and CMYK images come out as Pillow's
// convert("RGB") makes them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dshost {

// Decoded pixels: rows [top, top + height) and columns [left, left + width) of the image
// scaled to scaled_height x scaled_width.
struct RgbImage {
  std::vector<uint8_t> pixels;  // height x width x 3
  int64_t height = 0, width = 0;
  int64_t top = 0, left = 0;
  int64_t scaled_height = 0, scaled_width = 0;
};

// Rows [top, top + height) and columns [left, left + width) of the full-size image.
struct PixelBox {
  double top, left, height, width;
};

// The bytes of file `path`; an Error (DSHOST_BAD_SAMPLE) naming it, and why, when it cannot be
// read.
std::string read_file_bytes(const std::string& path);

class EncodedImage {
 public:
  // Reads `path` and its header; an Error naming the file when it cannot be read or is
  // not an image.
  explicit EncodedImage(const std::string& path);
  // An image's `bytes` (as held in a shard), called `name` in messages.
  EncodedImage(std::string name, std::string bytes);

  int64_t height() const { return height_; }
  int64_t width() const { return width_; }
  const std::string& bytes() const { return bytes_; }
  // A JPEG that any JPEG decoder reads as this one does: grey or YCbCr pixels (not CMYK,
  // whose inversion is Adobe's), and whole (its end-of-image marker present).
  bool plain_jpeg() const { return plain_jpeg_; }

  // The image at the smallest scale s >= min_scale it can be decoded at (a JPEG's n/8; 1
  // for other formats, or where min_scale >= 1): ceil(height * s) x ceil(width * s), of
  // which at least the part covering `need` (full-size coordinates; null: all) with a
  // margin of two pixels. An Error (DSHOST_BAD_SAMPLE) naming the file when the data does not
  // decode (a file cut short).
  RgbImage decode(double min_scale = 1, const PixelBox* need = nullptr) const;

 private:
  RgbImage decode_jpeg(double min_scale, const PixelBox* need) const;
  RgbImage decode_other() const;

  std::string path_;
  std::string bytes_;
  bool jpeg_ = false, plain_jpeg_ = false;
  int64_t height_ = 0, width_ = 0;
};

// `image` (whole: top and left 0) as a baseline JPEG of `quality` (1-100).
std::string encode_jpeg(const RgbImage& image, int quality);

}  // namespace dshost
