// Files written whole or not at all, whatever kills the writer: text files, and safetensors
// files, the format of checkpoints and exports (an 8-byte little-endian header length, a
// JSON header {NAME: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
// {KEY: STRING}}, then every tensor's bytes, end to end with no holes).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace dshost {

struct NamedTensor {
  std::string name;
  at::Tensor tensor;  // any device and layout; written row-major
};

struct WrittenFile {
  int64_t bytes;
  uint32_t crc32c;  // of the whole file
};

// "F32", "BF16", "I64", "U8": the dtypes dshost writes. Others are a UserError.
std::string safetensors_dtype(at::ScalarType t);
at::ScalarType from_safetensors_dtype(const std::string& name);

// Writes PATH.part, fsyncs it and renames it to PATH, so PATH is whole or absent. F32,
// BF16, I64 and U8 tensors. A failure is a UserError naming the file.
WrittenFile write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                              const std::map<std::string, std::string>& metadata);

// Writes `text` to `path` so that readers see the old file or the whole new one: a
// temporary file in the same folder, fsync, rename. A failure is a UserError naming it.
void write_file_atomically(const std::string& path, const std::string& text);

// Removes `path` and everything under it, if it exists. Not std::filesystem::remove_all:
// the pip LibTorch 2.x exports a broken copy of it that the dynamic linker prefers, and
// calling it crashes (seen on the GPU machine).
void remove_tree(const std::string& path);

// fsync of a directory, so that renames inside it survive a crash of the machine.
void sync_directory(const std::string& path);

// A safetensors file mapped read-only. A file that is truncated or whose header does not
// parse is a UserError naming it.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  int64_t bytes() const { return static_cast<int64_t>(size_); }
  uint32_t crc32c() const;
  bool has(const std::string& name) const { return entries_.count(name) > 0; }
  // A CPU tensor viewing the mapped bytes, valid while this object lives.
  at::Tensor tensor(const std::string& name) const;
  std::vector<std::string> names() const;
  std::string metadata(const std::string& key) const;  // "" when absent

 private:
  struct Entry {
    at::ScalarType dtype;
    std::vector<int64_t> shape;
    size_t begin, end;  // in the file
  };
  std::string path_;
  void* map_ = nullptr;
  size_t size_ = 0;
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace dshost
