// The host's LibTorch version differences, in one place (plugins have theirs in
// sdk/include/dshost/torch.hpp). LibTorch 1.13: process groups derive from
// c10d::ProcessGroup. 2.x: a backend (ProcessGroupGloo, ProcessGroupNCCL) is a c10d::Backend.
#pragma once

#include <torch/version.h>

#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1
#endif
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#if DSHOST_CUDA
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace dshost {
#if TORCH_VERSION_MAJOR >= 2
using CollectiveBackend = c10d::Backend;
#else
using CollectiveBackend = c10d::ProcessGroup;
#endif
}  // namespace dshost
