// Image files decoded to 8-bit RGB. JPEG goes through libjpeg-turbo at the smallest of its
// DCT scales (eighths) that the caller says is enough, so a photo that is cropped and
// resized to 224 pixels is not decoded at full size; PNG and the other formats stb reads
// are decoded whole, whatever the file's name says (ImageNet has PNG content behind .JPEG
// names). Grey and CMYK images come out as Pillow's convert("RGB") makes them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dshost {

struct RgbImage {
  std::vector<uint8_t> pixels;  // height x width x 3
  int64_t height = 0, width = 0;
};

class EncodedImage {
 public:
  // Reads `path` and its header; a UserError naming the file when it cannot be read or is
  // not an image.
  explicit EncodedImage(const std::string& path);

  int64_t height() const { return height_; }
  int64_t width() const { return width_; }

  // The image at the smallest scale s >= min_scale it can be decoded at (a JPEG's n/8; 1
  // for other formats, or where min_scale >= 1): ceil(height * s) x ceil(width * s). A
  // UserError naming the file when the data does not decode (a file cut short).
  RgbImage decode(double min_scale = 1) const;

 private:
  RgbImage decode_jpeg(double min_scale) const;
  RgbImage decode_other() const;

  std::string path_;
  std::string bytes_;
  bool jpeg_ = false, cmyk_ = false;
  int64_t height_ = 0, width_ = 0;
};

}  // namespace dshost
