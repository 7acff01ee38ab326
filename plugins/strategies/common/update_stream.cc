#include "update_stream.h"

#include <dshost/plugin.hpp>

#include <cuda_runtime.h>

#include <string>

namespace dshost_zero {
namespace {

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw dshost::Error(std::string("the optimizer's update stream: ") + what +
                            " failed: " + cudaGetErrorString(err),
                        DSHOST_INTERNAL);
}

cudaEvent_t make_event() {
  cudaEvent_t event = nullptr;
  check(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreateWithFlags");
  return event;
}

cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }
cudaEvent_t as_event(void* e) { return static_cast<cudaEvent_t>(e); }

// Makes `device` current for a scope.
class OnDevice {
 public:
  explicit OnDevice(int device) {
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~OnDevice() { cudaSetDevice(previous_); }

 private:
  int previous_ = 0;
};

}  // namespace

UpdateStream::UpdateStream(int device, int units) : device_(device), clear_(units) {
  const OnDevice on(device_);
  cudaStream_t stream = nullptr;
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  stream_ = stream;
  begun_ = make_event();
  for (int u = 0; u < units; ++u) updated_.push_back(make_event());
}

UpdateStream::~UpdateStream() {
  const OnDevice on(device_);
  cudaStreamSynchronize(as_stream(stream_));
  for (void* event : updated_) cudaEventDestroy(as_event(event));
  cudaEventDestroy(as_event(begun_));
  cudaStreamDestroy(as_stream(stream_));
}

void UpdateStream::clear_after_update(int u, void* data, size_t bytes) {
  clear_.at(u) = {data, bytes};
}

void* UpdateStream::begin(void* compute) {
  check(cudaEventRecord(as_event(begun_), as_stream(compute)), "cudaEventRecord");
  check(cudaStreamWaitEvent(as_stream(stream_), as_event(begun_), 0), "cudaStreamWaitEvent");
  return stream_;
}

void UpdateStream::unit_updated(int u) {
  const Clear& c = clear_.at(u);
  if (c.bytes > 0)
    check(cudaMemsetAsync(c.data, 0, c.bytes, as_stream(stream_)), "cudaMemsetAsync");
  check(cudaEventRecord(as_event(updated_.at(u)), as_stream(stream_)), "cudaEventRecord");
  last_ = u;
}

// A capture takes the wait as an event-wait node only when told the event is external (its
// record is not in the capture); outside one that flag is refused.
void UpdateStream::wait_for_unit(void* waiter, int u) const {
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  check(cudaStreamIsCapturing(as_stream(waiter), &capture), "cudaStreamIsCapturing");
  const unsigned flags =
      capture == cudaStreamCaptureStatusActive ? cudaEventWaitExternal : cudaEventWaitDefault;
  check(cudaStreamWaitEvent(as_stream(waiter), as_event(updated_.at(u)), flags),
        "cudaStreamWaitEvent");
}

void UpdateStream::wait_for_all(void* waiter) const {
  if (last_ >= 0) wait_for_unit(waiter, last_);
}

}  // namespace dshost_zero
