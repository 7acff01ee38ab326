// `dshost pack FOLDER OUT_PREFIX`: an image folder (train/ and val/, see image_folder.h)
// written as WebDataset shards (see tar_shards.h): OUT_PREFIX-train-000000.tar, ... and
// OUT_PREFIX-val-000000.tar, ..., each sample the image file's bytes as they are
// (KEY.jpg or KEY.png, by their content) and its class id (KEY.cls), in the folder's order,
// so the shards train exactly as the folder does.
#pragma once

#include <cstdint>
#include <string>

namespace dshost {

// Writes the shards, `per_shard` samples each, every file through a temporary name (no
// half-written shard is left under its own name); returns what to put in the manifest.
std::string pack_image_folder(const std::string& folder, const std::string& out_prefix, int64_t per_shard);

}  // namespace dshost
