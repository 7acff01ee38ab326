#include "core/safetensors.h"

#include "core/crc32c.h"
#include "core/error.h"

#include <fcntl.h>
#include <ftw.h>
#include <nlohmann/json.hpp>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace dshost {
namespace {

const std::map<at::ScalarType, std::string>& dtype_names() {
  static const std::map<at::ScalarType, std::string> names{
      {at::kFloat, "F32"}, {at::kBFloat16, "BF16"}, {at::kLong, "I64"}, {at::kByte, "U8"}};
  return names;
}

// Writes all of `size` bytes or fails.
bool write_all(int fd, const void* data, size_t size) {
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

std::string safetensors_dtype(at::ScalarType t) {
  const auto it = dtype_names().find(t);
  if (it == dtype_names().end())
    throw UserError(cat("cannot store a ", at::toString(t), " tensor in a safetensors file"), 1);
  return it->second;
}

at::ScalarType from_safetensors_dtype(const std::string& name) {
  for (const auto& [type, text] : dtype_names())
    if (text == name) return type;
  throw UserError(
      cat("unsupported safetensors dtype ", name, " (dshost reads F32, BF16, I64, U8)"));
}

WrittenFile write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  // Widest elements first, so every tensor starts aligned to its element size without the
  // holes the format forbids.
  std::vector<std::pair<std::string, at::Tensor>> rows;
  for (const auto& t : tensors) rows.emplace_back(t.name, t.tensor.cpu().contiguous());
  std::stable_sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) {
    return a.second.element_size() > b.second.element_size();
  });
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  size_t offset = 0;
  for (const auto& [name, t] : rows) {
    const size_t n = static_cast<size_t>(t.numel()) * t.element_size();
    header[name] = {{"dtype", safetensors_dtype(t.scalar_type())},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned
  uint64_t length = text.size();
  unsigned char prefix[8];
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<unsigned char>(length >> (8 * i));

  const std::string part = path + ".part";
  const int fd = ::open(part.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  uint32_t crc = crc32c(prefix, 8);
  crc = crc32c(text.data(), text.size(), crc);
  bool ok = fd >= 0 && write_all(fd, prefix, 8) && write_all(fd, text.data(), text.size());
  for (const auto& row : rows) {
    if (!ok) break;
    const size_t n = static_cast<size_t>(row.second.numel()) * row.second.element_size();
    crc = crc32c(row.second.data_ptr(), n, crc);
    ok = write_all(fd, row.second.data_ptr(), n);
  }
  ok = ok && ::fsync(fd) == 0;
  const int saved_errno = errno;
  if (fd >= 0) ::close(fd);
  if (!ok || std::rename(part.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(ok ? errno : saved_errno);
    std::remove(part.c_str());
    throw UserError(cat("cannot write ", path, ": ", why, "; check the disk and its free space"),
                    1);
  }
  return {static_cast<int64_t>(8 + text.size() + offset), crc};
}

void write_file_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  const bool ok = f != nullptr && std::fwrite(text.data(), 1, text.size(), f) == text.size() &&
                  std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  if (f != nullptr) std::fclose(f);
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(tmp.c_str());
    throw UserError(cat("cannot write ", path, ": ", why, "; check the disk and its free space"),
                    1);
  }
}

void remove_tree(const std::string& path) {
  nftw(
      path.c_str(), [](const char* p, const struct stat*, int, FTW*) { return ::remove(p); }, 16,
      FTW_DEPTH | FTW_PHYS);
}

void sync_directory(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  const auto bad = [&](const std::string& why) {
    return UserError(cat(path, ": not a readable safetensors file: ", why,
                         "; the file is damaged or incomplete"),
                     2);
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  struct stat st {};
  if (fd < 0 || ::fstat(fd, &st) != 0) {
    const std::string why = std::strerror(errno);
    if (fd >= 0) ::close(fd);
    throw bad(why);
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) map_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map_ == MAP_FAILED) map_ = nullptr;
  if (size_ < 8 || map_ == nullptr) throw bad(cat(size_, " bytes"));
  const auto* bytes = static_cast<const unsigned char*>(map_);
  uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = length << 8 | bytes[i];
  if (length > size_ - 8) throw bad(cat("its header claims ", length, " bytes of ", size_));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes + 8, bytes + 8 + length);
    for (const auto& [name, value] : header.items()) {
      if (name == "__metadata__") {
        metadata_ = value.get<std::map<std::string, std::string>>();
        continue;
      }
      Entry e{};
      const std::string dtype = value.at("dtype").get<std::string>();
      const auto it = std::find_if(dtype_names().begin(), dtype_names().end(),
                                   [&](const auto& d) { return d.second == dtype; });
      if (it == dtype_names().end()) throw bad(cat("tensor ", name, " has dtype ", dtype));
      e.dtype = it->first;
      e.shape = value.at("shape").get<std::vector<int64_t>>();
      const auto offsets = value.at("data_offsets").get<std::vector<size_t>>();
      e.begin = 8 + length + offsets.at(0);
      e.end = 8 + length + offsets.at(1);
      int64_t numel = 1;
      for (int64_t d : e.shape) numel *= d;
      if (e.end > size_ || e.begin > e.end ||
          e.end - e.begin != static_cast<size_t>(numel) * c10::elementSize(e.dtype))
        throw bad(cat("tensor ", name, " lies outside the file (truncated?)"));
      entries_[name] = e;
    }
  } catch (const nlohmann::json::exception& e) {
    throw bad(e.what());
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, size_);
}

uint32_t SafetensorsFile::crc32c() const { return dshost::crc32c(map_, size_); }

at::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const auto it = entries_.find(name);
  if (it == entries_.end()) throw UserError(cat(path_, " has no tensor ", name), 2);
  const Entry& e = it->second;
  char* data = static_cast<char*>(map_) + e.begin;
  at::Tensor t = at::from_blob(data, e.shape, at::TensorOptions().dtype(e.dtype));
  // Another writer's file may leave a tensor unaligned; a copy is then safe to compute on.
  return reinterpret_cast<uintptr_t>(data) % c10::elementSize(e.dtype) == 0 ? t : t.clone();
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto& [name, entry] : entries_) out.push_back(name);
  return out;
}

std::string SafetensorsFile::metadata(const std::string& key) const {
  const auto it = metadata_.find(key);
  return it == metadata_.end() ? "" : it->second;
}

}  // namespace dshost
