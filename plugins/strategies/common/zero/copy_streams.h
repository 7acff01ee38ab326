// Copies between host and accelerator (stage 3 with anything offloaded, on CUDA) run on
// streams of their own, one each way, so they overlap the compute stream's kernels.
#pragma once

#include <c10/core/Device.h>
#include <c10/core/Event.h>
#include <c10/core/Stream.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <vector>

namespace dshost_zero {

struct CopyStreams {
  c10::Stream to_device, to_host;
  // Per reduction staging slot: the event after which its last copy to the host has read it.
  std::vector<c10::Event> drained;

  explicit CopyStreams(const c10::Device& device, int staging_slots)
      : to_device(c10::impl::getDeviceGuardImpl(device.type())->getStreamFromGlobalPool(device)),
        to_host(c10::impl::getDeviceGuardImpl(device.type())->getStreamFromGlobalPool(device)) {
    for (int slot = 0; slot < staging_slots; ++slot) drained.emplace_back(device.type());
  }
  void synchronize() const {
    to_host.synchronize();
    to_device.synchronize();
  }
};

inline c10::Stream compute_stream(const c10::Device& device) {
  return c10::impl::getDeviceGuardImpl(device.type())->getStream(device);
}

// Work enqueued on `waiter` from now on runs after everything enqueued on `signaller` so far.
inline void wait_for(const c10::Stream& waiter, const c10::Stream& signaller) {
  c10::Event enqueued(signaller.device_type());
  enqueued.record(signaller);
  enqueued.block(waiter);
}

}  // namespace dshost_zero
