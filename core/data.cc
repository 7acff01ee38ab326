#include "core/data.h"

#include "core/image_folder.h"
#include "core/tar_shards.h"

#include "core/error.h"
#include "core/log.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iterator>
#include <memory>

namespace dshost {
namespace {

uint32_t big_endian(const unsigned char* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

// The whole decompressed content of a gzip file.
std::vector<unsigned char> read_gzip(const std::string& file) {
  std::unique_ptr<gzFile_s, int (*)(gzFile)> in(gzopen(file.c_str(), "rb"), gzclose);
  if (!in) throw UserError(cat("cannot open ", file));
  std::vector<unsigned char> out;
  unsigned char chunk[1 << 16];
  int n = 0;
  while ((n = gzread(in.get(), chunk, sizeof(chunk))) > 0) out.insert(out.end(), chunk, chunk + n);
  int code = Z_OK;
  const char* message = gzerror(in.get(), &code);
  if (n < 0 || (code != Z_OK && code != Z_STREAM_END))
    throw UserError(cat(file, ": corrupt gzip data (", message, ")"));
  return out;
}

// IDX: magic (0, 0, type 0x08 = uint8, ndim), ndim big-endian sizes, then the data.
at::Tensor read_idx(const std::string& file, int expected_ndim) {
  const auto bytes = read_gzip(file);
  const auto bad = [&](const std::string& why) {
    return UserError(cat(file, ": not a valid IDX file (", why, ")"));
  };
  if (bytes.size() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 ||
      bytes[3] != expected_ndim)
    throw bad("unexpected magic number");
  std::vector<int64_t> shape;
  if (bytes.size() < 4 + 4 * size_t(expected_ndim)) throw bad("truncated header");
  const size_t header = 4 + 4 * size_t(expected_ndim);
  // Multiplied in floating point: the product of the header's sizes can overflow int64.
  double promised = 1;
  for (int d = 0; d < expected_ndim; ++d) {
    shape.push_back(big_endian(&bytes[4 + 4 * d]));
    promised *= static_cast<double>(shape.back());
  }
  if (promised != static_cast<double>(bytes.size() - header))
    throw bad(cat("holds ", bytes.size() - header, " data bytes, its header promises ",
                  at::IntArrayRef(shape), " = ", std::fixed, std::setprecision(0), promised));
  return at::from_blob(const_cast<unsigned char*>(bytes.data() + header), shape, at::kByte).clone();
}

Split read_split(const std::string& dir, const std::string& prefix) {
  Split s;
  s.images = read_idx(dir + "/" + prefix + "-images-idx3-ubyte.gz", 3).unsqueeze(1);
  s.labels = read_idx(dir + "/" + prefix + "-labels-idx1-ubyte.gz", 1).to(at::kLong);
  if (s.images.size(0) != s.labels.size(0))
    throw UserError(cat(dir, ": ", prefix, " has ", s.images.size(0), " images but ",
                        s.labels.size(0), " labels"));
  return s;
}

// splitmix64: a small, fast, well-mixed generator whose output is the same everywhere.
uint64_t next_random(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

void check_fashion_mnist(const std::string& dir, const std::string& origin) {
  for (const char* name : {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                           "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}) {
    if (std::filesystem::is_regular_file(dir + "/" + name)) continue;
    throw UserError(cat(origin, ": error: data.path '", dir, "' has no ", name,
                        ". Install Debian's dataset-fashion-mnist (apt-get install ",
                        "dataset-fashion-mnist) or point data.path at a folder with the four ",
                        "Fashion-MNIST IDX .gz files."));
  }
}

ImageDataset load_fashion_mnist(const std::string& dir, const std::string& origin) {
  check_fashion_mnist(dir, origin);
  ImageDataset data;
  data.train = read_split(dir, "train");
  data.test = read_split(dir, "t10k");
  data.mean = 0.2860;  // Fashion-MNIST training-set pixel statistics
  data.std = 0.3530;
  data.sample_shape = {1, 28, 28};
  return data;
}

namespace {

const char* const kCifarFiles[] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                                   "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"};

// CIFAR-10's binary version: records of a label byte (0-9) and a 32 x 32 image as three
// planes (red, green, blue), 3073 bytes each. Files are read as they are, any number of
// records each.
Split read_cifar(const std::vector<std::string>& files) {
  constexpr int64_t kRecord = 1 + 3 * 32 * 32;
  std::vector<at::Tensor> images, labels;
  for (const auto& file : files) {
    std::ifstream in(file, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (bytes.empty() || bytes.size() % kRecord != 0)
      throw UserError(cat(file, ": not a CIFAR-10 binary batch (", bytes.size(),
                          " bytes, not a whole number of 3073-byte records)"));
    const int64_t n = static_cast<int64_t>(bytes.size()) / kRecord;
    const at::Tensor records = at::from_blob(const_cast<char*>(bytes.data()), {n, kRecord}, at::kByte).clone();
    const at::Tensor label = records.select(1, 0).to(at::kLong);
    if (label.max().item<int64_t>() > 9)
      throw UserError(cat(file, ": record ", label.gt(9).nonzero()[0].item<int64_t>(),
                          " has label ", label.max().item<int64_t>(), "; CIFAR-10 labels are 0-9"));
    labels.push_back(label);
    images.push_back(records.narrow(1, 1, kRecord - 1).reshape({n, 3, 32, 32}));
  }
  return Split{at::cat(images), at::cat(labels)};
}

// Regular files of `path` (itself, or a folder's, sorted by name; the fortune-mod index
// files *.dat and *.u8 left out).
std::vector<std::filesystem::path> text_files(const std::string& path) {
  namespace fs = std::filesystem;
  if (fs::is_regular_file(path)) return {path};
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(path, ec))
    if (entry.is_regular_file() && entry.path().extension() != ".dat" &&
        entry.path().extension() != ".u8")
      files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  return files;
}

// The stream of token ids: bytes of text, or little-endian uint16 ids.
at::Tensor read_tokens(const DataConfig& config) {
  std::string bytes;
  for (const auto& file : text_files(config.path)) {
    std::ifstream in(file, std::ios::binary);
    bytes.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  if (config.dataset == "text")
    return at::from_blob(bytes.data(), {static_cast<int64_t>(bytes.size())}, at::kByte).to(at::kLong);
  if (bytes.size() % 2 != 0)
    throw UserError(cat(config.path, ": not a uint16 token file (odd size, ", bytes.size(), " bytes)"));
  // int16's bits are uint16's: widen, then undo the sign.
  const at::Tensor ids = at::from_blob(bytes.data(), {static_cast<int64_t>(bytes.size() / 2)}, at::kShort);
  return ids.to(at::kLong).bitwise_and_(0xffff);
}

ImageDataset load_tokens(const DataConfig& config, int64_t sequence) {
  const at::Tensor tokens = read_tokens(config);
  const int64_t test = tokens.numel() / 10, train = tokens.numel() - test;
  if (sequence < 1 || test < sequence + 1)
    throw UserError(cat(config.path, ": ", tokens.numel(), " tokens are too few for windows of ",
                        sequence, " (a tenth must hold one for testing)"));
  ImageDataset data;
  data.train = Split{{}, {}, tokens.narrow(0, 0, train), sequence};
  data.test = Split{{}, {}, tokens.narrow(0, train, test), sequence};
  data.sample_shape = {sequence};
  return data;
}

}  // namespace

ImageDataset load_cifar10(const std::string& dir) {
  ImageDataset data;
  std::vector<std::string> train;
  for (int i = 0; i < 5; ++i) train.push_back(dir + "/" + kCifarFiles[i]);
  data.train = read_cifar(train);
  data.test = read_cifar({dir + "/" + kCifarFiles[5]});
  data.mean = 0.4734;  // CIFAR-10 training-set pixel statistics, over the three channels
  data.std = 0.2516;
  data.sample_shape = {3, 32, 32};
  return data;
}

void SkippedFiles::skip(const std::string& file, const std::string& why) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!files_.insert(file).second) return;
  log::warn(cat("skipping ", why, "; its place in the batch goes to the next image"));
  if (static_cast<int64_t>(files_.size()) > limit_)
    throw UserError(cat(files_.size(), " image files did not decode (the last: ", file,
                        "), more than data.max_bad_files = ", limit_,
                        "; remove or replace them, or raise data.max_bad_files"));
}

int64_t SkippedFiles::count() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int64_t>(files_.size());
}

ImageDataset load_image_folder(const std::string& dir, int64_t max_bad_files) {
  const ImageFiles train = scan_image_folder(dir + "/train");
  const ImageFiles val = scan_image_folder(dir + "/val", train.classes);
  ImageDataset data;
  data.skipped = std::make_shared<SkippedFiles>(max_bad_files);
  data.train = Split{{}, train.labels, {}, 0, train.paths};
  data.test = Split{{}, val.labels, {}, 0, val.paths};
  data.sample_shape = {3, 224, 224};
  return data;
}

ImageDataset load_webdataset(const DataConfig& config, const std::string& origin) {
  const auto split = [&](const std::string& pattern) {
    Split out;
    if (pattern.empty()) {
      out.labels = at::zeros({0}, at::kLong);
      return out;
    }
    const ShardIndex index = index_shards(expand_shards(pattern, origin));
    std::vector<int64_t> labels;
    for (const ShardSample& s : index.samples) {
      out.files.push_back(index.shards[s.shard]);
      out.ranges.push_back({s.offset, s.size});
      out.members.push_back(s.member);
      labels.push_back(s.label);
    }
    out.labels = at::tensor(labels, at::kLong);
    return out;
  };
  ImageDataset data;
  data.skipped = std::make_shared<SkippedFiles>(config.max_bad_files);
  data.train = split(config.path);
  data.test = split(config.test_path);
  data.sample_shape = {3, 224, 224};
  return data;
}

void check_dataset(const DataConfig& config, const std::string& origin) {
  if (config.dataset == "webdataset") {
    if (config.path.empty())
      throw UserError(cat(origin, ": error: data.dataset = \"webdataset\" needs data.path: the training "
                          "shards, a brace range such as \"shards/train-{000000..000127}.tar\" (dshost pack "
                          "writes them from an image folder)"));
    expand_shards(config.path, origin);
    if (!config.test_path.empty()) expand_shards(config.test_path, origin);
    return;
  }
  if (config.dataset == "fashion_mnist") return check_fashion_mnist(config.path, origin);
  if (config.dataset == "image_folder") {
    for (const char* part : {"train", "val"})
      if (!std::filesystem::is_directory(config.path + "/" + part))
        throw UserError(cat(origin, ": error: data.path '", config.path, "' has no ", part,
                            "/ folder. An image folder holds train/CLASS/IMAGE and val/CLASS/IMAGE "
                            "(JPEG or PNG), as torchvision's ImageFolder reads ImageNet."));
    return;
  }
  if (config.dataset == "cifar10") {
    for (const char* name : kCifarFiles)
      if (!std::filesystem::is_regular_file(config.path + "/" + name))
        throw UserError(cat(origin, ": error: data.path '", config.path, "' has no ", name,
                            ". Point data.path at the folder of CIFAR-10's binary version "
                            "(cifar-10-batches-bin: data_batch_1.bin to 5, test_batch.bin)."));
    return;
  }
  if (config.dataset == "synthetic") return;
  const bool have = std::filesystem::exists(config.path) && !text_files(config.path).empty();
  if (!have)
    throw UserError(cat(origin, ": error: data.path '", config.path, "' has no ",
                        config.dataset == "text" ? "text files" : "token file",
                        config.dataset == "text"
                            ? ". Install Debian's fortunes (apt-get install fortunes) for the "
                              "default text, or point data.path at a text file or a folder of them."
                            : ". Point data.path at a flat file of little-endian uint16 token ids."));
}

ImageDataset load_dataset(const DataConfig& config, const std::string& origin, int64_t sequence) {
  check_dataset(config, origin);
  if (config.dataset == "text" || config.dataset == "tokens") return load_tokens(config, sequence);
  ImageDataset data;
  if (config.dataset == "fashion_mnist") data = load_fashion_mnist(config.path, origin);
  else if (config.dataset == "cifar10") data = load_cifar10(config.path);
  else if (config.dataset == "image_folder") data = load_image_folder(config.path, config.max_bad_files);
  else if (config.dataset == "webdataset") data = load_webdataset(config, origin);
  else data.sample_shape = {3, 224, 224};  // synthetic: ImageNet's shape by default
  if (config.channels > 0) data.sample_shape[0] = config.channels;
  if (config.image_size > 0) data.sample_shape[1] = data.sample_shape[2] = config.image_size;
  if (config.dataset == "synthetic") {
    // A pool of fixed random images (seed 0), cycled through by sample index; labels cycle
    // through the classes.
    std::vector<int64_t> pool{std::min<int64_t>(config.synthetic_samples, 256)};
    pool.insert(pool.end(), data.sample_shape.begin(), data.sample_shape.end());
    const at::Tensor images =
        at::randint(0, 256, pool, at::detail::createCPUGenerator(0), at::TensorOptions(at::kByte));
    const auto split = [&](int64_t n) {
      return Split{images, at::arange(n, at::kLong).remainder_(config.synthetic_classes)};
    };
    data.train = split(config.synthetic_samples);
    data.test = split(std::max<int64_t>(1, config.synthetic_samples / 10));
    data.mean = 0.5;
    data.std = 0.29;  // of uniform pixels
  }
  return data;
}

std::vector<int64_t> shard_indices(int64_t n, int rank, int world, uint64_t seed, int64_t epoch,
                                   bool shuffle, bool pad) {
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  if (shuffle) {
    uint64_t state = seed * 0x100000001b3ull + static_cast<uint64_t>(epoch);
    for (int64_t i = n - 1; i > 0; --i)
      std::swap(order[i], order[next_random(state) % static_cast<uint64_t>(i + 1)]);
  }
  if (pad && n % world != 0)
    for (int64_t i = 0, extra = world - n % world; i < extra; ++i) order.push_back(order[i % n]);
  std::vector<int64_t> mine;
  for (size_t i = rank; i < order.size(); i += world) mine.push_back(order[i]);
  return mine;
}

namespace {

// Image folder samples, decoded and transformed one by one.
void fill_from_files(const Split& split, SkippedFiles& skipped, const std::vector<int64_t>& indices,
                     int64_t begin, int64_t count, at::Tensor& inputs, at::Tensor& targets,
                     uint64_t augment_seed) {
  const int64_t size = inputs.size(2);
  const at::Tensor pixels = at::empty({count, 3, size, size}, at::kByte);
  std::vector<int64_t> labels(count);
  for (int64_t row = 0; row < count; ++row) {
    const int64_t sample = image_sample(split, skipped, indices[begin + row], size, augment_seed,
                                        pixels[row].data_ptr<uint8_t>());
    labels[row] = split.labels.data_ptr<int64_t>()[sample];
  }
  targets.narrow(0, 0, count).copy_(at::tensor(labels, at::kLong));
  normalize_images(pixels.to(inputs.device()), inputs);
}

}  // namespace

void fill_batch(const ImageDataset& data, const Split& split, const std::vector<int64_t>& indices,
                int64_t begin, int64_t count, at::Tensor& inputs, at::Tensor& targets,
                uint64_t augment_seed) {
  const at::Tensor host_idx =
      at::from_blob(const_cast<int64_t*>(indices.data() + begin), {count}, at::kLong);
  const at::Tensor& held = split.tokens.defined() ? split.tokens : split.labels;
  // A device-resident split gathers there. Its indices go from pinned memory without
  // blocking: a copy from pageable memory waits for the stream, that is, for the previous
  // step, and the GPU then idled while the host launched the next (vgg16, profiled: 2.7 ms
  // a step). The caching host allocator keeps the pinned block until the copy is done.
  const at::Tensor idx =
      held.is_cuda() ? host_idx.pin_memory().to(held.device(), /*non_blocking=*/true) : host_idx;
  if (split.tokens.defined()) {  // [count, T + 1] windows
    const int64_t t = split.sequence;
    const at::Tensor offsets = at::arange(t + 1, idx.options());
    const at::Tensor windows =
        split.tokens.index_select(0, (idx.mul(t).unsqueeze(1) + offsets).view(-1)).view({count, t + 1});
    inputs.narrow(0, 0, count).copy_(windows.narrow(1, 0, t));
    targets.narrow(0, 0, count).copy_(windows.narrow(1, 1, t));
    return;
  }
  targets.narrow(0, 0, count).copy_(split.labels.index_select(0, idx));
  if (!split.files.empty())
    return fill_from_files(split, *data.skipped, indices, begin, count, inputs, targets, augment_seed);
  // On a device-resident split everything below runs on the device, asynchronously.
  // Synthetic data holds fewer images than samples: a sample shows image index % pool.
  const at::Tensor image_idx = idx.remainder(split.images.size(0));
  at::Tensor pixels = split.images.index_select(0, image_idx).to(at::kFloat);
  pixels.div_(255.0).sub_(data.mean).div_(data.std);
  at::Tensor out = inputs.narrow(0, 0, count);
  if (pixels.size(2) != out.size(2) || pixels.size(3) != out.size(3))
    pixels = at::upsample_bilinear2d(pixels, {out.size(2), out.size(3)}, /*align_corners=*/false);
  out.copy_(pixels.expand(out.sizes()));  // 1 channel -> C by broadcasting
}

// Decision: a GPU run keeps an in-memory split on the GPU when it is small (Fashion-MNIST's
// 55 MB, CIFAR-10's 180 MB, the synthetic pool's 38 MB), so a batch is gathered, converted
// and normalised there, without the host's float conversion and a synchronous pageable copy
// (38 MB per batch of 64 ImageNet-sized images; not measured apart from the rest of
// bench/results/gpu_perf.md). Larger token files stay on the host.
void keep_on_device(ImageDataset& data, at::Device device) {
  constexpr int64_t kLimit = int64_t{1} << 30;  // bytes per split
  for (Split* split : {&data.train, &data.test}) {
    int64_t bytes = 0;
    for (const at::Tensor* t : {&split->images, &split->labels, &split->tokens})
      if (t->defined()) bytes += t->numel() * static_cast<int64_t>(t->element_size());
    if (!split->files.empty() || bytes > kLimit) continue;
    for (at::Tensor* t : {&split->images, &split->labels, &split->tokens})
      if (t->defined()) *t = t->to(device);
  }
}

namespace {

// Sample `sample`'s image: its file, or its bytes in a shard.
EncodedImage encoded_image(const Split& split, int64_t sample) {
  if (split.ranges.empty()) return EncodedImage(split.files[sample]);
  const Split::Range r = split.ranges[sample];
  return EncodedImage(sample_name(split, sample), read_bytes(split.files[sample], r.offset, r.size));
}

}  // namespace

std::string sample_name(const Split& split, int64_t index) {
  return split.ranges.empty() ? split.files[index] : cat(split.files[index], ": ", split.members[index]);
}

int64_t image_sample(const Split& split, SkippedFiles& skipped, int64_t index, int64_t size,
                     uint64_t augment_seed, uint8_t* out) {
  const auto n = static_cast<int64_t>(split.files.size());
  int64_t sample = index;
  for (int64_t tried = 0; tried < n; ++tried, sample = (sample + 1) % n) {
    try {
      const EncodedImage image = encoded_image(split, sample);
      if (augment_seed == 0) evaluation_sample(image, size, out);
      else training_sample(image, size, augment_seed * 0x9e3779b97f4a7c15ull + sample + 1, out);
      return sample;
    } catch (const UserError& e) {
      skipped.skip(sample_name(split, sample), e.what());
    }
  }
  throw UserError(cat("none of the ", n, " image files of the split decodes; check data.path"));
}

// On the CPU, one pass through a table of the 256 values per channel, spread over the
// intra-op threads; elsewhere LibTorch's operations (no copy of the statistics to the
// device). Both compute (pixel - 255 mean) / (255 std) in float.
void normalize_images(const at::Tensor& pixels, at::Tensor& inputs) {
  constexpr double kMean[] = {0.485, 0.456, 0.406}, kStd[] = {0.229, 0.224, 0.225};
  at::Tensor out = inputs.narrow(0, 0, pixels.size(0));
  if (out.is_cpu() && out.scalar_type() == at::kFloat && out.sizes() == pixels.sizes() && out.is_contiguous() &&
      pixels.is_contiguous()) {
    float table[3][256];
    for (int c = 0; c < 3; ++c)
      for (int v = 0; v < 256; ++v)
        table[c][v] = (static_cast<float>(v) - static_cast<float>(255 * kMean[c])) / static_cast<float>(255 * kStd[c]);
    const int64_t plane = pixels.size(2) * pixels.size(3);
    const uint8_t* from = pixels.data_ptr<uint8_t>();
    float* to = out.data_ptr<float>();
    at::parallel_for(0, pixels.size(0) * 3, 1, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p)
        for (int64_t i = 0; i < plane; ++i) to[p * plane + i] = table[p % 3][from[p * plane + i]];
    });
    return;
  }
  const at::Tensor x = pixels.to(at::kFloat);
  for (int64_t c = 0; c < 3; ++c) x.select(1, c).sub_(255 * kMean[c]).div_(255 * kStd[c]);
  out.copy_(x.expand(out.sizes()));
}

}  // namespace dshost
