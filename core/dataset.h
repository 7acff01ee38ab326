// The rank's dataset: a dataset plugin's instance (see dshost_dataset_api), and the host's
// rules around it. A sample the plugin cannot make (DSHOST_BAD_SAMPLE: a file that does not
// decode) is warned about once and its place taken by the next sample of the split that
// can be made; more than data.max_bad_files of them end the run. What a plugin describes
// and fills is checked: a shape, dtype or target outside what it declared is an error
// naming the plugin and the sample.
#pragma once

#include "core/job.h"
#include "core/resample_decoded.h"
#include "core/services.h"

#include <dshost/abi.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace dshost {

// A sample a dataset gave as its JPEG file for the host to decode (see
// dshost_sample.encoded_buffer): empty bytes where it wrote pixels.
struct EncodedSample {
  std::vector<uint8_t> bytes;
  ImageBox box{};
};

class DatasetPlugin {
 public:
  // Creates the plugin of job.dataset for samples the model takes in `wanted` (empty: no
  // model). A failure is a UserError at the manifest's [data] naming the plugin.
  DatasetPlugin(const Job& job, const RankInfo& rank, const std::vector<int64_t>& wanted);
  ~DatasetPlugin();
  DatasetPlugin(const DatasetPlugin&) = delete;
  DatasetPlugin& operator=(const DatasetPlugin&) = delete;

  const std::string& name() const { return name_; }
  const dshost_dataset_info& info() const { return info_; }
  int64_t size(dshost_split split) const { return info_.samples[split]; }
  std::vector<int64_t> input_shape() const;
  std::vector<int64_t> target_shape() const;
  int64_t input_bytes() const { return input_bytes_; }
  int64_t target_count() const { return target_count_; }  // int64 values per sample
  bool is_images() const;                                 // uint8 [C, H, W]
  bool is_tokens() const;                                 // int64 [T]

  // Writes sample `index` of `split` into `input` and `target`, or where it is bad the next
  // that is not, and returns the sample written; training's augmentation drawn from
  // `augment_seed` and that sample's index (0: evaluation's transform). Where `encoded` is
  // given, the dataset may give an image as its JPEG file there instead of pixels. Thread-safe.
  // Throws UserError naming the plugin and sample.
  int64_t fill(dshost_split split, int64_t index, uint64_t augment_seed, void* input,
               int64_t* target, EncodedSample* encoded = nullptr) const;
  // Samples skipped so far.
  int64_t skipped() const;

 private:
  void check_info() const;
  void check_sample(const dshost_sample& sample) const;
  void keep_encoded(const dshost_sample& sample, EncodedSample& encoded) const;
  void skip(dshost_split split, int64_t index, const std::string& why) const;

  std::string name_, file_, origin_;
  std::shared_ptr<void> library_;      // keeps the plugin loaded
  std::shared_ptr<const void> table_;  // its api table as current (api_), owned here
  std::unique_ptr<PluginHost> host_;
  const dshost_dataset_api* api_ = nullptr;
  dshost_dataset* dataset_ = nullptr;
  dshost_dataset_info info_{};
  int64_t input_bytes_ = 0, target_count_ = 1;
  int64_t max_bad_samples_ = 0;
  mutable std::mutex mutex_;
  mutable std::set<std::pair<int, int64_t>> skipped_;
};

}  // namespace dshost
