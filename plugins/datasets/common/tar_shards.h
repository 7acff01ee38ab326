// WebDataset shards: tar files whose members group into samples by name, up to the first dot
// of the last path component ("n01440764/0001.jpg" and "n01440764/0001.cls" make sample
// "n01440764/0001"), each an image (.jpg, .jpeg or .png) and its class id (.cls, a decimal
// number). A shard set is named by one pattern with a brace range, as WebDataset names it:
// "train-{000000..000127}.tar".
//
// Decision: dshost reads every shard's member headers at start (512 bytes a member, no image
// data) and then reads each sample's image by its offset, so a shard set is sampled exactly
// as the folder it was packed from (the same order, augmentation and losses, any world size),
// rather than streamed whole shards per rank with a shuffle buffer as WebDataset does. Large
// sequential files still spare a cluster file system ImageNet's 1.28 million small ones.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dshost {

// The files `pattern` names: those of its brace range "{000000..000127}" (numbers as wide as
// written; every one must exist), or the one file. An Error where a file is missing.
std::vector<std::string> expand_shards(const std::string& pattern);

struct ShardSample {
  int32_t shard;         // index into ShardIndex::shards
  int64_t offset, size;  // of its image's bytes in the shard
  std::string member;    // the image member's name
  int64_t label;
};

struct ShardIndex {
  std::vector<std::string> shards;
  std::vector<ShardSample> samples;  // in shard order, then member order
};

// Reads the member headers of `shards`; an Error naming the file where one is not a tar
// file, a sample has no label or no image, or a label is not a number.
ShardIndex index_shards(const std::vector<std::string>& shards);

// Bytes [offset, offset + size) of file `path` (a sample's image in its shard).
std::string read_bytes(const std::string& path, int64_t offset, int64_t size);

// The 512-byte ustar header of a regular file member `name` of `size` bytes.
std::string tar_header(const std::string& name, int64_t size);

}  // namespace dshost
