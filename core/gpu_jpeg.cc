#include "core/gpu_jpeg.h"

#include "core/error.h"

#if DSHOST_NVJPEG

#include "core/resample_decoded.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <nvjpeg.h>

namespace dshost {
namespace {

void check(nvjpegStatus_t status, const char* call) {
  if (status != NVJPEG_STATUS_SUCCESS)
    throw UserError(cat("nvJPEG's ", call, " failed (status ", static_cast<int>(status),
                        "); set data.decode = \"cpu\" to decode on the CPU"));
}

// One file's place in the batch and in the decoded pixels.
struct Decoding {
  int64_t row;
  const EncodedSample* file;
  int64_t height, width, offset;
  nvjpegImage_t out;
};

}  // namespace

struct GpuJpegDecoder::State {
  explicit State(at::Device device) : stream(c10::cuda::getStreamFromPool(false, device.index())) {
    hardware = nvjpegCreateEx(NVJPEG_BACKEND_HARDWARE, nullptr, nullptr, NVJPEG_FLAGS_DEFAULT,
                              &handle) == NVJPEG_STATUS_SUCCESS;
    if (!hardware)
      check(nvjpegCreateEx(NVJPEG_BACKEND_DEFAULT, nullptr, nullptr, NVJPEG_FLAGS_DEFAULT, &handle),
            "create");
    check(nvjpegJpegStateCreate(handle, &batched), "state create");
    check(nvjpegDecoderCreate(handle, NVJPEG_BACKEND_DEFAULT, &decoder), "decoder create");
    check(nvjpegDecoderStateCreate(handle, decoder, &single), "decoder state create");
    check(nvjpegBufferPinnedCreate(handle, nullptr, &pinned), "pinned buffer create");
    check(nvjpegBufferDeviceCreate(handle, nullptr, &device_buffer), "device buffer create");
    check(nvjpegStateAttachPinnedBuffer(single, pinned), "attach pinned buffer");
    check(nvjpegStateAttachDeviceBuffer(single, device_buffer), "attach device buffer");
    check(nvjpegJpegStreamCreate(handle, &parsed), "stream create");
    check(nvjpegDecodeParamsCreate(handle, &params), "params create");
    check(nvjpegDecodeParamsSetOutputFormat(params, NVJPEG_OUTPUT_RGBI), "set output format");
  }
  ~State() {
    cudaStreamSynchronize(stream);
    if (params) nvjpegDecodeParamsDestroy(params);
    if (parsed) nvjpegJpegStreamDestroy(parsed);
    if (single) nvjpegJpegStateDestroy(single);
    if (device_buffer) nvjpegBufferDeviceDestroy(device_buffer);
    if (pinned) nvjpegBufferPinnedDestroy(pinned);
    if (decoder) nvjpegDecoderDestroy(decoder);
    if (batched) nvjpegJpegStateDestroy(batched);
    if (handle) nvjpegDestroy(handle);
  }

  bool decodes_in_hardware(const EncodedSample& file) {
    int unsupported = 1;
    return hardware &&
           nvjpegJpegStreamParseHeader(handle, file.bytes.data(), file.bytes.size(), parsed) ==
               NVJPEG_STATUS_SUCCESS &&
           nvjpegDecodeBatchedSupported(handle, parsed, &unsupported) == NVJPEG_STATUS_SUCCESS &&
           unsupported == 0;
  }

  // The files through the hardware decoder as one batch; false where it refused them.
  bool decode_batch(std::vector<Decoding*>& files) {
    if (files.empty()) return true;
    std::vector<const unsigned char*> data;
    std::vector<size_t> sizes;
    std::vector<nvjpegImage_t> out;
    for (const Decoding* d : files) {
      data.push_back(d->file->bytes.data());
      sizes.push_back(d->file->bytes.size());
      out.push_back(d->out);
    }
    return nvjpegDecodeBatchedInitialize(handle, batched, static_cast<int>(files.size()), 1,
                                         NVJPEG_OUTPUT_RGBI) == NVJPEG_STATUS_SUCCESS &&
           nvjpegDecodeBatched(handle, batched, data.data(), sizes.data(), out.data(), stream) ==
               NVJPEG_STATUS_SUCCESS;
  }

  // One file on the GPU's cores (its Huffman decoding on this thread); false where it fails.
  bool decode_one(Decoding& d) {
    cudaStreamSynchronize(stream);  // the pinned buffer may still be feeding the last transfer
    const std::vector<uint8_t>& bytes = d.file->bytes;
    return nvjpegJpegStreamParse(handle, bytes.data(), bytes.size(), 0, 0, parsed) ==
               NVJPEG_STATUS_SUCCESS &&
           nvjpegDecodeJpegHost(handle, decoder, single, params, parsed) == NVJPEG_STATUS_SUCCESS &&
           nvjpegDecodeJpegTransferToDevice(handle, decoder, single, parsed, stream) ==
               NVJPEG_STATUS_SUCCESS &&
           nvjpegDecodeJpegDevice(handle, decoder, single, &d.out, stream) == NVJPEG_STATUS_SUCCESS;
  }

