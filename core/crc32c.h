// CRC-32C (Castagnoli), the checksum of checkpoint files and of TFRecord framing.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dshost {

// Continues `crc` (0 to start) over `size` bytes.
uint32_t crc32c(const void* data, size_t size, uint32_t crc = 0);

}  // namespace dshost
