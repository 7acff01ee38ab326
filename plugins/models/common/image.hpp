// What the image model plugins share: their common options, and Stack, which builds layers
// while it follows the feature map through the network ([channels, size, size] of one
// sample), so each model knows its forward FLOPs per sample (a multiply-add counts 2)
// without running anything.
#pragma once

#include "batch_norm_act.hpp"

#include <dshost/model.hpp>
#include <dshost/ops/conv_relu.hpp>

#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>

#if DSHOST_CUDA_MAX_POOL
#include "cuda_max_pool.h"
#include "cuda_tensors.hpp"
#endif

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

namespace dshost_models {

namespace nn = torch::nn;

// The keys every image model takes (torchvision's defaults: 3 x 224 x 224, 1000 classes).
#define DSHOST_IMAGE_MODEL_OPTIONS                                                                 \
  DSHOST_OPTION_RANGE("in_channels", DSHOST_OPTION_INT, "3", 1, 64, "input image channels"),       \
      DSHOST_OPTION_RANGE("image_size", DSHOST_OPTION_INT, "224", 8, 4096,                         \
                          "input height = width"),                                                 \
      DSHOST_OPTION_RANGE("num_classes", DSHOST_OPTION_INT, "1000", 2, 1000000, "output classes"), \
      DSHOST_OPTION("channels_last", DSHOST_OPTION_BOOL, "true", nullptr,                          \
                    "keep convolutions channels-last (NHWC): faster with oneDNN and cuDNN")

struct ImageSpec {
  int64_t channels, size, classes;
  bool channels_last;
  explicit ImageSpec(const dshost::Services& s)
      : channels(s.get_int("in_channels")),
        size(s.get_int("image_size")),
        classes(s.get_int("num_classes")),
        channels_last(s.get_bool("channels_last")) {}
};

// nn::Sequential with a plain forward, so that chains nest (LibTorch cannot put a
// Sequential, whose forward is a template, inside another).
struct ChainImpl : nn::SequentialImpl {
  using SequentialImpl::SequentialImpl;
  at::Tensor forward(const at::Tensor& x) { return SequentialImpl::forward(x); }
};
TORCH_MODULE(Chain);

// An nn::Conv2d (the same parameters, names and layout) whose forward is
// dshost::conv_relu: the ReLU after it comes with it.
struct ConvReluImpl : nn::Conv2dImpl {
  explicit ConvReluImpl(const nn::Conv2dOptions& o)
      : Conv2dImpl(o), padding((o.kernel_size()->at(0) - 1) / 2) {}
  at::Tensor forward(const at::Tensor& x) { return dshost::conv_relu(x, weight, bias, 1, padding); }
  int64_t padding;
};
TORCH_MODULE(ConvRelu);

#if DSHOST_CUDA_MAX_POOL
// cuda_max_pool.h's kernels as an autograd function: x [N, C, H, W] channels-last bf16 on a
// GPU, C a multiple of 8, H and W even.
struct CudaMaxPool2x2 : torch::autograd::Function<CudaMaxPool2x2> {
  static bool takes(const at::Tensor& x) {
    return bf16_on_gpu(x) && x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast) &&
           x.size(1) % 8 == 0 && x.size(2) % 2 == 0 && x.size(3) % 2 == 0 &&
           reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0;
  }
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x) {
    const at::Tensor y = pooled(x, x.scalar_type()), which = pooled(x, at::kByte);
    check_launch(cuda_max_pool2x2(bf16_bits(x), bf16_bits(y), which.data_ptr<uint8_t>(),
                                  shape_of(x), stream_of(x)),
                 "max pooling");
    ctx->save_for_backward({which});
    ctx->saved_data["input"] = x.sizes();
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const at::Tensor which = ctx->get_saved_variables()[0];
    const at::Tensor dy = channels_last_aligned16(grads[0]);
    const at::Tensor dx = at::empty(ctx->saved_data["input"].toIntVector(),
                                    dy.options().memory_format(at::MemoryFormat::ChannelsLast));
    check_launch(cuda_max_pool2x2_backward(bf16_bits(dy), which.data_ptr<uint8_t>(), bf16_bits(dx),
                                           shape_of(dx), stream_of(dx)),
                 "max pooling backward");
    return {dx};
  }

 private:
  static at::Tensor pooled(const at::Tensor& x, at::ScalarType dtype) {
    return at::empty({x.size(0), x.size(1), x.size(2) / 2, x.size(3) / 2},
                     x.options().dtype(dtype).memory_format(at::MemoryFormat::ChannelsLast));
  }
  static MaxPoolShape shape_of(const at::Tensor& x) {
    return {x.size(0), x.size(2), x.size(3), x.size(1)};
  }
};
#endif

// 2 x 2 max pooling with stride 2: CudaMaxPool2x2 where it takes the input, else ATen's.
struct MaxPool2x2Impl : nn::Module {
  at::Tensor forward(const at::Tensor& x) {
#if DSHOST_CUDA_MAX_POOL
    if (CudaMaxPool2x2::takes(x)) return CudaMaxPool2x2::apply(x);
#endif
    return at::max_pool2d(x, {2, 2}, {2, 2});
  }
};
TORCH_MODULE(MaxPool2x2);

// torchvision's _make_divisible: v rounded to a multiple of 8, never below 90% of v.
inline int64_t round_channels(double v, int64_t divisor = 8) {
  int64_t rounded =
      std::max<int64_t>(divisor, static_cast<int64_t>(v + divisor / 2.0) / divisor * divisor);
  if (rounded < 0.9 * v) rounded += divisor;
  return rounded;
}