  c10::cuda::CUDAStream stream;
  at::cuda::CUDAEvent released, staged;
  bool hardware = false;
  nvjpegHandle_t handle = nullptr;
  nvjpegJpegState_t batched = nullptr, single = nullptr;
  nvjpegJpegDecoder_t decoder = nullptr;
  nvjpegBufferPinned_t pinned = nullptr;
  nvjpegBufferDevice_t device_buffer = nullptr;
  nvjpegJpegStream_t parsed = nullptr;
  nvjpegDecodeParams_t params = nullptr;
};

bool GpuJpegDecoder::built() { return true; }

GpuJpegDecoder::GpuJpegDecoder(at::Device device) {
  const c10::cuda::CUDAGuard guard(device);
  state_ = std::make_unique<State>(device);
}

GpuJpegDecoder::~GpuJpegDecoder() = default;

bool GpuJpegDecoder::in_hardware() const { return state_->hardware; }

std::vector<int64_t> GpuJpegDecoder::stage(const at::Tensor& pixels,
                                           const std::vector<EncodedSample>& files,
                                           const at::Tensor& staged) {
  State& s = *state_;
  const c10::cuda::CUDAStream compute = c10::cuda::getCurrentCUDAStream(staged.device().index());
  std::vector<int64_t> failed;
  {
    const c10::cuda::CUDAStreamGuard on_own_stream(s.stream);
    s.released.block(s.stream);
    staged.narrow(0, 0, pixels.size(0)).copy_(pixels, /*non_blocking=*/true);
    // Each file's size, and its place in one buffer of decoded RGB pixels.
    std::vector<Decoding> decodings;
    int64_t bytes = 0;
    for (int64_t row = 0; row < pixels.size(0); ++row) {
      const EncodedSample& file = files[static_cast<size_t>(row)];
      if (file.bytes.empty()) continue;
      int components = 0;
      nvjpegChromaSubsampling_t subsampling{};
      int widths[NVJPEG_MAX_COMPONENT] = {}, heights[NVJPEG_MAX_COMPONENT] = {};
      if (nvjpegGetImageInfo(s.handle, file.bytes.data(), file.bytes.size(), &components,
                             &subsampling, widths, heights) != NVJPEG_STATUS_SUCCESS ||
          widths[0] < 1 || heights[0] < 1) {
        failed.push_back(row);
        continue;
      }
      decodings.push_back({row, &file, heights[0], widths[0], bytes, {}});
      bytes += int64_t{heights[0]} * widths[0] * 3;
    }
    const at::Tensor decoded = at::empty({bytes}, staged.options());
    std::vector<Decoding*> in_hardware, on_cores;
    for (Decoding& d : decodings) {
      d.out.channel[0] = decoded.data_ptr<uint8_t>() + d.offset;
      d.out.pitch[0] = static_cast<size_t>(d.width) * 3;
      (s.decodes_in_hardware(*d.file) ? in_hardware : on_cores).push_back(&d);
    }
    if (!s.decode_batch(in_hardware))
      on_cores.insert(on_cores.end(), in_hardware.begin(), in_hardware.end());
    std::vector<bool> decoded_ok(decodings.size(), true);
    for (Decoding* d : on_cores)
      if (!s.decode_one(*d)) decoded_ok[static_cast<size_t>(d - decodings.data())] = false;
    for (size_t i = 0; i < decodings.size(); ++i) {
      const Decoding& d = decodings[i];
      if (!decoded_ok[i]) {
        failed.push_back(d.row);
        continue;
      }
      const at::Tensor rgb =
          decoded.narrow(0, d.offset, d.height * d.width * 3).view({d.height, d.width, 3});
      resample_decoded(rgb, d.file->box, staged[d.row]);
    }
    s.staged.record(s.stream);
  }
  s.staged.block(compute);
  return failed;
}

void GpuJpegDecoder::release() {
  state_->released.record(c10::cuda::getCurrentCUDAStream(state_->stream.device_index()));
}

}  // namespace dshost

#else  // a build without nvJPEG

namespace dshost {

struct GpuJpegDecoder::State {};

bool GpuJpegDecoder::built() { return false; }

GpuJpegDecoder::GpuJpegDecoder(at::Device) {
  throw UserError(
      "data.decode = \"gpu\": this dshost was built without nvJPEG (it needs a CUDA build whose "
      "toolkit has nvJPEG); set data.decode = \"cpu\"");
}

GpuJpegDecoder::~GpuJpegDecoder() = default;

std::vector<int64_t> GpuJpegDecoder::stage(const at::Tensor&, const std::vector<EncodedSample>&,
                                           const at::Tensor&) {
  return {};
}

void GpuJpegDecoder::release() {}

bool GpuJpegDecoder::in_hardware() const { return false; }

}  // namespace dshost

#endif
