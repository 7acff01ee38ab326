#include "plugins/datasets/common/image_resample.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace dshost {
namespace {

constexpr int kFractionBits = 22;  // of the fixed-point weights
constexpr int32_t kHalf = int32_t{1} << (kFractionBits - 1);

// For each output pixel along one axis: the first source pixel it reads, how many, and
// their weights (fixed point, summing to one). Pixel o's center maps to
// begin + (o + 0.5) * scale in the source; the unit triangle filter is stretched by the
// scale where it reduces, and reads source pixels [low, high) only.
struct Taps {
  std::vector<int64_t> first, count;
  std::vector<int32_t> weights;  // [o * width + k]
  int64_t width = 0;             // weights per output pixel, at most
};

Taps make_taps(int64_t low, int64_t high, double begin, double end, int64_t out_size) {
  const double scale = (end - begin) / static_cast<double>(out_size);
  const double stretch = std::max(scale, 1.0);
  Taps t;
  t.width = static_cast<int64_t>(std::ceil(stretch)) * 2 + 1;
  t.first.resize(out_size);
  t.count.resize(out_size);
  t.weights.assign(out_size * t.width, 0);
  std::vector<double> w(t.width);
  for (int64_t o = 0; o < out_size; ++o) {
    const double center = begin + (static_cast<double>(o) + 0.5) * scale;
    const int64_t lo = std::max(static_cast<int64_t>(std::floor(center - stretch + 0.5)), low);
    const int64_t hi = std::min(static_cast<int64_t>(std::floor(center + stretch + 0.5)), high);
    const int64_t n = std::min(std::max<int64_t>(hi - lo, 0), t.width);
    double total = 0;
    for (int64_t k = 0; k < n; ++k) {
      const double distance = std::abs((static_cast<double>(lo + k) - center + 0.5) / stretch);
      w[k] = distance < 1 ? 1 - distance : 0;
      total += w[k];
    }
    for (int64_t k = 0; k < n; ++k)
      t.weights[o * t.width + k] = static_cast<int32_t>(
          std::trunc((total != 0 ? w[k] / total : 0) * (1 << kFractionBits) + 0.5));
    t.first[o] = lo;
    t.count[o] = n;
  }
  return t;
}

// Sums stay below 2^31: weights are non-negative and add up to about 2^22.
uint8_t to_byte(int32_t sum) {
  return static_cast<uint8_t>(std::clamp<int32_t>(sum >> kFractionBits, 0, 255));
}

}  // namespace

void resample_rgb(const uint8_t* rgb, int64_t height, int64_t width, int64_t stride, Region from,
                  bool cropped, int64_t out_height, int64_t out_width, bool mirror, uint8_t* out) {
  const auto low = [&](double edge) {
    return cropped ? std::max<int64_t>(static_cast<int64_t>(std::floor(edge)), 0) : 0;
  };
  const auto high = [&](double edge, int64_t size) {
    return cropped ? std::min(static_cast<int64_t>(std::ceil(edge)), size) : size;
  };
  const Taps across = make_taps(low(from.x0), high(from.x1, width), from.x0, from.x1, out_width);
  const Taps down = make_taps(low(from.y0), high(from.y1, height), from.y0, from.y1, out_height);
  // Rows first, for just the source rows the column pass reads.
  const int64_t top = down.first.front();
  const int64_t rows = down.first.back() + down.count.back() - top;
  std::vector<uint8_t> across_rows(static_cast<size_t>(std::max<int64_t>(rows, 0) * out_width * 3));
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* src = rgb + (top + r) * stride;
    uint8_t* dst = across_rows.data() + r * out_width * 3;
    for (int64_t x = 0; x < out_width; ++x) {
      const int32_t* w = &across.weights[x * across.width];
      const uint8_t* p = src + across.first[x] * 3;
      int32_t s0 = kHalf, s1 = kHalf, s2 = kHalf;
      for (int64_t k = 0; k < across.count[x]; ++k, p += 3) {
        s0 += p[0] * w[k];
        s1 += p[1] * w[k];
        s2 += p[2] * w[k];
      }
      dst[x * 3] = to_byte(s0);
      dst[x * 3 + 1] = to_byte(s1);
      dst[x * 3 + 2] = to_byte(s2);
    }
  }
  // Then columns: each output row sums whole rows of the first pass (a loop the compiler
  // vectorises), then is written planar.
  const int64_t row_bytes = out_width * 3, plane = out_height * out_width;
  std::vector<int32_t> sums(static_cast<size_t>(row_bytes));
  for (int64_t y = 0; y < out_height; ++y) {
    std::fill(sums.begin(), sums.end(), kHalf);
    for (int64_t k = 0; k < down.count[y]; ++k) {
      const int32_t w = down.weights[y * down.width + k];
      const uint8_t* row = across_rows.data() + (down.first[y] - top + k) * row_bytes;
      for (int64_t i = 0; i < row_bytes; ++i) sums[i] += row[i] * w;
    }
    for (int64_t x = 0; x < out_width; ++x) {
      const int64_t at = y * out_width + (mirror ? out_width - 1 - x : x);
      out[at] = to_byte(sums[x * 3]);
      out[plane + at] = to_byte(sums[x * 3 + 1]);
      out[2 * plane + at] = to_byte(sums[x * 3 + 2]);
    }
  }
}

}  // namespace dshost