class Stack {
 public:
  Stack(int64_t channels, int64_t size) : channels_(channels), size_(size) {}

  int64_t channels() const { return channels_; }
  int64_t size() const { return size_; }
  int64_t flops() const { return flops_; }

  // k x k convolution, padding (k - 1) / 2, to `out` channels.
  nn::Conv2d conv(int64_t out, int64_t k, int64_t stride = 1, int64_t groups = 1,
                  bool bias = false) {
    return nn::Conv2d(conv_options(out, k, stride, groups, bias));
  }

  // A biased k x k convolution (stride 1) and the ReLU after it, in one (dshost::conv_relu).
  ConvRelu conv_relu(int64_t out, int64_t k) { return ConvRelu(conv_options(out, k, 1, 1, true)); }

  // Convolution (no bias), batch norm and activation: torchvision's Conv2dNormActivation,
  // the activation applied by the batch norm (BatchNormAct).
  Chain conv_bn(int64_t out, int64_t k, int64_t stride, Act act, int64_t groups = 1) {
    return Chain(conv(out, k, stride, groups), BatchNormAct(out, act));
  }

  nn::MaxPool2d max_pool(int64_t k, int64_t stride, int64_t pad = 0) {
    size_ = (size_ + 2 * pad - k) / stride + 1;
    return nn::MaxPool2d(nn::MaxPool2dOptions(k).stride(stride).padding(pad));
  }
  // 2 x 2 max pooling, stride 2 (MaxPool2x2).
  MaxPool2x2 max_pool2x2() {
    size_ /= 2;
    return MaxPool2x2();
  }

  // Global average pooling and flatten: [channels, size, size] -> [channels].
  Chain pool_flatten() {
    size_ = 1;
    return Chain(nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions(1)), nn::Flatten());
  }

  nn::Linear linear(int64_t in, int64_t out) {
    flops_ += 2 * in * out;
    return nn::Linear(in, out);
  }

  // Work of layers that are not built here (a squeeze-excitation's pooling and scaling, say).
  void add_flops(int64_t f) { flops_ += f; }
  void set_channels(int64_t c) { channels_ = c; }

 private:
  // The options of the next convolution, following the feature map through it.
  nn::Conv2dOptions conv_options(int64_t out, int64_t k, int64_t stride, int64_t groups,
                                 bool bias) {
    const int64_t pad = (k - 1) / 2;
    size_ = (size_ + 2 * pad - k) / stride + 1;
    flops_ += 2 * out * (channels_ / groups) * k * k * size_ * size_;
    const auto options =
        nn::Conv2dOptions(channels_, out, k).stride(stride).padding(pad).groups(groups).bias(bias);
    channels_ = out;
    return options;
  }

  int64_t channels_, size_, flops_ = 0;
};

// What every image model shares: its spec, the Stack that builds it (and so has counted its
// FLOPs), and the Model overrides they answer.
class ImageModel : public dshost::Model {
 public:
  explicit ImageModel(const dshost::Services& s)
      : Model(s), spec_(s), stack_(spec_.channels, spec_.size) {}

  std::vector<int64_t> input_shape() const override {
    return {spec_.channels, spec_.size, spec_.size};
  }
  bool channels_last() const override { return spec_.channels_last; }
  int64_t forward_flops_per_sample() const override { return stack_.flops(); }
  int64_t unit_forward_flops(int unit) const override { return unit_flops_.at(unit); }

 protected:
  // Model::add_unit, noting the FLOPs the stack counted since the previous unit: the
  // models build each unit through the stack just before adding it.
  template <class M>
  M add_unit(const std::string& name, M module) {
    const int64_t before = std::accumulate(unit_flops_.begin(), unit_flops_.end(), int64_t{0});
    unit_flops_.push_back(stack_.flops() - before);
    return Model::add_unit(name, module);
  }

  const ImageSpec spec_;
  Stack stack_;

 private:
  std::vector<int64_t> unit_flops_;
};

// y = act(main(x) + shortcut(x)): the residual blocks of ResNet, and of MobileNetV2 and
// EfficientNet without act and with an identity shortcut. drop_path > 0: stochastic depth
// in training (each sample's main branch dropped with that probability, as torchvision's
// StochasticDepth in "row" mode).
struct ResidualImpl : nn::Module {
  ResidualImpl(Chain main, Chain shortcut, bool relu_after, double drop_path = 0)
      : main(register_module("main", main)), relu_after(relu_after), drop_path(drop_path) {
    if (!shortcut->is_empty()) this->shortcut = register_module("shortcut", shortcut);
  }
  at::Tensor forward(const at::Tensor& x) {
    const at::Tensor y = main->forward(x), skip = shortcut ? shortcut->forward(x) : x;
    at::Tensor out;
    if (is_training() && drop_path > 0) {
      const at::Tensor keep =
          at::empty({y.size(0), 1, 1, 1}, y.options()).bernoulli_(1 - drop_path);
      out = at::addcmul(skip, y, keep.div_(1 - drop_path));
    } else {
      out = y + skip;
    }
    return relu_after ? out.relu_() : out;
  }
  Chain main, shortcut{nullptr};
  bool relu_after;
  double drop_path;
};
TORCH_MODULE(Residual);

}  // namespace dshost_models
