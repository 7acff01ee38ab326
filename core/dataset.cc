#include "core/dataset.h"

#include "core/error.h"
#include "core/log.h"

#include <c10/util/ArrayRef.h>  // printing shapes

#include <algorithm>

namespace dshost {
namespace {

std::vector<int64_t> shape_of(int32_t ndim, const int64_t* shape) {
  return {shape, shape + std::max(ndim, 0)};
}

const char* split_name(dshost_split split) {
  return split == DSHOST_TRAIN_SPLIT ? "train" : "test";
}

int64_t product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// splitmix64's finaliser over the batch's seed and the sample: each sample its own stream.
uint64_t sample_seed(uint64_t augment_seed, int64_t index) {
  return augment_seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(index) + 1;
}

// dshost_sample.encoded_buffer: the sample's EncodedSample grown to `size` bytes.
void* encoded_buffer(dshost_sample* sample, size_t size) {
  auto& bytes = static_cast<EncodedSample*>(sample->host_data)->bytes;
  try {
    bytes.resize(size);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
  return bytes.data();
}

}  // namespace

DatasetPlugin::DatasetPlugin(const Job& job, const RankInfo& rank,
                             const std::vector<int64_t>& wanted)
    : name_(job.dataset.plugin.descriptor->name),
      file_(job.dataset.plugin.file),
      origin_(job.manifest.origin("data", "dataset")),
      library_(job.dataset.plugin.library),
      table_(job.dataset.plugin.table),
      api_(static_cast<const dshost_dataset_api*>(table_.get())),
      max_bad_samples_(job.config.data.max_bad_files) {
  host_ = std::make_unique<PluginHost>(name_, job.dataset.options, rank, nullptr);
  if (wanted.size() > 8)
    throw UserError(cat("a model sample of ", wanted.size(), " dimensions (at most 8)"));
  dshost_dataset_request request{
      sizeof(dshost_dataset_request), static_cast<int32_t>(wanted.size()), {}};
  std::copy(wanted.begin(), wanted.end(), request.shape);
  dshost_error err{sizeof(dshost_error), {}};
  const auto fail = [&](const char* call) {
    return UserError(cat(job.manifest.origin("data", "path"), ": error: dataset '", name_, "' (",
                         job.dataset.plugin.file, ")", call, ": ", err.message));
  };
  if (api_->create(host_->table(), &request, &dataset_, &err) != DSHOST_OK) throw fail("");
  info_.struct_size = sizeof(info_);
  if (api_->describe(dataset_, &info_, &err) != DSHOST_OK) {
    api_->destroy(dataset_);
    throw fail(" describe");
  }
  try {
    check_info();
  } catch (...) {
    api_->destroy(dataset_);
    throw;
  }
  input_bytes_ = product(input_shape()) * info_.input_dtype.bits / 8;
  target_count_ = product(target_shape());
}

DatasetPlugin::~DatasetPlugin() { api_->destroy(dataset_); }

std::vector<int64_t> DatasetPlugin::input_shape() const {
  return shape_of(info_.input_ndim, info_.input_shape);
}
std::vector<int64_t> DatasetPlugin::target_shape() const {
  return shape_of(info_.target_ndim, info_.target_shape);
}

bool DatasetPlugin::is_images() const {
  return info_.input_dtype.code == kDLUInt && info_.input_dtype.bits == 8 && info_.input_ndim == 3;
}

bool DatasetPlugin::is_tokens() const {
  return info_.input_dtype.code == kDLInt && info_.input_dtype.bits == 64;
}

// A description the host cannot use is the plugin author's to correct.
void DatasetPlugin::check_info() const {
  const auto wrong = [&](const std::string& why) {
    return UserError(cat(origin_, ": error: dataset '", name_, "' describes ", why,
                         "; the plugin's author must correct it"));
  };
  const DLDataType t = info_.input_dtype;
  const bool float32 = t.code == kDLFloat && t.bits == 32;
  if (!(is_images() || is_tokens() || float32) || t.lanes != 1)
    throw wrong("an input dtype other than uint8 images [C, H, W], int64 tokens or float32");
  if (info_.input_ndim < 1 || info_.input_ndim > 8 || info_.target_ndim < 0 ||
      info_.target_ndim > 8)
    throw wrong(
        cat("inputs of ", info_.input_ndim, " or targets of ", info_.target_ndim, " dimensions"));
  for (int64_t d : input_shape())
    if (d < 1) throw wrong(cat("inputs of shape ", at::IntArrayRef(input_shape())));
  for (int64_t d : target_shape())
    if (d < 1) throw wrong(cat("targets of shape ", at::IntArrayRef(target_shape())));
  if (is_images() && info_.input_shape[0] > 4)
    throw wrong(cat("images of ", info_.input_shape[0], " channels (at most 4)"));
  if (info_.samples[0] < 1 || info_.samples[1] < 0)
    throw wrong(cat(info_.samples[0], " training samples"));
  for (int c = 0; is_images() && c < info_.input_shape[0]; ++c)
    if (!(info_.std[c] > 0))
      throw wrong(cat("a standard deviation of ", info_.std[c], " for channel ", c));
}

void DatasetPlugin::check_sample(const dshost_sample& s) const {
  const auto where = [&] {
    return cat("dataset '", name_, "' (", file_, "): sample ", s.index, " of the ",
               split_name(s.split), " split");
  };
  const std::vector<int64_t> written = shape_of(std::min(s.written_ndim, 8), s.written_shape);
  if (written != input_shape())
    throw UserError(
        cat(where(), " was filled as ", at::IntArrayRef(written),
            " where the dataset describes its "
            "samples as ",
            at::IntArrayRef(input_shape()), "; the plugin's author must fill what it describes"),
        1);
  if (info_.classes <= 0) return;
  for (int64_t k = 0; k < target_count_; ++k)
    if (s.target[k] < 0 || s.target[k] >= info_.classes)
      throw UserError(cat(where(), " has target ", s.target[k], ", outside the ", info_.classes,
                          " classes the dataset describes"),
                      1);
}

// What fill gave encoded, or where it wrote pixels, no bytes.
void DatasetPlugin::keep_encoded(const dshost_sample& s, EncodedSample& encoded) const {
  if (s.encoded_size == 0) {
    encoded.bytes.clear();
    return;
  }
  if (s.encoded_size != encoded.bytes.size() || !is_images() || !(s.box[2] > 0 && s.box[3] > 0))
    throw UserError(
        cat("dataset '", name_, "' (", file_, "): sample ", s.index, " of the ",
            split_name(s.split), " split was given as ", s.encoded_size, " encoded bytes of ",
            encoded.bytes.size(), " asked for, with a box of ", s.box[2], " x ", s.box[3],
            "; the plugin's author must give "
            "images as dshost_sample.encoded_buffer says"),
        1);
  encoded.box = {s.box[0], s.box[1], s.box[2], s.box[3], s.mirror != 0, s.box_only != 0};
}

int64_t DatasetPlugin::fill(dshost_split split, int64_t index, uint64_t augment_seed, void* input,
                            int64_t* target, EncodedSample* encoded) const {
  const int64_t n = size(split);
  for (int64_t tried = 0; tried < n; ++tried, index = (index + 1) % n) {
    dshost_sample s{sizeof(dshost_sample),
                    split,
                    index,
                    augment_seed != 0,
                    augment_seed ? sample_seed(augment_seed, index) : 0,
                    input,
                    target,
                    0,
                    {}};
    if (encoded != nullptr) {
      encoded->bytes.clear();
      s.encoded_buffer = &encoded_buffer;
      s.host_data = encoded;
    }
    dshost_error err{sizeof(dshost_error), {}};
    const dshost_status status = api_->fill(dataset_, &s, &err);
    if (status == DSHOST_OK) {
      check_sample(s);
      if (encoded != nullptr) keep_encoded(s, *encoded);
      return index;
    }
    if (status != DSHOST_BAD_SAMPLE)
      throw UserError(cat("dataset '", name_, "' (", file_, ") failed on sample ", index,
                          " of the ", split_name(split), " split: ", err.message),
                      1);
    skip(split, index, err.message);
  }
  throw UserError(cat("dataset '", name_, "': none of the ", n, " samples of the ",
                      split_name(split), " split can be made; check its data"));
}

void DatasetPlugin::skip(dshost_split split, int64_t index, const std::string& why) const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!skipped_.insert({split, index}).second) return;
  log::warn(cat("skipping ", why, "; its place in the batch goes to the next sample"));
  if (static_cast<int64_t>(skipped_.size()) > max_bad_samples_)
    throw UserError(cat(skipped_.size(), " samples could not be made (the last: ", why,
                        "), more than "
                        "data.max_bad_files = ",
                        max_bad_samples_, "; remove or replace them, or raise data.max_bad_files"));
}

int64_t DatasetPlugin::skipped() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int64_t>(skipped_.size());
}

}  // namespace dshost
