// `dshost pack FOLDER OUT_PREFIX`: an image folder (train/ and val/, see image_folder.h)
// written as WebDataset shards (see tar_shards.h): OUT_PREFIX-train-000000.tar, ... and
// OUT_PREFIX-val-000000.tar, ..., each sample the image file's bytes as they are
// (KEY.jpg or KEY.png, by their content) and its class id (KEY.cls), in the folder's order,
// so the shards train exactly as the folder does. With a maximum side, an image larger than
// that is resized to it (Pillow's antialiased bilinear) and stored as a JPEG of quality 90,
// as FFCV stores ImageNet: smaller shards, less to decode, other pixels.
#pragma once

#include <cstdint>
#include <string>

namespace dshost {

// Writes the shards, `per_shard` samples each, every file through a temporary name (no
// half-written shard is left under its own name), images larger than `max_side` (0: none)
// made that size; returns what to put in the manifest.
std::string pack_image_folder(const std::string& folder, const std::string& out_prefix,
                              int64_t per_shard, int64_t max_side = 0);

}  // namespace dshost
