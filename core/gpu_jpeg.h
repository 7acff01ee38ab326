// JPEG files decoded on the GPU by nvJPEG (data.decode = "gpu"): baseline files a batch at a
// time on the GPU's hardware JPEG decoder where it has one (the A100's, H100's and H200's),
// the others one by one on its cores; each then resampled there as the dataset asked
// (resample_decoded). The work runs on a stream of its own, so that a batch is decoded while
// the step before it computes.
#pragma once

#include "core/dataset.h"

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <memory>
#include <vector>

namespace dshost {

class GpuJpegDecoder {
 public:
  // Whether this build has nvJPEG (a CUDA build whose toolkit has it).
  static bool built();
  // Starts nvJPEG on CUDA `device`; a UserError saying why where it cannot.
  explicit GpuJpegDecoder(at::Device device);
  ~GpuJpegDecoder();
  GpuJpegDecoder(const GpuJpegDecoder&) = delete;
  GpuJpegDecoder& operator=(const GpuJpegDecoder&) = delete;

  // A batch into `staged` (uint8 [n, C, H, W] on the device): `pixels` (the batch in pinned
  // host memory, n rows) copied, and over each row i whose files[i] holds a file, that file
  // decoded and resampled. It runs on the decoder's stream once the batch staged before has
  // been released, and what the current stream does next waits for it. Returns the rows whose
  // file nvJPEG cannot decode (their pixels are the host's copy).
  std::vector<int64_t> stage(const at::Tensor& pixels, const std::vector<EncodedSample>& files,
                             const at::Tensor& staged);
  // Marks, in the current stream's order, that what stage() wrote has been read.
  void release();
  // Whether baseline files go to the GPU's hardware JPEG decoder (else to its cores, with
  // their Huffman decoding on this thread).
  bool in_hardware() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace dshost
