// Model plugins through the ABI, in-process, as the host creates them.
#include <dshost/model.hpp>
#include <dshost/ops/attention.hpp>
#include <dshost/ops/conv_relu.hpp>
#include <dshost/ops/layer_norm.hpp>
#include <dshost/ops/linear.hpp>

#include "plugins/models/common/bf16_linear.hpp"
#include "plugins/models/common/bias_gradient.hpp"
#include "plugins/models/common/cross_entropy.hpp"
#include "plugins/models/common/fp8_linear.hpp"
#include "plugins/models/common/fp8_mlp.hpp"
#include "plugins/models/common/fp8_qkv_linear.hpp"
#include "plugins/models/common/gelu_mlp.hpp"
#include "plugins/models/common/image.hpp"
#include "plugins/models/common/layer_norm.hpp"
#include "plugins/models/common/qkv_split.hpp"
#include "plugins/models/common/squeeze_excitation.hpp"

#include "core/checkpoint.h"
#include "core/init_from.h"
#include "core/manifest.h"
#include "core/plugin_loader.h"
#include "core/safetensors.h"
#include "core/services.h"
#include "core/torch_pickle.h"
#include "tests/test_labels.h"
#include "tests/test_util.h"

#include <torch/nn/modules/batchnorm.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <fstream>

namespace dshost {
namespace {

// ||got - reference|| / ||reference||, got taken to float64 (the reference's dtype).
double relative_error(const at::Tensor& got, const at::Tensor& reference) {
  return ((got.to(at::kDouble) - reference).norm() / reference.norm()).item<double>();
}

struct LiveModel {
  LoadedPlugin plugin;
  std::unique_ptr<PluginHost> host;
  const dshost_model_api* api = nullptr;
  dshost_model* model = nullptr;
  ~LiveModel() {
    if (model) api->destroy(model);
  }
};

// Model plugin `name` created with the [model] section `section`. Its manifest is the running
// test's own: ctest runs tests in parallel processes, and two creating the same model must
// not read each other's sections.
std::unique_ptr<LiveModel> create_model(const std::string& name, const std::string& section) {
  std::string test = testing::UnitTest::GetInstance()->current_test_info()->name();
  std::replace(test.begin(), test.end(), '/', '_');
  const std::string path =
      test::write_file(test::scratch_dir("model_" + name + "_" + test) + "/m.toml",
                       "[model]\nplugin = \"" + name + "\"\n" + section);
  auto live = std::make_unique<LiveModel>();
  live->plugin = PluginCatalog(DSHOST_BUILD_PLUGIN_DIR).load(DSHOST_KIND_MODEL, name, path);
  const std::vector<dshost_option>& options = live->plugin.options;
  live->host = std::make_unique<PluginHost>(
      name, Manifest::load(path, {}).resolve("model", {options.data(), options.size()}, true),
      RankInfo{}, nullptr);
  live->api = live->plugin.api<dshost_model_api>();
  dshost_error err{sizeof(dshost_error), {}};
  EXPECT_EQ(live->api->create(live->host->table(), &live->model, &err), DSHOST_OK) << err.message;
  return live;
}

std::unique_ptr<LiveModel> create_basic_cnn(const std::string& section) {
  return create_model("basic_cnn", section);
}

dshost_model_info describe(LiveModel& m) {
  dshost_model_info info{sizeof(dshost_model_info)};
  dshost_error err{sizeof(dshost_error), {}};
  EXPECT_EQ(m.api->describe(m.model, &info, &err), DSHOST_OK) << err.message;
  return info;
}

at::Tensor exported_param(LiveModel& m, int unit, int index) {
  dshost_param_desc desc{sizeof(dshost_param_desc)};
  dshost_error err{sizeof(dshost_error), {}};
  EXPECT_EQ(m.api->param(m.model, unit, index, &desc, &err), DSHOST_OK) << err.message;
  return from_dlpack(desc.value);
}

// Strategies copy the exported layout into their flat buffers, so it must say
// channels-last unambiguously: with one input channel, NCHW strides ([9, 9, 3, 1] for
// conv1's [32, 1, 3, 3]) also pass as channels-last and sent oneDNN down a slow path.
TEST(BasicCnn, ExportsCanonicalChannelsLastWeights) {
  auto m = create_basic_cnn("");
  for (int unit : {0, 1}) {
    const at::Tensor w = exported_param(*m, unit, 0);
    ASSERT_EQ(w.dim(), 4);
    EXPECT_EQ(w.stride(1), 1) << "unit " << unit << " strides " << w.strides();
    EXPECT_EQ(
        w.strides(),
        at::empty(w.sizes(), w.options().memory_format(at::MemoryFormat::ChannelsLast)).strides());
  }
}

TEST(BasicCnn, NchwWhenChannelsLastIsOff) {
  auto m = create_basic_cnn("channels_last = false\n");
  const at::Tensor w = exported_param(*m, 1, 0);  // conv2: [64, 32, 3, 3]
  EXPECT_TRUE(w.is_contiguous());
  EXPECT_EQ(w.stride(1), 9);
}

TEST(BasicCnn, DescribesItsUnitsAndSize) {
  auto m = create_basic_cnn("");
  const dshost_model_info info = describe(*m);
  EXPECT_EQ(info.unit_count, 4);
  // conv1 1*32*9+32, conv2 32*64*9+64, fc1 3136*128+128, fc2 128*10+10
  EXPECT_EQ(info.parameter_count, 320 + 18496 + 401536 + 1290);
  EXPECT_EQ(std::vector<int64_t>(info.input_shape, info.input_shape + info.input_ndim),
            (std::vector<int64_t>{1, 28, 28}));
}

struct Torchvision {
  const char* plugin;
  const char* section;
  int64_t parameters;  // torchvision's, 1000 classes
  double gmacs;        // torchvision's documented "GFLOPS" (multiply-adds) at 224 x 224
  int units;
};

class TorchvisionModel : public testing::TestWithParam<Torchvision> {};

// The same architecture as torchvision's: the parameter count to the unit, and the forward
// cost counted from the layers as built within 2% of what torchvision documents (which
// counts convolutions and linear layers, as here, to two decimals).
TEST_P(TorchvisionModel, MatchesTorchvisionsSizeAndCost) {
  const Torchvision& t = GetParam();
  auto m = create_model(t.plugin, t.section);
  const dshost_model_info info = describe(*m);
  EXPECT_EQ(info.parameter_count, t.parameters);
  EXPECT_NEAR(info.forward_flops_per_sample / 2e9, t.gmacs, 0.02 * t.gmacs);
  EXPECT_EQ(info.unit_count, t.units);
  EXPECT_EQ(std::vector<int64_t>(info.input_shape, info.input_shape + info.input_ndim),
            (std::vector<int64_t>{3, 224, 224}));
  // The FLOPs profile's units add up to the whole, and each unit does work.
  int64_t sum = 0;
  for (int u = 0; u < info.unit_count; ++u) {
    int64_t flops = 0;
    dshost_error err{sizeof(dshost_error), {}};
    ASSERT_EQ(m->api->unit_flops(m->model, u, &flops, &err), DSHOST_OK) << err.message;
    EXPECT_GT(flops, 0) << "unit " << u;
    sum += flops;
  }
  EXPECT_EQ(sum, info.forward_flops_per_sample);
}

INSTANTIATE_TEST_SUITE_P(
    Zoo, TorchvisionModel,
    testing::Values(Torchvision{"mobilenet_v2", "", 3504872, 0.30, 20},
                    Torchvision{"efficientnet_b0", "", 5288548, 0.39, 19},
                    Torchvision{"vgg11", "", 132863336, 7.61, 8},
                    Torchvision{"vgg11", "batch_norm = true\n", 132868840, 7.61, 8},
                    Torchvision{"vgg16", "", 138357544, 15.47, 8},
                    Torchvision{"vgg16", "batch_norm = true\n", 138365992, 15.47, 8},
                    Torchvision{"resnet18", "", 11689512, 1.81, 10},
                    Torchvision{"resnet50", "", 25557032, 4.09, 18}),
    [](const auto& info) {
      return std::string(info.param.plugin) + (info.param.section[0] ? "_bn" : "");
    });

// The model's eval-mode logits for `input`, through bind_batch and predict as the host calls
// them (call under ASSERT_NO_FATAL_FAILURE).
void predict_logits(LiveModel& m, const at::Tensor& input, at::Tensor* logits) {
  dshost_error err{sizeof(dshost_error), {}};
  ASSERT_EQ(m.api->bind_batch(m.model, to_dlpack(input),
                              to_dlpack(at::zeros({input.size(0)}, at::kLong)), &err),
            DSHOST_OK)
      << err.message;
  DLManagedTensor* out = nullptr;
  ASSERT_EQ(m.api->predict(m.model, input.size(0), &out, &err), DSHOST_OK) << err.message;
  *logits = from_dlpack(out);
}

// `t`'s values as raw little-endian float32 in `file`, for the Python side of a test.
void write_f32(const std::string& file, const at::Tensor& t) {
  const at::Tensor values = t.to(at::kFloat).contiguous();
  std::ofstream(file, std::ios::binary)
      .write(static_cast<const char*>(values.data_ptr()),
             static_cast<std::streamsize>(values.nbytes()));
}

// Raw little-endian float32 values of `file`, shaped.
at::Tensor read_f32(const std::string& file, std::vector<int64_t> shape) {
  const std::string bytes = test::read_file(file);
  at::Tensor t = at::empty(shape, at::kFloat);
  EXPECT_EQ(bytes.size(), static_cast<size_t>(t.numel()) * 4) << file;
  std::memcpy(t.data_ptr<float>(), bytes.data(), std::min<size_t>(bytes.size(), t.numel() * 4));
  return t;
}

class TorchvisionLogits : public testing::TestWithParam<std::string> {};

DSHOST_SUITE_LABEL(TorchvisionLogits, slow);
// torchvision's parameters, copied in order into dshost's model (the same architecture
// registers them in the same order and shapes), give torchvision's logits: fp32, eval mode,
// relative error below 1e-4 of the largest logit. The fixtures come from
// tests/torchvision_fixtures.py with Debian's python3-torchvision.
TEST_P(TorchvisionLogits, SameWeightsGiveTorchvisionsLogits) {
  const std::string name = GetParam();
  const std::string dir = test::scratch_dir("torchvision_" + name);
  const test::Ran made = test::run(
      {"/usr/bin/python3", DSHOST_SOURCE_DIR "/tests/torchvision_fixtures.py", dir, name});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  const auto fixture = nlohmann::json::parse(test::read_file(dir + "/" + name + ".json"));
  const bool bn = name == "vgg11_bn";
  auto m = create_model(bn ? "vgg11" : name, bn ? "batch_norm = true\n" : "");
  int64_t total = 0;
  for (const auto& shape : fixture.at("shapes")) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    total += n;
  }
  const at::Tensor flat = read_f32(dir + "/" + name + ".weights.f32", {total});
  const dshost_model_info info = describe(*m);
  size_t k = 0;
  int64_t offset = 0;
  for (int u = 0; u < info.unit_count; ++u) {
    int32_t count = 0;
    dshost_error err{sizeof(dshost_error), {}};
    ASSERT_EQ(m->api->param_count(m->model, u, &count, &err), DSHOST_OK);
    for (int i = 0; i < count; ++i, ++k) {
      at::Tensor param = exported_param(*m, u, i);  // a view of the model's own memory
      const std::vector<int64_t> shape = fixture.at("shapes").at(k).get<std::vector<int64_t>>();
      ASSERT_EQ(param.sizes().vec(), shape) << name << " parameter " << k;
      param.copy_(flat.narrow(0, offset, param.numel()).view(shape));
      offset += param.numel();
    }
  }
  EXPECT_EQ(k, fixture.at("shapes").size());

  const at::Tensor input =
      read_f32(dir + "/input.f32", fixture.at("input").get<std::vector<int64_t>>());
  const at::Tensor expected =
      read_f32(dir + "/" + name + ".logits.f32", fixture.at("logits").get<std::vector<int64_t>>());
  at::Tensor logits;
  ASSERT_NO_FATAL_FAILURE(predict_logits(*m, input, &logits));
  ASSERT_EQ(logits.sizes(), expected.sizes());
  const double relative =
      (logits - expected).abs().max().item<double>() / expected.abs().max().item<double>();
  EXPECT_LT(relative, 1e-4) << name << " against torchvision " << fixture.at("torchvision");
}

INSTANTIATE_TEST_SUITE_P(Zoo, TorchvisionLogits,
                         testing::Values("mobilenet_v2", "efficientnet_b0", "resnet18", "resnet50",
                                         "vgg11", "vgg11_bn", "vgg16"));

// The model's parameters and buffers by the names it exports, as it exports them (views of its
// own memory), as core's named_tensors(ModelHandle) gives them.
std::map<std::string, at::Tensor> named_tensors(LiveModel& m) {
  std::map<std::string, at::Tensor> tensors;
  dshost_error err{sizeof(dshost_error), {}};
  for (int u = 0; u < describe(m).unit_count; ++u) {
    int32_t count = 0;
    EXPECT_EQ(m.api->param_count(m.model, u, &count, &err), DSHOST_OK);
    for (int i = 0; i < count; ++i) {
      dshost_param_desc desc{sizeof(dshost_param_desc)};
      EXPECT_EQ(m.api->param(m.model, u, i, &desc, &err), DSHOST_OK) << err.message;
      const at::Tensor value = from_dlpack(desc.value);
      tensors[desc.export_name ? desc.export_name : desc.name] =
          desc.export_transposed ? value.t() : value;
    }
  }
  int32_t buffers = 0;
  EXPECT_EQ(m.api->buffer_count(m.model, &buffers, &err), DSHOST_OK);
  for (int i = 0; i < buffers; ++i) {
    dshost_param_desc desc{sizeof(dshost_param_desc)};
    EXPECT_EQ(m.api->buffer(m.model, i, &desc, &err), DSHOST_OK) << err.message;
    tensors[desc.export_name ? desc.export_name : desc.name] = from_dlpack(desc.value);
  }
  return tensors;
}

// Parameter `name` (the model's own name) of unit `unit`, a view of its memory.
at::Tensor own_tensor(LiveModel& m, int32_t unit, const std::string& name) {
  dshost_error err{sizeof(dshost_error), {}};
  int32_t count = 0;
  EXPECT_EQ(m.api->param_count(m.model, unit, &count, &err), DSHOST_OK);
  for (int i = 0; i < count; ++i) {
    dshost_param_desc desc{sizeof(dshost_param_desc)};
    EXPECT_EQ(m.api->param(m.model, unit, i, &desc, &err), DSHOST_OK) << err.message;
    const at::Tensor value = from_dlpack(desc.value);
    if (desc.name == name) return value;
  }
  ADD_FAILURE() << "unit " << unit << " has no parameter " << name;
  return {};
}

class TorchvisionWeights : public testing::TestWithParam<std::string> {};

DSHOST_SUITE_LABEL(TorchvisionWeights, slow);
// torchvision's state_dict as torch.save writes it (.pth, by Debian's python3-torchvision)
// loads into the model by torchvision's names through model.init_from's loader, strictly,
// every tensor, and gives torchvision's eval-mode logits (relative error below 1e-4).
TEST_P(TorchvisionWeights, LoadStrictlyByNameAndGiveTorchvisionsLogits) {
  const std::string name = GetParam();
  const std::string dir = test::scratch_dir("torchvision_weights_" + name);
  const test::Ran made =
      test::run({test::python(), DSHOST_SOURCE_DIR "/tests/torchvision_weights.py", name, "1000",
                 dir + "/weights.pth", dir + "/io"});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  const bool bn = name == "vgg11_bn";
  auto m = create_model(bn ? "vgg11" : name, bn ? "batch_norm = true\n" : "");
  const std::map<std::string, at::Tensor> tensors = named_tensors(*m);
  const InitResult r = init_model_from(dir + "/weights.pth", "", "test", tensors);
  EXPECT_TRUE(r.kept.empty()) << join(r.kept);
  EXPECT_EQ(r.loaded, static_cast<int64_t>(tensors.size()));
  at::Tensor logits;
  ASSERT_NO_FATAL_FAILURE(
      predict_logits(*m, read_f32(dir + "/io.input.f32", {2, 3, 224, 224}), &logits));
  const at::Tensor expected = read_f32(dir + "/io.logits.f32", {2, 1000});
  const double relative =
      (logits - expected).abs().max().item<double>() / expected.abs().max().item<double>();
  EXPECT_LT(relative, 1e-4) << name;
}

INSTANTIATE_TEST_SUITE_P(Zoo, TorchvisionWeights,
                         testing::Values("mobilenet_v2", "efficientnet_b0", "resnet18", "resnet50",
                                         "vgg11", "vgg11_bn"),
                         [](const auto& info) { return info.param; });

DSHOST_SUITE_LABEL(Export, slow);
// `dshost export` of a trained mobilenet_v2 (batch-norm statistics moved by training, weights
// channels-last in the checkpoint) loads into torchvision's mobilenet_v2 with strict names
// and shapes, and gives the logits the dshost model computes with the checkpoint's state.
TEST(Export, MobilenetV2LoadsIntoTorchvisionAndGivesDshostsLogits) {
  const std::string dir = test::scratch_dir("export_mobilenet_v2");
  const test::Ran trained = test::dshost({"run",   test::quickstart_manifest(),
                                          "--set", "run.output_dir=\"" + dir + "\"",
                                          "--set", "model.plugin=\"mobilenet_v2\"",
                                          "--set", "model.num_classes=10",
                                          "--set", "model.image_size=32",
                                          "--set", "data.channels=3",
                                          "--set", "data.image_size=32",
                                          "--set", "train.max_steps=3",
                                          "--set", "train.eval=false",
                                          "--set", "launcher.nprocs=1",
                                          "--set", "checkpoint.every_steps=3"});
  ASSERT_EQ(trained.exit_code, 0) << trained.err;
  const std::string checkpoints = dir + "/quickstart/checkpoints", weights = dir + "/w.safetensors";
  const test::Ran exported = test::dshost({"export", checkpoints, weights});
  ASSERT_EQ(exported.exit_code, 0) << exported.err;

  // The dshost model with the checkpoint's parameters and buffers.
  auto m = create_model("mobilenet_v2", "num_classes = 10\nimage_size = 32\n");
  const std::vector<std::vector<TensorLayout>> no_params;
  const CheckpointReader reader(latest_checkpoint(checkpoints), no_params);
  dshost_error err{sizeof(dshost_error), {}};
  at::NoGradGuard no_grad;
  for (int u = 0; u < describe(*m).unit_count; ++u) {
    int32_t count = 0;
    ASSERT_EQ(m->api->param_count(m->model, u, &count, &err), DSHOST_OK);
    for (int i = 0; i < count; ++i) {
      dshost_param_desc desc{sizeof(dshost_param_desc)};
      ASSERT_EQ(m->api->param(m->model, u, i, &desc, &err), DSHOST_OK);
      from_dlpack(desc.value).copy_(reader.whole(desc.name));
    }
  }
  int32_t buffers = 0;
  ASSERT_EQ(m->api->buffer_count(m->model, &buffers, &err), DSHOST_OK);
  for (int i = 0; i < buffers; ++i) {
    dshost_param_desc desc{sizeof(dshost_param_desc)};
    ASSERT_EQ(m->api->buffer(m->model, i, &desc, &err), DSHOST_OK);
    from_dlpack(desc.value).copy_(reader.whole(desc.name));
  }
  at::manual_seed(3);
  const at::Tensor input = at::randn({2, 3, 32, 32});
  at::Tensor logits;
  ASSERT_NO_FATAL_FAILURE(predict_logits(*m, input, &logits));

  write_f32(dir + "/input.f32", input);
  const test::Ran torchvision =
      test::run({"/usr/bin/python3", DSHOST_SOURCE_DIR "/tests/export_logits.py", weights, "10",
                 dir + "/input.f32", "2,3,32,32", dir + "/logits.f32"});
  ASSERT_EQ(torchvision.exit_code, 0) << torchvision.err;
  const at::Tensor expected = read_f32(dir + "/logits.f32", {2, 10});
  EXPECT_GT(logits.abs().max().item<double>(), 0.01);
  EXPECT_LT((logits - expected).abs().max().item<double>() / expected.abs().max().item<double>(),
            1e-4);

  // bf16 export: the same names, half the bytes of each float tensor.
  const test::Ran half =
      test::dshost({"export", checkpoints, dir + "/w16.safetensors", "--dtype", "bf16"});
  ASSERT_EQ(half.exit_code, 0) << half.err;
  const SafetensorsFile f32(weights), bf16(dir + "/w16.safetensors");
  EXPECT_EQ(f32.names(), bf16.names());
  EXPECT_EQ(bf16.tensor("classifier.1.weight").scalar_type(), at::kBFloat16);
  EXPECT_EQ(bf16.tensor("features.0.1.num_batches_tracked").scalar_type(), at::kLong);
}

// cnn_lstm against the same network written in PyTorch (tests/cnn_lstm_reference.py), given
// dshost's initial parameters: the same parameter count and shapes, and the same logits.
TEST(CnnLstm, ComputesWhatThePyTorchNetworkComputes) {
  auto m = create_model("cnn_lstm",
                        "in_channels = 3\nimage_size = 16\nnum_classes = 5\n"
                        "width = 4\nhidden = 8\nlstm_layers = 2\ndropout = 0.0\n");
  const dshost_model_info info = describe(*m);
  // conv 3->4 and 4->8 with batch norm; LSTM over 4 rows of 8 x 4 values; head 8 -> 5.
  const int64_t lstm = 4 * 8 * (32 + 8) + 8 * 8 + 4 * 8 * (8 + 8) + 8 * 8;
  EXPECT_EQ(info.parameter_count, (9 * 3 * 4 + 8) + (9 * 4 * 8 + 16) + lstm + (8 * 5 + 5));
  EXPECT_EQ(info.unit_count, 3);
  dshost_error err{sizeof(dshost_error), {}};
  // FLOPs per unit: both convolutions (16 x 16, then 8 x 8), 4 LSTM steps of 2 layers, head.
  const int64_t want[] = {2 * 4 * 3 * 9 * 16 * 16 + 2 * 8 * 4 * 9 * 8 * 8,
                          4 * 2 * 4 * 8 * ((32 + 8) + (8 + 8)), 2 * 8 * 5};
  for (int u = 0; u < 3; ++u) {
    int64_t flops = 0;
    ASSERT_EQ(m->api->unit_flops(m->model, u, &flops, &err), DSHOST_OK);
    EXPECT_EQ(flops, want[u]) << "unit " << u;
  }
  EXPECT_EQ(info.forward_flops_per_sample, want[0] + want[1] + want[2]);
  std::vector<at::Tensor> params;
  for (int u = 0; u < info.unit_count; ++u) {
    int32_t count = 0;
    ASSERT_EQ(m->api->param_count(m->model, u, &count, &err), DSHOST_OK);
    for (int i = 0; i < count; ++i)
      params.push_back(exported_param(*m, u, i).contiguous().reshape({-1}));
  }
  const std::string dir = test::scratch_dir("cnn_lstm_reference");
  const at::Tensor flat = at::cat(params);
  at::manual_seed(5);
  const at::Tensor input = at::randn({2, 3, 16, 16});
  write_f32(dir + "/params.f32", flat);
  write_f32(dir + "/input.f32", input);
  const test::Ran reference = test::run(
      {"/usr/bin/python3", DSHOST_SOURCE_DIR "/tests/cnn_lstm_reference.py", dir + "/params.f32",
       dir + "/input.f32", "2,3,16,16", "4", "8", "2", "5", dir + "/logits.f32"});
  ASSERT_EQ(reference.exit_code, 0) << reference.err;
  at::Tensor logits;
  ASSERT_NO_FATAL_FAILURE(predict_logits(*m, input, &logits));
  const at::Tensor expected = read_f32(dir + "/logits.f32", {2, 5});
  EXPECT_GT(expected.abs().max().item<double>(), 1e-3);
  EXPECT_LT((logits - expected).abs().max().item<double>() / expected.abs().max().item<double>(),
            1e-4);
}

// Copies model `from`'s parameters, from its unit `first_unit` on, into `to` (same order).
void copy_parameters(LiveModel& from, int first_unit, LiveModel& to) {
  dshost_error err{sizeof(dshost_error), {}};
  at::NoGradGuard no_grad;
  for (int u = 0; u < describe(to).unit_count; ++u) {
    int32_t count = 0;
    ASSERT_EQ(to.api->param_count(to.model, u, &count, &err), DSHOST_OK);
    for (int i = 0; i < count; ++i)
      exported_param(to, u, i).copy_(exported_param(from, first_unit + u, i));
  }
}

// An ensemble is its members side by side: their parameters and units, named under each
// member, their FLOPs, and the mean of their logits.
TEST(Ensemble, IsItsMembersWithTheirLogitsAveraged) {
  const std::string section = "num_classes = 10\nimage_size = 32\n";
  auto ensemble = create_model("ensemble", section + "members = \"mobilenet_v2,resnet18\"\n");
  auto mobilenet = create_model("mobilenet_v2", section);
  auto resnet = create_model("resnet18", section);
  const dshost_model_info e = describe(*ensemble), m = describe(*mobilenet), r = describe(*resnet);
  EXPECT_EQ(e.parameter_count, m.parameter_count + r.parameter_count);
  EXPECT_EQ(e.unit_count, m.unit_count + r.unit_count);
  EXPECT_EQ(e.forward_flops_per_sample, m.forward_flops_per_sample + r.forward_flops_per_sample);
  dshost_param_desc desc{sizeof(dshost_param_desc)};
  dshost_error err{sizeof(dshost_error), {}};
  ASSERT_EQ(ensemble->api->param(ensemble->model, m.unit_count, 0, &desc, &err), DSHOST_OK);
  EXPECT_STREQ(desc.name, "resnet18.stem.0.weight");
  from_dlpack(desc.value);
  copy_parameters(*ensemble, 0, *mobilenet);
  copy_parameters(*ensemble, m.unit_count, *resnet);
  at::manual_seed(9);
  const at::Tensor input = at::randn({2, 3, 32, 32});
  at::Tensor of_mobilenet, of_resnet, got;
  ASSERT_NO_FATAL_FAILURE(predict_logits(*mobilenet, input, &of_mobilenet));
  ASSERT_NO_FATAL_FAILURE(predict_logits(*resnet, input, &of_resnet));
  ASSERT_NO_FATAL_FAILURE(predict_logits(*ensemble, input, &got));
  const at::Tensor mean = (of_mobilenet + of_resnet) / 2;
  EXPECT_LT((got - mean).abs().max().item<double>(), 1e-5 * mean.abs().max().item<double>());
}

TEST(Ensemble, UnknownOrTooFewMembersAreRefused) {
  for (const auto& [members, message] : std::vector<std::pair<std::string, std::string>>{
           {"mobilenet_v2,vgg99",
            "ensemble: unknown member 'vgg99'; members can be mobilenet_v2, "
            "efficientnet_b0, resnet18, resnet50"},
           {"resnet18",
            "ensemble: members = \"resnet18\" names 1 model(s); an ensemble needs two "
            "or more, e.g. \"mobilenet_v2,resnet18\""}}) {
    const std::string path =
        test::write_file(test::scratch_dir("ensemble_bad") + "/m.toml",
                         "[model]\nplugin = \"ensemble\"\nmembers = \"" + members + "\"\n");
    LiveModel live;
    live.plugin = PluginCatalog(DSHOST_BUILD_PLUGIN_DIR).load(DSHOST_KIND_MODEL, "ensemble", path);
    const std::vector<dshost_option>& options = live.plugin.options;
    live.host = std::make_unique<PluginHost>(
        "ensemble",
        Manifest::load(path, {}).resolve("model", {options.data(), options.size()}, true),
        RankInfo{}, nullptr);
    live.api = live.plugin.api<dshost_model_api>();
    dshost_error err{sizeof(dshost_error), {}};
    EXPECT_EQ(live.api->create(live.host->table(), &live.model, &err), DSHOST_INVALID_ARGUMENT);
    EXPECT_EQ(std::string(err.message), message);
  }
}

// GPT-2's sizes (tied embeddings, 1024 positions), and the forward cost against nanoGPT's
// estimate (2 x parameters without positions + 4 x layers x width x T per token).
TEST(Gpt, MatchesGpt2SizesAndCost) {
  auto small = create_model("gpt", "");
  const dshost_model_info info = describe(*small);
  EXPECT_EQ(info.parameter_count, 124439808);
  EXPECT_EQ(info.unit_count, 14);  // embed, h0..h11, head
  const double per_token = 2.0 * (124439808 - 1024 * 768) + 4.0 * 12 * 768 * 1024;
  EXPECT_NEAR(info.forward_flops_per_sample / (per_token * 1024), 1.0, 0.01);
  int64_t sum = 0, block = 0;
  dshost_error err{sizeof(dshost_error), {}};
  for (int u = 0; u < info.unit_count; ++u) {
    int64_t flops = 0;
    ASSERT_EQ(small->api->unit_flops(small->model, u, &flops, &err), DSHOST_OK);
    sum += flops;
    if (u == 1) block = flops;
  }
  EXPECT_EQ(sum, info.forward_flops_per_sample);
  EXPECT_EQ(block, int64_t{2} * 1024 * 12 * 768 * 768 +
                       int64_t{4} * 1024 * 1024 * 768);  // one transformer block
  EXPECT_EQ(info.input_dtype.code, kDLInt);
  EXPECT_EQ(std::vector<int64_t>(info.target_shape, info.target_shape + info.target_ndim),
            (std::vector<int64_t>{1024}));
  small.reset();
  EXPECT_EQ(describe(*create_model("gpt", "preset = \"gpt2-350m\"\n")).parameter_count, 354823168);
}

// A GPT-2 state_dict in Hugging Face's names and layout (GPT2Model's: Conv1D weights [in, out];
// made by the test with python3-torch) loads into gpt strictly, every tensor, and gives the
// logits Hugging Face's arithmetic gives with it; the blocks' projections land transposed under
// dshost's own names.
TEST(Gpt, LoadsHuggingFaceGpt2WeightsAndGivesTheirLogits) {
  const std::string dir = test::scratch_dir("gpt2_weights");
  const test::Ran made = test::run({test::python(), DSHOST_SOURCE_DIR "/tests/gpt2_weights.py", "2",
                                    "2", "16", "64", "8", dir + "/gpt2.pth", dir + "/io"});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  auto m = create_model("gpt",
                        "n_layer = 2\nn_head = 2\nn_embd = 16\nvocab_size = 64\nblock_size = 8\n");
  const std::map<std::string, at::Tensor> tensors = named_tensors(*m);
  const InitResult r = init_model_from(dir + "/gpt2.pth", "", "test", tensors);
  EXPECT_TRUE(r.kept.empty()) << join(r.kept);
  EXPECT_EQ(r.loaded, 2 + 2 * 12 + 2);
  const std::map<std::string, at::Tensor> file = read_torch_state_dict(dir + "/gpt2.pth");
  const at::Tensor c_attn = file.at("h.1.attn.c_attn.weight");
  ASSERT_EQ(c_attn.sizes(), at::IntArrayRef({16, 48}));
  EXPECT_TRUE(at::equal(own_tensor(*m, 2, "h1.c_attn.weight"), c_attn.t()));
  at::Tensor logits;
  ASSERT_NO_FATAL_FAILURE(
      predict_logits(*m, read_f32(dir + "/io.tokens.f32", {2, 8}).to(at::kLong), &logits));
  const at::Tensor expected = read_f32(dir + "/io.logits.f32", {2, 8, 64});
  EXPECT_GT(expected.abs().max().item<double>(), 1.0);
  EXPECT_LT((logits - expected).abs().max().item<double>(), 1e-4);
}

DSHOST_SUITE_LABEL(LayerNorm, gpu);
// dshost::layer_norm on CUDA: a bf16 input under autocast is normalised in fp32 inside the
// kernel and returned (and saved for backward) in bf16, where autocast alone returns fp32;
// its output and gradients are the fp32 computation's, rounded once. An fp32 input keeps
// autocast's path.
TEST(LayerNorm, CudaBf16InputStaysBf16UnderAutocastWithFp32Numerics) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const at::Device device(at::kCUDA);
  at::manual_seed(3);
  const auto f32 = at::TensorOptions(device);
  const at::Tensor x32 = at::randn({4, 16, 64}, f32) * 3 + 1, w32 = at::rand({64}, f32) + 0.5,
                   b32 = at::randn({64}, f32);
  auto leaf = [](const at::Tensor& t, at::ScalarType dtype) {
    return t.detach().to(dtype).set_requires_grad(true);
  };
  const at::Tensor x = leaf(x32, at::kBFloat16), w = leaf(w32, at::kBFloat16),
                   b = leaf(b32, at::kBFloat16);
  const at::Tensor upstream = at::randn({4, 16, 64}, f32).to(at::kBFloat16);

  at::Tensor y;
  {
    AutocastScope autocast(device, true);
    y = layer_norm(x, w, b, 1e-5);
    EXPECT_EQ(at::layer_norm(x, {64}, w, b, 1e-5).scalar_type(), at::kFloat);
    EXPECT_TRUE(layer_norm(x32, w32, b32, 1e-5).equal(at::layer_norm(x32, {64}, w32, b32, 1e-5)));
  }
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  y.backward(upstream);

  // The same values in fp32, without autocast.
  const at::Tensor rx = leaf(x, at::kFloat), rw = leaf(w, at::kFloat), rb = leaf(b, at::kFloat);
  const at::Tensor ry = at::layer_norm(rx, {64}, rw, rb, 1e-5);
  ry.backward(upstream.to(at::kFloat));
  auto expect_rounded = [](const at::Tensor& got, const at::Tensor& exact, double tol,
                           const char* what) {
    const double err = (got.to(at::kFloat) - exact).abs().max().item<double>();
    EXPECT_LE(err, tol * exact.abs().max().item<double>()) << what;
  };
  expect_rounded(y, ry, 1.0 / 128, "output");  // bf16 keeps 8 significant bits
  expect_rounded(x.grad(), rx.grad(), 1.0 / 64, "input gradient");
  expect_rounded(w.grad(), rw.grad(), 1.0 / 64, "weight gradient");
  expect_rounded(b.grad(), rb.grad(), 1.0 / 64, "bias gradient");
}

// Records, each time a parameter's accumulator runs, whether a gradient reached it.
struct GradientArrivals : torch::autograd::FunctionPostHook {
  explicit GradientArrivals(std::vector<bool>* arrived) : arrived(arrived) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& inputs) override {
    arrived->push_back(inputs.at(0).defined());
    return outputs;
  }
  std::vector<bool>* arrived;
};

// A buffer bound as p's gradient, as a strategy binds one: the random values it held, the
// buffer itself, and p's accumulator, kept alive with the post hook that records in
// `arrived` whether each of its calls brought a gradient.
struct BoundGradient {
  at::Tensor held, buffer;
  std::shared_ptr<torch::autograd::Node> accumulator;
};

BoundGradient bind_gradient(at::Tensor p, std::vector<bool>* arrived) {
  BoundGradient bound{at::randn(p.sizes(), p.options())};
  bound.buffer = bound.held.clone();
  p.mutable_grad() = bound.buffer;
  bound.accumulator = torch::autograd::impl::grad_accumulator(p);
  bound.accumulator->add_post_hook(std::make_unique<GradientArrivals>(arrived));
  return bound;
}

// dshost::linear with a bound gradient buffer (what a strategy binds): backward adds the
// weight's gradient into that buffer itself, on top of what it held (the accumulator gets
// none, and still runs its post hooks: the strategies' grads_ready), and gives the input
// and bias the gradients autograd gives. Against at::linear on copies, over two passes.
TEST(Linear, AddsTheWeightGradientIntoTheBoundBuffer) {
  at::manual_seed(5);
  auto leaf = [](const at::Tensor& t) { return t.detach().clone().set_requires_grad(true); };
  const at::Tensor x0 = at::randn({2, 4, 3}), w0 = at::randn({5, 3}), b0 = at::randn({5});
  const at::Tensor x = leaf(x0), w = leaf(w0), b = leaf(b0);
  std::vector<bool> arrived;
  const BoundGradient bound = bind_gradient(w, &arrived);  // held: an earlier micro-batch's
  const at::Tensor rx = leaf(x0), rw = leaf(w0), rb = leaf(b0);
  for (int pass = 0; pass < 2; ++pass) {
    const at::Tensor upstream = at::randn({2, 4, 5});
    dshost::linear(x, w, b).backward(upstream);
    at::linear(rx, rw, rb).backward(upstream);
  }
  EXPECT_EQ(w.grad().data_ptr(), bound.buffer.data_ptr());
  EXPECT_TRUE(at::allclose(bound.buffer, bound.held + rw.grad(), 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(x.grad(), rx.grad(), 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(b.grad(), rb.grad(), 1e-5, 1e-6));
  EXPECT_EQ(arrived, (std::vector<bool>{false, false}));
}

// A layer without a bias the same way (it once threw "tensor does not have a device": an
// undefined bias went into the custom function's inputs).
TEST(Linear, AddsTheWeightGradientIntoTheBoundBufferWithoutABias) {
  at::manual_seed(7);
  const at::Tensor x = at::randn({2, 4, 3}).set_requires_grad(true), w = at::randn({5, 3}),
                   upstream = at::randn({2, 4, 5});
  const at::Tensor buffer = at::randn({5, 3}), held = buffer.clone();
  w.set_requires_grad(true).mutable_grad() = buffer;
  dshost::linear(x, w).backward(upstream);
  const at::Tensor rx = x.detach().clone().set_requires_grad(true);
  const at::Tensor rw = w.detach().clone().set_requires_grad(true);
  at::linear(rx, rw).backward(upstream);
  EXPECT_TRUE(at::allclose(buffer, held + rw.grad(), 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(x.grad(), rx.grad(), 1e-5, 1e-6));
}

// With a bound buffer, the bias's gradient is the given function's of the output's gradient
// (a model's own column-sum kernel): here twice the sums, so the bias's gradient is doubled.
TEST(Linear, TakesTheBiasGradientFromTheGivenFunction) {
  at::manual_seed(12);
  const at::Tensor x = at::randn({2, 4, 3}), upstream = at::randn({2, 4, 5});
  const at::Tensor w = at::randn({5, 3}).set_requires_grad(true),
                   b = at::randn({5}).set_requires_grad(true);
  w.mutable_grad() = at::zeros({5, 3});
  dshost::linear(x, w, b, [](const at::Tensor& g) { return g.sum(0) * 2; }).backward(upstream);
  EXPECT_TRUE(at::allclose(b.grad(), upstream.reshape({-1, 5}).sum(0) * 2, 1e-5, 1e-6));
}

DSHOST_SUITE_LABEL(BiasGradient, gpu);
// gpt's bias gradient on the GPU (cuda_channel_scale.h's column sums) against float64 sums
// of the same bf16 values, within bf16's rounding of the result: 8,200 rows (no multiple of a
// block's rows) by 776 columns (97 vectors of 8, past a block's 32), the values' mean far
// from zero as a bias gradient's may be.
TEST(BiasGradient, SumsTheColumnsWithinBf16Rounding) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
#if !DSHOST_CUDA_CHANNEL_SCALE
  GTEST_SKIP() << "built without CUDA kernels";
#endif
  at::manual_seed(16);
  const at::Tensor g = (at::randn({8200, 776}, at::kCUDA) + 0.5).to(at::kBFloat16);
  const at::Tensor got = dshost_models::bias_gradient(g);
  ASSERT_EQ(got.scalar_type(), at::kBFloat16);
  const at::Tensor want = g.to(at::kDouble).sum(0);
  EXPECT_LT((got.to(at::kDouble) - want).abs().div(want.abs() + 1).max().item<double>(), 1.0 / 128);
  EXPECT_TRUE(at::equal(got, dshost_models::bias_gradient(g)));  // the same bits again
}

// Without a bound buffer, or where autocast casts an fp32 weight, dshost::linear is
// at::linear: autograd makes the weight's gradient (an addmm into an fp32 buffer from bf16
// operands would throw).
TEST(Linear, LeavesUnboundOrAutocastWeightsToAutograd) {
  at::manual_seed(6);
  const at::Tensor x = at::randn({4, 3}), w = at::randn({5, 3}).set_requires_grad(true);
  dshost::linear(x, w).sum().backward();
  EXPECT_TRUE(at::allclose(w.grad(), at::ones({4, 5}).t().mm(x)));

  w.mutable_grad() = at::zeros({5, 3});
  at::Tensor y;
  {
    AutocastScope autocast(at::Device(at::kCPU), true);
    y = dshost::linear(x, w);
  }
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  y.sum().backward();
  EXPECT_TRUE(at::allclose(w.grad(), at::ones({4, 5}).t().mm(x), 2e-2, 2e-2));
}

// A recomputed unit (activation checkpointing) keeps its input alone, runs once in forward
// and again in backward, and gives autograd's gradients exactly, dropout included: the
// second run replays the first's random numbers and leaves the generator where the first
// left it. Without the replay its masks are new and the gradients wrong.
TEST(Recomputed, GivesAutogradsGradientsWithTheSameRandomNumbers) {
  const at::Tensor x0 = at::randn({4, 8}), w = at::randn({8, 8}).set_requires_grad(true);
  int runs = 0;
  const auto unit = [&](const at::Tensor& x) {
    ++runs;
    return at::dropout(at::tanh(dshost::linear(x, w)), 0.5, /*train=*/true);
  };
  struct Result {
    at::Tensor y, dx, dw, next;  // next: the generator's draw after backward
  };
  const auto train = [&](bool recompute, bool replay) {
    at::manual_seed(11);
    const at::Tensor x = x0.clone().set_requires_grad(true);
    w.mutable_grad() = at::Tensor();
    const at::Tensor y = recompute ? dshost::detail::Recomputed::apply(
                                         x, dshost::detail::Recomputed::Unit::make(unit, replay))
                                   : unit(x);
    (y * at::arange(32, at::kFloat).view({4, 8})).sum().backward();
    return Result{y.detach(), x.grad(), w.grad().clone(), at::rand({4})};
  };
  const Result plain = train(false, false);
  runs = 0;
  const Result recomputed = train(true, true);
  EXPECT_EQ(runs, 2);
  EXPECT_TRUE(at::equal(recomputed.y, plain.y));
  EXPECT_TRUE(at::equal(recomputed.dx, plain.dx));
  EXPECT_TRUE(at::equal(recomputed.dw, plain.dw));
  EXPECT_TRUE(at::equal(recomputed.next, plain.next));
  const Result new_masks = train(true, false);
  EXPECT_FALSE(at::equal(new_masks.dw, plain.dw));
}

DSHOST_SUITE_LABEL(ConvRelu, gpu);
// dshost::conv_relu on CUDA in bf16 is cuDNN's fused convolution + bias + ReLU (its own
// autograd node), and gives conv2d then relu's output and gradients: against the fp32
// computation from the same bf16 values, within bf16's rounding.
TEST(ConvRelu, CudaBf16IsOneFusedKernelWithConv2dThenRelusGradients) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(3);
  const auto cuda = at::TensorOptions().device(at::kCUDA);
  const auto bf16 = [](const at::Tensor& t) {
    return t.to(at::kBFloat16)
        .contiguous(t.dim() == 4 ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  };
  const at::Tensor x = bf16(at::randn({4, 16, 12, 12}, cuda)),
                   w = bf16(at::randn({32, 16, 3, 3}, cuda) * 0.1),
                   b = bf16(at::randn({32}, cuda) * 0.1), g = at::randn({4, 32, 12, 12}, cuda);
  auto leaf = [](const at::Tensor& t) { return t.detach().clone().set_requires_grad(true); };
  const at::Tensor xs = leaf(x), ws = leaf(w), bs = leaf(b);
  const at::Tensor y = dshost::conv_relu(xs, ws, bs, 1, 1);
  y.backward(bf16(g));
  const at::Tensor xr = leaf(x.to(at::kFloat)), wr = leaf(w.to(at::kFloat)),
                   br = leaf(b.to(at::kFloat));
  const at::Tensor yr = at::conv2d(xr, wr, br, {1, 1}, {1, 1}).relu();
  yr.backward(g);
  EXPECT_NE(y.grad_fn()->name().find("ConvRelu"), std::string::npos) << y.grad_fn()->name();
  const auto close = [](const at::Tensor& got, const at::Tensor& want) {
    return (got.to(at::kFloat) - want).abs().max().item<double>() <=
           1e-2 * want.abs().max().item<double>();
  };
  EXPECT_TRUE(close(y, yr));
  EXPECT_TRUE(close(xs.grad(), xr.grad()));
  EXPECT_TRUE(close(ws.grad(), wr.grad()));
  EXPECT_TRUE(close(bs.grad(), br.grad()));
}

DSHOST_SUITE_LABEL(MaxPool2x2, gpu);
// vgg's 2 x 2 max pooling on CUDA (channels-last bf16): ATen's output and gradient exactly,
// ties included (after a ReLU many windows hold several zeros; the first in row-major order
// takes the gradient, as in ATen), from a byte per output where ATen keeps an int64 index.
TEST(MaxPool2x2, CudaBf16GivesAtensOutputAndGradientExactly) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(4);
  const auto channels_last_bf16 = [](const at::Tensor& t) {
    return t.to(at::kBFloat16).contiguous(at::MemoryFormat::ChannelsLast);
  };
  const at::Tensor x0 = channels_last_bf16(at::randn({3, 64, 12, 10}, at::kCUDA).relu());
  const at::Tensor upstream = channels_last_bf16(at::randn({3, 64, 6, 5}, at::kCUDA));
  const at::Tensor x = x0.detach().clone().set_requires_grad(true),
                   xr = x0.detach().clone().set_requires_grad(true);
  const at::Tensor y = dshost_models::MaxPool2x2()->forward(x),
                   yr = at::max_pool2d(xr, {2, 2}, {2, 2});
  y.backward(upstream);
  yr.backward(upstream);
  EXPECT_NE(y.grad_fn()->name().find("CudaMaxPool2x2"), std::string::npos) << y.grad_fn()->name();
  EXPECT_TRUE(at::equal(y, yr));
  EXPECT_TRUE(at::equal(x.grad(), xr.grad()));
  EXPECT_GT(at::eq(x0, 0).sum().item<int64_t>(), x0.numel() / 3) << "ties to break";
}

DSHOST_SUITE_LABEL(CrossEntropy, gpu);
// gpt's loss on CUDA over bf16 logits: ATen's cross entropy over the same logits in fp32,
// the loss to fp32 rounding and the gradient to bf16's, with rows that start off a 16-byte
// boundary (50257 classes), a small vocabulary and a tiny one, under an incoming gradient
// other than 1; a target outside the vocabulary gives a NaN loss.
TEST(CrossEntropy, CudaBf16GivesAtensLossAndGradientOverFp32Logits) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(5);
  const std::pair<int64_t, int64_t> shapes[] = {{37, 50257}, {300, 1000}, {5, 3}};
  for (const auto& [rows, classes] : shapes) {
    SCOPED_TRACE(std::to_string(rows) + " x " + std::to_string(classes));
    const at::Tensor start = (at::randn({rows, classes}, at::kCUDA) * 4).to(at::kBFloat16);
    const at::Tensor targets = at::randint(classes, {rows}, at::dtype(at::kLong).device(at::kCUDA));
    const at::Tensor logits = start.clone().set_requires_grad(true),
                     reference = start.to(at::kFloat).set_requires_grad(true);
    const at::Tensor loss = dshost_models::cross_entropy(logits, targets),
                     want = torch::nn::functional::cross_entropy(reference, targets);
    (loss * 0.37).backward();
    (want * 0.37).backward();
    EXPECT_NE(loss.grad_fn()->name().find("CudaCrossEntropy"), std::string::npos)
        << loss.grad_fn()->name();
    EXPECT_NEAR(loss.item<double>(), want.item<double>(), 1e-5 * want.item<double>());
    const at::Tensor got = logits.grad().to(at::kFloat), grad = reference.grad();
    const double largest = grad.abs().max().item<double>();
    EXPECT_GT(largest, 0.1 / rows);
    EXPECT_TRUE(at::allclose(got, grad, /*rtol=*/1.0 / 256, /*atol=*/1e-6 * largest))
        << "largest difference " << (got - grad).abs().max().item<double>() << " of " << largest;
  }
  const at::Tensor logits = at::randn({4, 10}, at::kCUDA).to(at::kBFloat16);
  const at::Tensor targets = at::tensor({1, 2, 10, 3}, at::dtype(at::kLong)).to(at::kCUDA);
  EXPECT_TRUE(std::isnan(dshost_models::cross_entropy(logits, targets).item<double>()));
}

// Masked classes (-inf logits, whole 16-byte words of them and a lone one) add nothing to a
// row's loss, as in ATen's; one NaN logit anywhere in a row, even among -infs, makes the loss NaN.
TEST(CrossEntropy, CudaBf16SkipsMaskedClassesAndPassesANanOn) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(6);
  const int64_t classes = 50304;
  at::Tensor masked = (at::randn({3, classes}, at::kCUDA) * 4).to(at::kBFloat16);
  masked.slice(1, 0, 4096).fill_(-INFINITY);
  masked.index_put_({0, 4099}, -INFINITY);
  const at::Tensor targets = at::tensor({5000, 4100, 9696}, at::kLong).to(at::kCUDA);
  const double want =
      torch::nn::functional::cross_entropy(masked.to(at::kFloat), targets).item<double>();
  EXPECT_TRUE(std::isfinite(want));
  EXPECT_NEAR(dshost_models::cross_entropy(masked, targets).item<double>(), want, 1e-5 * want);
  for (const int64_t at_class : {int64_t{7}, int64_t{4097}, classes - 1}) {
    SCOPED_TRACE("NaN at class " + std::to_string(at_class));
    at::Tensor with_nan = masked.clone();
    with_nan.index_put_({1, at_class}, NAN);
    EXPECT_TRUE(std::isnan(dshost_models::cross_entropy(with_nan, targets).item<double>()));
  }
}

DSHOST_SUITE_LABEL(FusedLayerNorm, gpu);
// gpt's layer norm kernels against the same ops in float64 over the same bf16 values: the
// sum bit for bit as ATen's bf16 add, the normalized rows and every gradient (the sum's,
// with the gradient the sum received directly added, the weight's, the bias's) within
// bf16's rounding (1/256 of the norm; a wrong term in any is off by far more), as ATen's
// own bf16 ops are; alone, after the residual add, and handing its input on (whose gradient
// from that use the backward kernel adds). Widths off the block's 32 threads of 8 and row
// counts off the backward's 8-row blocks; the mean of the rows away from zero; and the
// widest the kernels take (8192: blocks of 1024 threads, which launch only at 64 registers a
// thread or fewer).
TEST(FusedLayerNorm, FollowsTheUnfusedOpsInFloat64AloneAfterTheAddAndHandingItsInputOn) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
#if !DSHOST_CUDA_LAYER_NORM
  GTEST_SKIP() << "built without CUDA kernels";
#endif
  enum class Form { alone, add, with_input };
  at::manual_seed(11);
  const auto bf16 = at::dtype(at::kBFloat16).device(at::kCUDA);
  for (const int64_t width : {264, 2048, 8192}) {
    for (const Form form : {Form::add, Form::alone, Form::with_input}) {
      const bool add = form == Form::add;
      SCOPED_TRACE("width " + std::to_string(width) + ", form " +
                   std::to_string(static_cast<int>(form)));
      const at::Tensor x = at::randn({3, 37, width}, bf16) + 0.5,
                       r = at::randn({3, 37, width}, bf16) * 0.5,
                       w = 1 + at::randn({width}, bf16) * 0.1, b = at::randn({width}, bf16) * 0.1,
                       dy = at::randn({3, 37, width}, bf16), ds = at::randn({3, 37, width}, bf16);
      std::vector<at::Tensor> ours{x.clone(), r.clone(), w.clone(), b.clone()}, exact;
      for (const at::Tensor& t : ours) {
        t.set_requires_grad(true);
        exact.push_back(t.detach().to(at::kDouble).set_requires_grad(true));
      }
      const at::Tensor sum = add ? exact[0] + exact[1] : exact[0];
      const at::Tensor want = at::layer_norm(sum, {width}, exact[2], exact[3], 1e-5);
      at::Tensor got_sum, got;
      if (form == Form::alone) {
        got = dshost_models::layer_norm(ours[0], ours[2], ours[3], 1e-5);
        got.backward(dy);
        want.backward(dy.to(at::kDouble));
      } else {
        std::tie(got_sum, got) =
            add ? dshost_models::add_layer_norm(ours[0], ours[1], ours[2], ours[3], 1e-5)
                : dshost_models::layer_norm_with_input(ours[0], ours[2], ours[3], 1e-5);
        torch::autograd::backward({got_sum, got}, {ds, dy});
        torch::autograd::backward({sum, want}, {ds.to(at::kDouble), dy.to(at::kDouble)});
        EXPECT_TRUE(at::equal(got_sum, add ? x + r : x));
      }
      const std::string kernel = got.grad_fn()->name();
      const char* expected = form == Form::add     ? "CudaAddLayerNorm"
                             : form == Form::alone ? "CudaLayerNorm"
                                                   : "CudaLayerNormWithInput";
      ASSERT_NE(kernel.find(expected), std::string::npos) << kernel;
      EXPECT_LT(relative_error(got, want), 1.0 / 256);
      EXPECT_LT(relative_error(ours[0].grad(), exact[0].grad()), 1.0 / 256);
      if (add) {
        EXPECT_TRUE(at::equal(ours[0].grad(), ours[1].grad()));
      }
      EXPECT_LT(relative_error(ours[2].grad(), exact[2].grad()), 1.0 / 256);
      EXPECT_LT(relative_error(ours[3].grad(), exact[3].grad()), 1.0 / 256);
    }
  }
}

// With bf16 buffers bound as the weight's and bias's gradients (what a strategy binds), the
// kernels add those gradients into them, on top of what they held, over two passes, and
// the accumulators get none (their post hooks still run); against the same layer norm on
// copies with autograd's gradients, summed here, within bf16's rounding.
TEST(FusedLayerNorm, AddsTheParametersGradientsIntoBoundBuffers) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
#if !DSHOST_CUDA_LAYER_NORM
  GTEST_SKIP() << "built without CUDA kernels";
#endif
  at::manual_seed(18);
  const auto bf16 = at::dtype(at::kBFloat16).device(at::kCUDA);
  std::vector<at::Tensor> bound{1 + at::randn({264}, bf16) * 0.1, at::randn({264}, bf16) * 0.1},
      plain, want(2);
  std::vector<bool> arrived;
  std::vector<BoundGradient> buffers;
  for (at::Tensor& p : bound) {
    plain.push_back(p.clone().set_requires_grad(true));
    p.set_requires_grad(true);
    buffers.push_back(bind_gradient(p, &arrived));
  }
  for (int pass = 0; pass < 2; ++pass) {
    const at::Tensor x = at::randn({3, 37, 264}, bf16) + 0.5, dy = at::randn(x.sizes(), bf16);
    dshost_models::layer_norm(x, bound[0], bound[1], 1e-5).backward(dy);
    dshost_models::layer_norm(x, plain[0], plain[1], 1e-5).backward(dy);
    for (size_t i = 0; i < 2; ++i) {  // autograd's own gradients each pass, summed here
      at::Tensor& grad = plain[i].mutable_grad();
      want[i] = pass == 0 ? grad.to(at::kFloat) : want[i] + grad;
      grad.reset();
    }
  }
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(bound[i].grad().data_ptr(), buffers[i].buffer.data_ptr());
    EXPECT_LT(relative_error(buffers[i].buffer - buffers[i].held, want[i]), 1.0 / 128);
  }
  EXPECT_EQ(arrived, std::vector<bool>(4, false));
}

DSHOST_SUITE_LABEL(BatchNormAct, gpu);
#if DSHOST_CUDA_BATCH_NORM
bool device_has_clusters() {
  int clusters = 0;
  return cudaDeviceGetAttribute(&clusters, cudaDevAttrClusterLaunch, 0) == cudaSuccess &&
         clusters != 0;
}

// A random bf16 gradient for the activation's output, zero where the float64 input to the
// activation lies within 1e-4 of a kink (relu's 0, relu6's 0 and 6). bf16 inputs take a few
// thousand values, so at tens of thousands of rows a channel hundreds of rows share one; where
// that value sits on a kink, fp32 statistics and float64 ones may take opposite sides of it for
// all those rows at once, a difference of rounding that would otherwise count as percents of
// the weight's and bias's gradients.
at::Tensor gradient_away_from_kinks(const at::Tensor& normalized, dshost_models::Act act,
                                    const std::vector<int64_t>& shape) {
  at::Tensor dy = at::randn(shape, at::dtype(at::kBFloat16).device(at::kCUDA))
                      .contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor z = normalized.detach();
  if (act == dshost_models::Act::relu || act == dshost_models::Act::relu6)
    dy.masked_fill_(z.abs() < 1e-4, 0);
  if (act == dshost_models::Act::relu6) dy.masked_fill_((z - 6).abs() < 1e-4, 0);
  return dy;
}

// One layer of `shape` with activation `act`, parameters and running statistics of the given
// dtypes, on the kernels against BatchNorm2d and the activation in float64.
void expect_batch_norm_act_follows_float64(const std::vector<int64_t>& shape,
                                           dshost_models::Act act, at::ScalarType params,
                                           at::ScalarType stats) {
  SCOPED_TRACE(std::to_string(shape[1]) + " channels, activation " +
               std::to_string(static_cast<int>(act)) + ", parameters " + c10::toString(params) +
               ", statistics " + c10::toString(stats));
  const int64_t channels = shape[1];
  dshost_models::BatchNormAct ours(channels, act);
  torch::nn::BatchNorm2d exact(channels);
  if (stats == at::kBFloat16) {
    ours->to(at::kCUDA, at::kBFloat16);
  } else {
    ours->to(at::kCUDA);
    for (at::Tensor& p : ours->parameters()) p.set_data(p.to(params));
  }
  exact->to(at::kCUDA, at::kDouble);
  const auto cuda = at::dtype(at::kFloat).device(at::kCUDA);
  const std::vector<at::Tensor> values{
      1 + at::randn({channels}, cuda) * 0.2, at::randn({channels}, cuda) * 0.5,
      at::randn({channels}, cuda), 0.5 + at::rand({channels}, cuda)};
  const std::vector<at::Tensor> ours_tensors{ours->weight, ours->bias, ours->running_mean,
                                             ours->running_var},
      exact_tensors{exact->weight, exact->bias, exact->running_mean, exact->running_var};
  for (size_t i = 0; i < values.size(); ++i) {
    ours_tensors[i].detach().copy_(values[i]);
    exact_tensors[i].detach().copy_(ours_tensors[i]);
  }
  const auto bf16 = at::dtype(at::kBFloat16).device(at::kCUDA);
  const at::Tensor x = (at::randn(shape, bf16) * 2 + 3).contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor x_ours = x.clone().set_requires_grad(true),
                   x_exact = x.to(at::kDouble).set_requires_grad(true);
  const at::Tensor normalized = exact->forward(x_exact);
  const at::Tensor dy = gradient_away_from_kinks(normalized, act, shape);
  const at::Tensor got = ours->forward(x_ours);
  ASSERT_NE(got.grad_fn()->name().find("CudaBatchNormAct"), std::string::npos)
      << got.grad_fn()->name();
  got.backward(dy);
  const at::Tensor want = dshost_models::activate(normalized, act);
  want.backward(dy.to(at::kDouble));
  EXPECT_LT(relative_error(got, want), 1.0 / 128);
  EXPECT_LT(relative_error(x_ours.grad(), x_exact.grad()), 1.0 / 128);
  EXPECT_LT(relative_error(ours->weight.grad(), exact->weight.grad()), 1.0 / 128);
  EXPECT_LT(relative_error(ours->bias.grad(), exact->bias.grad()), 1.0 / 128);
  EXPECT_LT(relative_error(ours->running_mean, exact->running_mean), 1.0 / 128);
  EXPECT_LT(relative_error(ours->running_var, exact->running_var), 1.0 / 128);
  EXPECT_EQ(ours->num_batches_tracked.item<double>(), 1);
}
#endif

// The image models' batch norm and activation on the kernels against BatchNorm2d and the
// activation in float64 over the same bf16 values, for each activation, with parameters and
// running statistics in bf16 and fp32 (the strategies' bf16 parameters with the model's fp32
// statistics; all fp32; all bf16, as Module::to(bf16) leaves them, the counter included):
// the output, the gradients of input, weight and bias, and the running statistics within
// bf16's rounding (1/128 of the norm, which a wrong term exceeds by far).
// Every shape on the kernels its layout takes, asserted: one launch where the device has thread
// block clusters and the rows fit (24 channels, 3 vectors of 8; 264, past a block's 32; 70 and
// 2,664 rows, past a summing block's rows; 12,544 rows, 7 a thread; 1,032 channels at 1,568
// rows, several vectors a block and the last cluster's short), else the three passes (20,480,
// 50,176 and 133,120 rows, 10, 25 and 65 a thread). The inputs' mean far from zero, as the
// variance's precision needs.
TEST(BatchNormAct, FollowsTheUnfusedOpsInFloat64) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
#if !DSHOST_CUDA_BATCH_NORM
  GTEST_SKIP() << "built without CUDA kernels";
#else
  using dshost_models::Act;
  at::manual_seed(13);
  struct Case {
    std::vector<int64_t> shape;
    bool one_launch;  // where the device has clusters
  };
  const std::vector<Case> cases{{{2, 24, 7, 5}, true},     {{8, 264, 37, 9}, true},
                                {{16, 264, 28, 28}, true}, {{32, 1032, 7, 7}, true},
                                {{8, 16, 64, 40}, false},  {{16, 48, 56, 56}, false},
                                {{4, 16, 256, 130}, false}};
  for (const auto& [shape, one_launch] : cases) {
    const int64_t rows = shape[0] * shape[2] * shape[3];
    SCOPED_TRACE(std::to_string(rows) + " rows");
    EXPECT_EQ(dshost_models::cuda_batch_norm_plan({rows, shape[1]}).lanes > 0,
              one_launch && device_has_clusters());
    for (const Act act : {Act::none, Act::relu, Act::relu6, Act::silu})
      for (const auto& [params, stats] :
           std::vector<std::pair<at::ScalarType, at::ScalarType>>{{at::kBFloat16, at::kFloat},
                                                                  {at::kFloat, at::kFloat},
                                                                  {at::kBFloat16, at::kBFloat16}})
        expect_batch_norm_act_follows_float64(shape, act, params, stats);
  }
#endif
}

// With buffers bound as the parameters' gradients (what a strategy binds), the kernels add
// the weight's and bias's gradients into them, on top of what they held, over two passes,
// and the accumulators get none (their post hooks, the strategies' grads_ready, still run);
// against the same layer on copies with autograd's gradients, within bf16's rounding. fp32
// parameters (ddp's under autocast) and bf16 ones (zero2's), 264 channels, at 2,664 rows (one
// launch where the device has clusters) and 25,088 (the three passes).
TEST(BatchNormAct, AddsTheParametersGradientsIntoBoundBuffers) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
#if !DSHOST_CUDA_BATCH_NORM
  GTEST_SKIP() << "built without CUDA kernels";
#else
  at::manual_seed(15);
  const auto bf16 = at::dtype(at::kBFloat16).device(at::kCUDA);
  for (const auto& [shape, dtype] : std::vector<std::pair<std::vector<int64_t>, at::ScalarType>>{
           {{8, 264, 37, 9}, at::kFloat},
           {{8, 264, 37, 9}, at::kBFloat16},
           {{32, 264, 28, 28}, at::kFloat},
           {{32, 264, 28, 28}, at::kBFloat16}}) {
    const int64_t rows = shape[0] * shape[2] * shape[3];
    SCOPED_TRACE(std::string(c10::toString(dtype)) + ", " + std::to_string(rows) + " rows");
    EXPECT_EQ(dshost_models::cuda_batch_norm_plan({rows, shape[1]}).lanes > 0,
              rows < 16384 && device_has_clusters());
    dshost_models::BatchNormAct bound(264, dshost_models::Act::silu),
        plain(264, dshost_models::Act::silu);
    for (auto* layer : {&bound, &plain}) {
      (*layer)->to(at::kCUDA);
      for (at::Tensor& p : (*layer)->parameters()) p.set_data(p.to(dtype));
    }
    std::vector<at::Tensor> want(2);
    std::vector<bool> arrived;
    std::vector<BoundGradient> buffers;
    for (const at::Tensor& p : bound->parameters()) buffers.push_back(bind_gradient(p, &arrived));
    for (int pass = 0; pass < 2; ++pass) {
      const at::Tensor x = (at::randn(shape, bf16) * 2 + 3)
                               .contiguous(at::MemoryFormat::ChannelsLast),
                       dy = at::randn(x.sizes(), bf16).contiguous(at::MemoryFormat::ChannelsLast);
      bound->forward(x).backward(dy);
      plain->forward(x).backward(dy);
      for (size_t i = 0; i < 2; ++i) {  // autograd's own gradients each pass, summed here
        at::Tensor& grad = plain->parameters()[i].mutable_grad();
        want[i] = pass == 0 ? grad.to(at::kFloat) : want[i] + grad;
        grad.reset();
      }
    }
    const auto params = bound->parameters();
    for (size_t i = 0; i < params.size(); ++i) {
      EXPECT_EQ(params[i].grad().data_ptr(), buffers[i].buffer.data_ptr());
      EXPECT_LT(relative_error(buffers[i].buffer - buffers[i].held, want[i]), 1.0 / 128);
    }
    EXPECT_EQ(arrived, std::vector<bool>(4, false));
  }
#endif
}

// efficientnet_b0's squeeze-excitation, x * sigmoid(fc2(silu(fc1(mean(x))))), against the same
// ops under autograd on the same values: the output and the gradients of x and of both layers'
// weights and biases, in float64 on the CPU (the hand-written backward exact to rounding) and,
// on a GPU, in bf16 channels-last (the channel sums on dshost's kernel; within bf16's
// rounding, 1/128 of the norm). Channels 24 and 264 (past a block's 32 vectors of 8), 5 x 7
// and 37 x 9 pixels.
void expect_squeeze_excitation_follows_the_unfused_ops(at::TensorOptions options, double within) {
  at::manual_seed(14);
  const std::vector<std::vector<int64_t>> shapes{{3, 24, 5, 7}, {4, 264, 37, 9}};
  for (const auto& shape : shapes) {
    SCOPED_TRACE(std::to_string(shape[1]) + " channels");
    dshost_models::SqueezeExcitation ours(shape[1], shape[1] / 4);
    ours->to(options.device(), options.dtype().toScalarType());
    const at::Tensor x = at::randn(shape, options).contiguous(at::MemoryFormat::ChannelsLast),
                     dy = at::randn(shape, options).contiguous(at::MemoryFormat::ChannelsLast);
    std::vector<at::Tensor> mine{x.clone(), ours->fc1->weight, ours->fc1->bias, ours->fc2->weight,
                                 ours->fc2->bias},
        exact;
    mine[0].set_requires_grad(true);
    for (const at::Tensor& t : mine)
      exact.push_back(t.detach().to(at::kDouble).set_requires_grad(true));
    const at::Tensor got = ours->forward(mine[0]);
    ASSERT_NE(got.grad_fn()->name().find("SqueezeExcitationFunction"), std::string::npos)
        << got.grad_fn()->name();
    got.backward(dy);
    const at::Tensor pooled = exact[0].mean({2, 3}, true);
    const at::Tensor scale =
        at::conv2d(at::silu(at::conv2d(pooled, exact[1], exact[2])), exact[3], exact[4]).sigmoid();
    const at::Tensor want = exact[0] * scale;
    want.backward(dy.to(at::kDouble));
    EXPECT_LT(relative_error(got, want), within);
    for (size_t i = 0; i < mine.size(); ++i) {
      SCOPED_TRACE("input " + std::to_string(i));
      EXPECT_LT(relative_error(mine[i].grad(), exact[i].grad()), within);
    }
  }
}

// Stochastic depth in training, as torchvision's StochasticDepth in "row" mode: each sample's
// main branch is dropped with probability drop_path, or kept and scaled by 1 / (1 - drop_path),
// and the shortcut is added either way; in evaluation the branch always counts, unscaled.
TEST(Residual, DropsOrScalesEachSamplesMainBranch) {
  torch::manual_seed(3);
  dshost_models::Chain main(torch::nn::Conv2d(torch::nn::Conv2dOptions(4, 4, 1)));
  dshost_models::Residual block(main, dshost_models::Chain(), false, 0.25);
  const at::Tensor x = at::randn({64, 4, 3, 3});
  const at::Tensor y = main->forward(x).detach();
  const at::Tensor out = block->forward(x).detach();
  int kept = 0, dropped = 0;
  for (int64_t n = 0; n < x.size(0); ++n) {
    if (at::allclose(out[n], x[n] + y[n] / 0.75, 1e-5, 1e-6))
      ++kept;
    else if (at::allclose(out[n], x[n]))
      ++dropped;
    else
      ADD_FAILURE() << "sample " << n << " is neither kept and scaled nor dropped";
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(dropped, 0);
  block->eval();
  EXPECT_TRUE(at::allclose(block->forward(x), x + y, 1e-5, 1e-6));
}

TEST(SqueezeExcitation, FollowsTheUnfusedOpsInFloat64) {
  expect_squeeze_excitation_follows_the_unfused_ops(at::dtype(at::kDouble), 1e-12);
}

DSHOST_SUITE_LABEL(SqueezeExcitationOnGpu, gpu);
TEST(SqueezeExcitationOnGpu, FollowsTheUnfusedOpsInFloat64) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
#if !DSHOST_CUDA_CHANNEL_SCALE
  GTEST_SKIP() << "built without CUDA kernels";
#endif
  expect_squeeze_excitation_follows_the_unfused_ops(at::dtype(at::kBFloat16).device(at::kCUDA),
                                                    1.0 / 128);
}

DSHOST_SUITE_LABEL(Fp8Linear, gpu);
// gpt's fp8 linear layer against the same layer in float64 over the same bf16 values: the
// output and the three gradients within fp8's rounding (e4m3 keeps 3 bits of mantissa, an
// element off by up to 1/16; e5m2 2 bits, 1/8), the output further off than bf16's rounding
// alone would leave it (so the products did run in fp8), the bias's gradient a bf16 sum.
void expect_fp8_linear_follows_float64(const at::Tensor& x, const at::Tensor& w,
                                       const at::Tensor& b, const at::Tensor& g,
                                       dshost_models::Fp8Scaling* scaling) {
  std::vector<at::Tensor> ours{x.clone(), w.clone(), b.clone()}, exact;
  for (const at::Tensor& t : ours) {
    t.set_requires_grad(true);
    exact.push_back(t.detach().to(at::kDouble).set_requires_grad(true));
  }
  const at::Tensor y = dshost_models::fp8_linear(ours[0], ours[1], ours[2], {scaling});
  y.backward(g);
  const at::Tensor want = at::linear(exact[0], exact[1], exact[2]);
  want.backward(g.to(at::kDouble));
  ASSERT_NE(y.grad_fn()->name().find("Fp8Linear"), std::string::npos) << y.grad_fn()->name();
  const double output = relative_error(y, want);
  EXPECT_LT(output, 0.06);
  EXPECT_GT(output, 0.01) << "no further off than bf16: not run in fp8";
  EXPECT_LT(relative_error(ours[0].grad(), exact[0].grad()), 0.1);
  EXPECT_LT(relative_error(ours[1].grad(), exact[1].grad()), 0.1);
  EXPECT_LT(relative_error(ours[2].grad(), exact[2].grad()), 0.01);
}

// Neither side is a multiple of the cast's 64 x 64 tile.
TEST(Fp8Linear, FollowsAFloat64LinearWithinFp8Rounding) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  if (!dshost_models::kFp8Built) GTEST_SKIP() << "built without fp8";
  at::manual_seed(8);
  const auto bf16 = at::dtype(at::kBFloat16).device(at::kCUDA);
  expect_fp8_linear_follows_float64(
      at::randn({4, 40, 272}, bf16), at::randn({400, 272}, bf16) * 0.05,
      at::randn({400}, bf16) * 0.1, at::randn({4, 40, 400}, bf16), nullptr);
}

// With the layer's delayed scaling, over three passes whose inputs and output gradients
// shrink (so each later cast scales by an earlier, larger magnitude); each operand's
// history made.
TEST(Fp8Linear, WithDelayedScalingFollowsAFloat64Linear) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  if (!dshost_models::kFp8Built) GTEST_SKIP() << "built without fp8";
  at::manual_seed(11);
  const auto bf16 = at::dtype(at::kBFloat16).device(at::kCUDA);
  const at::Tensor w = at::randn({400, 272}, bf16) * 0.05, b = at::randn({400}, bf16) * 0.1;
  dshost_models::Fp8Scaling scaling;
  for (int pass = 0; pass < 3; ++pass) {
    SCOPED_TRACE("pass " + std::to_string(pass));
    const double shrink = 1.0 - 0.25 * pass;
    expect_fp8_linear_follows_float64(at::randn({4, 40, 272}, bf16) * shrink, w, b,
                                      at::randn({4, 40, 400}, bf16) * shrink, &scaling);
  }
  EXPECT_TRUE(scaling.input.defined() && scaling.weight.defined() && scaling.grad.defined());
}

// With bf16 buffers bound as the weight's and bias's gradients (what a strategy binds),
// backward adds each gradient into its buffer, on top of what it held, over two passes, and
// the accumulators get none (their post hooks still run; the weight's gets its gradient
// where this build has no cuBLASLt): the sums of a float64 linear's gradients within fp8's
// rounding (the weight's) and bf16's (the bias's).
TEST(Fp8Linear, AddsTheParametersGradientsIntoBoundBuffers) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  if (!dshost_models::kFp8Built) GTEST_SKIP() << "built without fp8";
  at::manual_seed(17);
  const auto bf16 = at::dtype(at::kBFloat16).device(at::kCUDA);
  const at::Tensor w = (at::randn({400, 272}, bf16) * 0.05).set_requires_grad(true),
                   b = (at::randn({400}, bf16) * 0.1).set_requires_grad(true);
  std::vector<bool> arrived_w, arrived_b;
  const BoundGradient bound_w = bind_gradient(w, &arrived_w),
                      bound_b = bind_gradient(b, &arrived_b);
  at::Tensor sums_w = at::zeros({400, 272}, at::kDouble).cuda(),
             sums_b = at::zeros({400}, at::kDouble).cuda();
  for (int pass = 0; pass < 2; ++pass) {
    const at::Tensor x = at::randn({4, 40, 272}, bf16), g = at::randn({4, 40, 400}, bf16);
    dshost_models::fp8_linear(x, w, b).backward(g);
    const at::Tensor g64 = g.to(at::kDouble).reshape({-1, 400});
    sums_w += g64.t().mm(x.to(at::kDouble).reshape({-1, 272}));
    sums_b += g64.sum(0);
  }
  EXPECT_EQ(w.grad().data_ptr(), bound_w.buffer.data_ptr());
  EXPECT_EQ(b.grad().data_ptr(), bound_b.buffer.data_ptr());
  EXPECT_LT(relative_error(bound_w.buffer - bound_w.held, sums_w), 0.1);
  EXPECT_LT(relative_error(bound_b.buffer - bound_b.held, sums_b), 1.0 / 128);
  EXPECT_EQ(arrived_w, (std::vector<bool>(2, !dshost_models::kFp8GemmBuilt)));
  EXPECT_EQ(arrived_b, (std::vector<bool>{false, false}));
}

// A layer without a bias whose weight's gradient may not go into the buffer (gpt's tied
// output projection): backward hands the weight's gradient to its accumulator, which adds
// it into the bound buffer; output and gradients against float64 within fp8's rounding.
TEST(Fp8Linear, WithoutABiasHandsATiedWeightsGradientToAutograd) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  if (!dshost_models::kFp8Built) GTEST_SKIP() << "built without fp8";
  at::manual_seed(19);
  const auto bf16 = at::dtype(at::kBFloat16).device(at::kCUDA);
  const at::Tensor w = (at::randn({400, 272}, bf16) * 0.05).set_requires_grad(true),
                   x = at::randn({4, 40, 272}, bf16).set_requires_grad(true),
                   g = at::randn({4, 40, 400}, bf16);
  std::vector<bool> arrived;
  const BoundGradient bound = bind_gradient(w, &arrived);
  const at::Tensor y = dshost_models::fp8_linear(x, w, {}, {nullptr, /*weight_into_buffer=*/false});
  y.backward(g);
  ASSERT_NE(y.grad_fn()->name().find("Fp8Linear"), std::string::npos) << y.grad_fn()->name();
  const at::Tensor x64 = x.detach().to(at::kDouble), w64 = w.detach().to(at::kDouble),
                   g64 = g.to(at::kDouble).reshape({-1, 400});
  const double output = relative_error(y, at::linear(x64, w64));
  EXPECT_LT(output, 0.06);
  EXPECT_GT(output, 0.01) << "no further off than bf16: not run in fp8";
  EXPECT_LT(relative_error(x.grad(), g64.mm(w64).view(x.sizes())), 0.1);
  EXPECT_EQ(arrived, std::vector<bool>{true});
  EXPECT_EQ(w.grad().data_ptr(), bound.buffer.data_ptr());
  EXPECT_LT(relative_error(bound.buffer - bound.held, g64.t().mm(x64.reshape({-1, 272}))), 0.1);
}

// Delayed scaling's cast: the first seeds the history with the matrix's own largest
// magnitude (the current scaling's bits); then each cast scales by the largest of the last
// 16 casts' magnitudes, saturating past the format's range (ATen's conversion of the
// clamped products), and records its own; an infinite or NaN element is cast to NaN and
// its cast leaves the history as it was.
TEST(Fp8Linear, DelayedScalingCastsByTheLargestOfTheLast16Casts) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
#if !DSHOST_CUDA_FP8
  GTEST_SKIP() << "built without fp8";
#else
  using dshost_models::Fp8Format;
  at::manual_seed(10);
  const at::Tensor x = (at::randn({200, 72}, at::kCUDA) * 3).to(at::kBFloat16);
  const float amax = x.abs().max().to(at::kFloat).item<float>();
  at::Tensor history;
  const auto cast = [&](const at::Tensor& m) {
    return dshost_models::to_fp8(m, Fp8Format::e4m3, false, &history);
  };
  const auto bytes = [](const at::Tensor& q) { return q.view(at::kByte); };
  const dshost_models::Fp8Matrix current = dshost_models::to_fp8(x, Fp8Format::e4m3);
  dshost_models::Fp8Matrix q = cast(x);
  EXPECT_TRUE(at::equal(bytes(q.rows), bytes(current.rows)));
  EXPECT_TRUE(at::equal(bytes(q.columns), bytes(current.columns)));
  EXPECT_FLOAT_EQ(q.inverse_scale.item<float>(), current.inverse_scale.item<float>());
  const at::Tensor x4 = x * 4;
  q = cast(x4);  // by x's magnitude: a quarter of x4's values saturate or nearly
  const at::Tensor saturated =
      (x4.to(at::kFloat) * (448 / amax)).clamp(-448, 448).to(at::kFloat8_e4m3fn);
  EXPECT_TRUE(at::equal(bytes(q.rows), bytes(saturated)));
  for (int i = 0; i < 16; ++i) {  // x4's magnitude is among the last 16 casts'
    q = cast(x);
    EXPECT_FLOAT_EQ(q.inverse_scale.item<float>(), 4 * amax / 448) << "cast " << i;
  }
  q = cast(x);
  EXPECT_FLOAT_EQ(q.inverse_scale.item<float>(), amax / 448);
  EXPECT_TRUE(at::equal(bytes(q.rows), bytes(current.rows)));
  for (const float bad : {INFINITY, NAN}) {
    at::Tensor y = x4.clone();
    y.index_put_({5, 7}, bad);
    q = cast(y);
    EXPECT_TRUE(std::isnan(q.rows.to(at::kFloat)[5][7].item<float>()));
    EXPECT_TRUE(std::isnan(q.columns.to(at::kFloat)[7][5].item<float>()));
    EXPECT_FLOAT_EQ(cast(x).inverse_scale.item<float>(), amax / 448) << "recorded " << bad;
  }
#endif
}

// The casts under it: each value the one ATen's conversion gives for x times (the format's
// largest value / x's largest magnitude) in fp32, bit for bit, in x's layout and transposed,
// with 1 / scale beside them, and x's column sums (a bias's gradient) as fp32 sums give
// them, on shapes off the kernel's 64 x 128 tile (one three tiles wide); a NaN stays NaN, and makes
// its column's sum NaN.
TEST(Fp8Linear, CastsAsAtensConversionInBothLayouts) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
#if !DSHOST_CUDA_FP8
  GTEST_SKIP() << "built without fp8";
#else
  using dshost_models::Fp8Format;
  at::manual_seed(9);
  const std::tuple<Fp8Format, at::ScalarType, double> formats[] = {
      {Fp8Format::e4m3, at::kFloat8_e4m3fn, 448.0}, {Fp8Format::e5m2, at::kFloat8_e5m2, 57344.0}};
  for (const auto& shape : {std::vector<int64_t>{200, 72}, std::vector<int64_t>{72, 264}}) {
    const at::Tensor x = (at::randn(shape, at::kCUDA) * 3).to(at::kBFloat16);
    for (const auto& [format, dtype, largest] : formats) {
      SCOPED_TRACE(c10::toString(dtype) + (" " + c10::str(x.sizes())));
      const dshost_models::Fp8Matrix q = dshost_models::to_fp8(x, format, /*column_sums=*/true);
      EXPECT_TRUE(at::allclose(q.column_partials.sum(0), x.to(at::kFloat).sum(0), 1e-5, 1e-4));
      const at::Tensor amax = x.abs().max().to(at::kFloat);
      const at::Tensor scale = at::div(at::scalar_tensor(largest, amax.options()), amax);
      const at::Tensor want = (x.to(at::kFloat) * scale).to(dtype);
      EXPECT_TRUE(at::equal(q.rows.view(at::kByte), want.view(at::kByte)));
      EXPECT_TRUE(at::equal(q.columns.view(at::kByte), want.t().contiguous().view(at::kByte)));
      EXPECT_FLOAT_EQ(q.inverse_scale.item<float>(), 1.0f / scale.item<float>());
    }
  }
  at::Tensor x = (at::randn({200, 72}, at::kCUDA) * 3).to(at::kBFloat16);
  x.index_put_({5, 7}, NAN);
  const dshost_models::Fp8Matrix q = dshost_models::to_fp8(x, Fp8Format::e4m3, true);
  EXPECT_TRUE(std::isnan(q.rows.to(at::kFloat)[5][7].item<float>()));
  EXPECT_TRUE(std::isnan(q.column_partials.sum(0)[7].item<float>()));
  EXPECT_FALSE(std::isnan(q.column_partials.sum(0)[6].item<float>()));
  EXPECT_TRUE(std::isnan(q.columns.to(at::kFloat)[7][5].item<float>()));
#endif
}

// GPT-2's tanh GELU.
at::Tensor gelu_tanh(const at::Tensor& x) { return at::gelu(x, "tanh"); }

// The casts of GELU(x) and of x times GELU's derivative at p (fp8_mlp.hpp's) against the same
// values in float64: each element the float64 value rounded to the format (within half its
// step: 1/16 of the value in e4m3, 1/8 in e5m2, or a subnormal step), the scale from the
// values' largest magnitude, the transposed layout the same bytes, the column sums the
// float64 sums of the values.
TEST(Fp8Linear, CastsGeluAndItsGradientWithinFp8RoundingOfFloat64) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
#if !DSHOST_CUDA_FP8
  GTEST_SKIP() << "built without fp8";
#else
  using dshost_models::Fp8Format;
  using dshost_models::Fp8Source;
  at::manual_seed(21);
  const auto bf16 = at::dtype(at::kBFloat16).device(at::kCUDA);
  const at::Tensor x = at::randn({200, 264}, bf16) * 2, p = at::randn({200, 264}, bf16) * 2;
  const at::Tensor p64 = p.to(at::kDouble).set_requires_grad(true);
  gelu_tanh(p64).backward(at::ones_like(p64));
  struct Case {
    Fp8Source source;
    Fp8Format format;
    double largest, step, subnormal;
    at::Tensor want;
  };
  const Case cases[] = {{Fp8Source::gelu, Fp8Format::e4m3, 448, 1.0 / 16, std::ldexp(1.0, -9),
                         gelu_tanh(x.to(at::kDouble))},
                        {Fp8Source::gelu_gradient, Fp8Format::e5m2, 57344, 1.0 / 8,
                         std::ldexp(1.0, -16), x.to(at::kDouble) * p64.grad()}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.source == Fp8Source::gelu ? "GELU" : "GELU's gradient");
    const dshost_models::Fp8Matrix q =
        dshost_models::to_fp8(x, c.format, /*column_sums=*/true, nullptr, c.source, p);
    const double inverse = q.inverse_scale.item<double>();
    const at::Tensor got = q.rows.to(at::kDouble) * inverse;
    // fp32's rounding besides, where 1 + tanh cancels: 1e-6 of the largest magnitude.
    const at::Tensor off = (got - c.want).abs() - c.want.abs() * c.step - c.subnormal * inverse -
                           1e-6 * c.largest * inverse;
    EXPECT_LE(off.max().item<double>(), 0.0);
    EXPECT_NEAR(inverse * c.largest, c.want.abs().max().item<double>(), 1e-5 * inverse * c.largest);
    EXPECT_TRUE(at::equal(q.columns.view(at::kByte), q.rows.t().contiguous().view(at::kByte)));
    EXPECT_TRUE(at::allclose(q.column_partials.sum(0).to(at::kDouble), c.want.sum(0), 1e-4, 1e-3));
  }
#endif
}

// An MLP's output and the gradients of its five inputs (x, fc's weight and bias, proj's
// weight and bias) as `mlp` gives them on leaf copies of `inputs`, for output gradient g.
struct MlpRun {
  at::Tensor output;
  std::vector<at::Tensor> grads;
  std::string function;
};
template <typename Mlp>
MlpRun run_mlp(const Mlp& mlp, const std::vector<at::Tensor>& inputs, const at::Tensor& g) {
  std::vector<at::Tensor> leaves;
  for (const at::Tensor& t : inputs) leaves.push_back(t.detach().clone().set_requires_grad(true));
  const at::Tensor y = mlp(leaves);
  y.backward(g.to(y.scalar_type()));
  MlpRun run{y.detach(), {}, y.grad_fn()->name()};
  for (const at::Tensor& leaf : leaves) run.grads.push_back(leaf.grad());
  return run;
}

at::Tensor float64_mlp(const std::vector<at::Tensor>& p) {
  return at::linear(gelu_tanh(at::linear(p[0], p[1], p[2])), p[3], p[4]);
}

std::vector<at::Tensor> mlp_inputs(int64_t width, at::TensorOptions options) {
  return {at::randn({4, 40, width}, options), at::randn({4 * width, width}, options) * 0.05,
          at::randn({4 * width}, options) * 0.1, at::randn({width, 4 * width}, options) * 0.03,
          at::randn({width}, options) * 0.1};
}

// `fused`'s output and five gradients against float64's, each as close as `unfused`'s come
// (within 1.1 times their error, plus 1e-3) and within `bounds` (relative errors).
void expect_mlp_follows_float64(const MlpRun& fused, const MlpRun& unfused, const MlpRun& exact,
                                const std::vector<double>& bounds) {
  const char* names[] = {"output", "x", "fc weight", "fc bias", "proj weight", "proj bias"};
  for (size_t i = 0; i < 6; ++i) {
    SCOPED_TRACE(names[i]);
    const auto pick = [i](const MlpRun& run) { return i == 0 ? run.output : run.grads[i - 1]; };
    const double error = relative_error(pick(fused), pick(exact));
    EXPECT_LE(error, 1.1 * relative_error(pick(unfused), pick(exact)) + 1e-3);
    EXPECT_LT(error, bounds[i]);
  }
}

DSHOST_SUITE_LABEL(Fp8GeluMlp, gpu);
// gpt's fp8 MLP with GELU in its casts against a float64 MLP, as close as the unfused fp8
// layers (fp8_linear, ATen's GELU, fp8_linear) come, under the current scaling and over three
// passes of delayed scaling: the output within 0.08 of the norm, the gradients within 0.15
// (e5m2's rounding) and proj's bias gradient, a sum of the bf16 output gradient, within 0.01.
TEST(Fp8GeluMlp, FollowsAFloat64MlpAsTheUnfusedLayersDo) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  if (!dshost_models::kFp8Built) GTEST_SKIP() << "built without fp8";
  at::manual_seed(23);
  const auto bf16 = at::dtype(at::kBFloat16).device(at::kCUDA);
  for (const bool delayed : {false, true}) {
    dshost_models::Fp8Scaling fused_scaling[2], unfused_scaling[2];
    const auto scaling = [delayed](dshost_models::Fp8Scaling* s) {
      return dshost_models::Fp8MlpScaling{delayed ? &s[0] : nullptr, delayed ? &s[1] : nullptr};
    };
    for (int pass = 0; pass < (delayed ? 3 : 1); ++pass) {
      SCOPED_TRACE((delayed ? "delayed scaling, pass " : "current scaling, pass ") +
                   std::to_string(pass));
      const std::vector<at::Tensor> inputs = mlp_inputs(272, bf16);
      const at::Tensor g = at::randn({4, 40, 272}, bf16);
      const MlpRun fused = run_mlp(
          [&](const std::vector<at::Tensor>& p) {
            return dshost_models::fp8_gelu_mlp(p[0], p[1], p[2], p[3], p[4],
                                               scaling(fused_scaling));
          },
          inputs, g);
      ASSERT_NE(fused.function.find("Fp8GeluMlp"), std::string::npos) << fused.function;
      const MlpRun unfused = run_mlp(
          [&](const std::vector<at::Tensor>& p) {
            const dshost_models::Fp8MlpScaling s = scaling(unfused_scaling);
            return dshost_models::fp8_linear(
                gelu_tanh(dshost_models::fp8_linear(p[0], p[1], p[2], {s.fc})), p[3], p[4],
                {s.proj});
          },
          inputs, g);
      std::vector<at::Tensor> inputs64;
      for (const at::Tensor& t : inputs) inputs64.push_back(t.to(at::kDouble));
      expect_mlp_follows_float64(fused, unfused, run_mlp(float64_mlp, inputs64, g),
                                 {0.08, 0.15, 0.15, 0.15, 0.15, 0.01});
    }
  }
}

DSHOST_SUITE_LABEL(GeluMlp, gpu);
// gpt's bf16 MLP with GELU in cuBLASLt's epilogues against a float64 MLP, as close as the
// unfused layers (dshost::linear, ATen's GELU) come, within bf16's rounding (1/100 of the
// norm); 111 rows, no multiple of 8. Then with bf16 buffers bound as both weights' gradients
// (what a strategy binds), over two passes: backward adds the weights' gradients into them,
// on top of what they held, the accumulators get none, and the buffers' sums are float64's
// within bf16's rounding.
TEST(GeluMlp, FollowsAFloat64MlpAsTheUnfusedLayersDo) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
#if !DSHOST_CUDA_GELU_GEMM
  GTEST_SKIP() << "built without cuBLASLt's epilogues";
#else
  at::manual_seed(24);
  const auto bf16 = at::dtype(at::kBFloat16).device(at::kCUDA);
  const auto fused = [](const std::vector<at::Tensor>& p) {
    return dshost_models::gelu_mlp(p[0], p[1], p[2], p[3], p[4]);
  };
  std::vector<at::Tensor> inputs = mlp_inputs(264, bf16), inputs64;
  inputs[0] = inputs[0].reshape({-1, 264}).narrow(0, 0, 111);
  const at::Tensor g = at::randn({111, 264}, bf16);
  for (const at::Tensor& t : inputs) inputs64.push_back(t.to(at::kDouble));
  const MlpRun ours = run_mlp(fused, inputs, g);
  ASSERT_NE(ours.function.find("GeluMlp"), std::string::npos) << ours.function;
  const MlpRun unfused = run_mlp(
      [](const std::vector<at::Tensor>& p) {
        return at::linear(gelu_tanh(at::linear(p[0], p[1], p[2])), p[3], p[4]);
      },
      inputs, g);
  expect_mlp_follows_float64(ours, unfused, run_mlp(float64_mlp, inputs64, g),
                             std::vector<double>(6, 0.01));

  std::vector<at::Tensor> params(inputs.begin() + 1, inputs.end());
  for (at::Tensor& p : params) p = p.clone().set_requires_grad(true);
  std::vector<bool> arrived;
  const BoundGradient bound_fc = bind_gradient(params[0], &arrived),
                      bound_proj = bind_gradient(params[2], &arrived);
  at::Tensor sum_fc = at::zeros({4 * 264, 264}, at::kDouble).cuda(),
             sum_proj = at::zeros({264, 4 * 264}, at::kDouble).cuda();
  for (int pass = 0; pass < 2; ++pass) {
    const at::Tensor x = at::randn({4, 40, 264}, bf16), gy = at::randn({4, 40, 264}, bf16);
    fused({x, params[0], params[1], params[2], params[3]}).backward(gy);
    std::vector<at::Tensor> p64{x.to(at::kDouble)};
    for (const at::Tensor& p : params) p64.push_back(p.detach().to(at::kDouble));
    const MlpRun exact = run_mlp(float64_mlp, p64, gy);
    sum_fc += exact.grads[1];
    sum_proj += exact.grads[3];
  }
  EXPECT_EQ(params[0].grad().data_ptr(), bound_fc.buffer.data_ptr());
  EXPECT_EQ(params[2].grad().data_ptr(), bound_proj.buffer.data_ptr());
  EXPECT_LT(relative_error(bound_fc.buffer - bound_fc.held, sum_fc), 0.01);
  EXPECT_LT(relative_error(bound_proj.buffer - bound_proj.held, sum_proj), 0.01);
  EXPECT_EQ(arrived, std::vector<bool>(4, false));
#endif
}

// The residual stream added in proj's product: the output is the residual plus float64's MLP
// within bf16's rounding (1/100 of the norm), the residual's gradient is the output's as it
// came, and every other gradient is, bit for bit, the one without the residual.
TEST(GeluMlp, AddsTheResidualInTheSecondLayersProduct) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
#if !DSHOST_CUDA_GELU_GEMM
  GTEST_SKIP() << "built without cuBLASLt's epilogues";
#else
  at::manual_seed(25);
  const auto bf16 = at::dtype(at::kBFloat16).device(at::kCUDA);
  const std::vector<at::Tensor> inputs = mlp_inputs(264, bf16);
  const at::Tensor residual = at::randn({4, 40, 264}, bf16), g = at::randn({4, 40, 264}, bf16);
  std::vector<at::Tensor> with_residual = inputs, inputs64;
  with_residual.push_back(residual);
  const MlpRun added = run_mlp(
      [](const std::vector<at::Tensor>& p) {
        return dshost_models::gelu_mlp(p[0], p[1], p[2], p[3], p[4], p[5]);
      },
      with_residual, g);
  ASSERT_NE(added.function.find("GeluMlp"), std::string::npos) << added.function;
  const MlpRun alone = run_mlp(
      [](const std::vector<at::Tensor>& p) {
        return dshost_models::gelu_mlp(p[0], p[1], p[2], p[3], p[4]);
      },
      inputs, g);
  for (const at::Tensor& t : inputs) inputs64.push_back(t.to(at::kDouble));
  EXPECT_LT(relative_error(added.output, residual.to(at::kDouble) + float64_mlp(inputs64)), 0.01);
  EXPECT_TRUE(at::equal(added.grads[5], g));
  for (size_t i = 0; i < inputs.size(); ++i) EXPECT_TRUE(at::equal(added.grads[i], alone.grads[i]));
#endif
}

DSHOST_SUITE_LABEL(QkvSplit, gpu);
// c_attn's product split into q, k and v, against the same product unbound in float64 over the
// same bf16 values: q, k and v bit for bit as bf16_linear's output unbound, and the input's,
// weight's and bias's gradients within bf16's rounding (1/100 of the norm), from gradients
// laid out as attention's backward leaves them ([B, heads, T, d] contiguous, seen through
// its transposes) and far from zero. Two shapes: one block of columns, and more rows than
// the kernel's 128 row groups. Then with a bf16 buffer bound as the bias's gradient, over
// two passes: backward adds the bias's gradient into it, and its accumulator gets none.
TEST(QkvSplit, StacksTheGradientsAndSumsTheBiasGradientAsUnbindingDoes) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
#if !DSHOST_CUDA_QKV_GRADIENT || !DSHOST_CUDA_GELU_GEMM
  GTEST_SKIP() << "built without the kernels";
#else
  at::manual_seed(27);
  const auto bf16 = at::dtype(at::kBFloat16).device(at::kCUDA);
  const auto leaf = [](const at::Tensor& t) { return t.detach().clone().set_requires_grad(true); };
  // x, weight and bias's float64 gradients through the unbound product, from `grads`.
  const auto exact = [&](const std::vector<at::Tensor>& p, const std::vector<at::Tensor>& grads,
                         int64_t heads) {
    std::vector<at::Tensor> p64, grads64;
    for (const at::Tensor& t : p) p64.push_back(leaf(t.to(at::kDouble)));
    for (const at::Tensor& g : grads) grads64.push_back(g.to(at::kDouble));
    const int64_t b = p[0].size(0), t = p[0].size(1), c = p[0].size(2);
    torch::autograd::backward(
        at::linear(p64[0], p64[1], p64[2]).view({b, t, 3, heads, c / heads}).unbind(2), grads64);
    return p64;
  };
  const auto attention_grads = [&](int64_t b, int64_t t, int64_t heads, int64_t d) {
    std::vector<at::Tensor> grads;
    for (int i = 0; i < 3; ++i)
      grads.push_back((at::randn({b, heads, t, d}, bf16) + 0.5).transpose(1, 2));
    return grads;
  };
  for (const auto& [b, t, heads, d] :
       std::vector<std::array<int64_t, 4>>{{2, 37, 3, 64}, {4, 100, 2, 16}}) {
    SCOPED_TRACE("B " + std::to_string(b) + ", T " + std::to_string(t) + ", heads " +
                 std::to_string(heads) + " of " + std::to_string(d));
    const int64_t c = heads * d;
    const at::Tensor x0 = at::randn({b, t, c}, bf16), w0 = at::randn({3 * c, c}, bf16) * 0.05,
                     b0 = at::randn({3 * c}, bf16) * 0.1;
    const std::vector<at::Tensor> p{leaf(x0), leaf(w0), leaf(b0)};
    const std::vector<at::Tensor> qkv = dshost_models::split_qkv(p[0], p[1], p[2], heads);
    ASSERT_EQ(qkv.size(), 3u);
    ASSERT_NE(qkv[0].grad_fn()->name().find("QkvSplit"), std::string::npos)
        << qkv[0].grad_fn()->name();
    const std::vector<at::Tensor> plain =
        dshost_models::bf16_linear(x0, w0, b0).view({b, t, 3, heads, d}).unbind(2);
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(at::equal(qkv[i], plain[i]));
    const std::vector<at::Tensor> grads = attention_grads(b, t, heads, d);
    torch::autograd::backward(qkv, grads);
    const std::vector<at::Tensor> want = exact(p, grads, heads);
    for (int i = 0; i < 3; ++i) EXPECT_LT(relative_error(p[i].grad(), want[i].grad()), 0.01) << i;
  }

  const at::Tensor x0 = at::randn({2, 37, 192}, bf16), w0 = at::randn({576, 192}, bf16) * 0.05,
                   b0 = at::randn({576}, bf16) * 0.1;
  const std::vector<at::Tensor> p{leaf(x0), leaf(w0), leaf(b0)};
  std::vector<bool> arrived;
  const BoundGradient bound = bind_gradient(p[2], &arrived);
  at::Tensor sum_b = at::zeros({576}, at::kDouble).cuda();
  for (int pass = 0; pass < 2; ++pass) {
    const std::vector<at::Tensor> grads = attention_grads(2, 37, 3, 64);
    torch::autograd::backward(dshost_models::split_qkv(p[0], p[1], p[2], 3), grads);
    sum_b += exact(p, grads, 3)[2].grad();
  }
  EXPECT_EQ(p[2].grad().data_ptr(), bound.buffer.data_ptr());
  EXPECT_LT(relative_error(bound.buffer - bound.held, sum_b), 0.01);
  EXPECT_EQ(arrived, std::vector<bool>(2, false));
#endif
}

DSHOST_SUITE_LABEL(Bf16Linear, gpu);
// gpt's bf16 linear layer, 136 wide (its weight-gradient product sums the bias's gradient too,
// BGRADB) and 4104 wide (the bias's gradient from column sums), against float64 over the same
// bf16 values within bf16's rounding (1/100 of the norm); 148 rows (no multiple of 8). First
// with fresh gradients, then with a bf16 buffer bound as the weight's gradient (what a strategy
// binds), over two passes: backward adds the weight's gradient into it, on top of what it held,
// and its accumulator gets none.
TEST(Bf16Linear, FollowsFloat64WithTheBiasGradientInTheProductOrSummedApart) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
#if !DSHOST_CUDA_GELU_GEMM
  GTEST_SKIP() << "built without cuBLASLt's epilogues";
#else
  static_assert(136 < dshost_models::kBiasColumnSumsFrom &&
                4104 >= dshost_models::kBiasColumnSumsFrom);
  at::manual_seed(26);
  const auto bf16 = at::dtype(at::kBFloat16).device(at::kCUDA);
  const auto leaf = [](const at::Tensor& t) { return t.detach().clone().set_requires_grad(true); };
  for (const int64_t out : {136, 4104}) {
    SCOPED_TRACE("output width " + std::to_string(out));
    const at::Tensor w0 = at::randn({out, 264}, bf16) * 0.05, b0 = at::randn({out}, bf16);
    const auto exact = [&](const at::Tensor& x, const at::Tensor& g) {
      std::vector<at::Tensor> p{leaf(x.to(at::kDouble)), leaf(w0.to(at::kDouble)),
                                leaf(b0.to(at::kDouble))};
      at::linear(p[0], p[1], p[2]).backward(g.to(at::kDouble));
      return p;
    };

    const at::Tensor x = leaf(at::randn({4, 37, 264}, bf16)), w = leaf(w0), b = leaf(b0);
    const at::Tensor g = at::randn({4, 37, out}, bf16) + 0.5;  // a bias gradient far from zero
    const at::Tensor y = dshost_models::bf16_linear(x, w, b);
    ASSERT_NE(y.grad_fn()->name().find("Bf16Linear"), std::string::npos) << y.grad_fn()->name();
    y.backward(g);
    const std::vector<at::Tensor> want = exact(x, g);
    EXPECT_LT(relative_error(y, at::linear(want[0], want[1], want[2])), 0.01);
    EXPECT_LT(relative_error(x.grad(), want[0].grad()), 0.01);
    EXPECT_LT(relative_error(w.grad(), want[1].grad()), 0.01);
    EXPECT_LT(relative_error(b.grad(), want[2].grad()), 0.01);

    const at::Tensor bound_w = leaf(w0), bound_b = leaf(b0);
    std::vector<bool> arrived;
    const BoundGradient bound = bind_gradient(bound_w, &arrived);
    at::Tensor sum_w = at::zeros({out, 264}, at::kDouble).cuda(),
               sum_b = at::zeros({out}, at::kDouble).cuda();
    for (int pass = 0; pass < 2; ++pass) {
      const at::Tensor xi = at::randn({4, 37, 264}, bf16), gi = at::randn({4, 37, out}, bf16) + 0.5;
      dshost_models::bf16_linear(xi, bound_w, bound_b).backward(gi);
      const std::vector<at::Tensor> p = exact(xi, gi);
      sum_w += p[1].grad();
      sum_b += p[2].grad();
    }
    EXPECT_EQ(bound_w.grad().data_ptr(), bound.buffer.data_ptr());
    EXPECT_LT(relative_error(bound.buffer - bound.held, sum_w), 0.01);
    EXPECT_LT(relative_error(bound_b.grad(), sum_b), 0.01);
    EXPECT_EQ(arrived, std::vector<bool>(2, false));
  }
#endif
}

// A stacked cast (fp8_qkv_linear.hpp's) of three [B, T, heads, head_dim] tensors laid out
// [B, heads, T, head_dim] (attention's own layout), each column block read where its part
// lies: the bytes in both layouts, the inverse scale and the column partials of the cast of
// their stacked copy, in both formats; three parts of different strides are refused.
TEST(Fp8Linear, CastsStackedPartsAsTheirStack) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
#if !DSHOST_CUDA_FP8
  GTEST_SKIP() << "built without fp8";
#else
  using dshost_models::Fp8Format;
  at::manual_seed(27);
  const auto bf16 = at::dtype(at::kBFloat16).device(at::kCUDA);
  torch::autograd::variable_list parts;
  for (int i = 0; i < 3; ++i) parts.push_back(at::randn({3, 4, 40, 64}, bf16).transpose(1, 2));
  const dshost_models::Fp8CastInput in = dshost_models::stacked_gradients(parts);
  ASSERT_NE(in.x, nullptr);
  const at::Tensor stack = at::stack(parts, 2).reshape({120, 768});
  for (const Fp8Format format : {Fp8Format::e4m3, Fp8Format::e5m2}) {
    const dshost_models::Fp8Matrix got =
        dshost_models::cast_to_fp8(in, parts[0], format, /*column_sums=*/true, nullptr);
    const dshost_models::Fp8Matrix want = dshost_models::to_fp8(stack, format, true);
    EXPECT_TRUE(at::equal(got.rows.view(at::kByte), want.rows.view(at::kByte)));
    EXPECT_TRUE(at::equal(got.columns.view(at::kByte), want.columns.view(at::kByte)));
    EXPECT_TRUE(at::equal(got.inverse_scale, want.inverse_scale));
    EXPECT_TRUE(at::equal(got.column_partials, want.column_partials));
  }
  parts[1] = parts[1].contiguous();
  EXPECT_EQ(dshost_models::stacked_gradients(parts).x, nullptr);
#endif
}

DSHOST_SUITE_LABEL(Fp8QkvLinear, gpu);
// Attention's fp8 input projection against fp8_linear's output split by view and unbind (the
// same casts and products): q, k and v and the gradients of x, weight and bias the same bits,
// through causal attention (whose backward writes q's, k's and v's gradients in a layout of
// its own) and through a use of q alone (k's and v's gradients zeros), under the current
// scaling and over two passes of delayed scaling; the stacked cast's path taken (grad_fn).
TEST(Fp8QkvLinear, GivesFp8LinearsBitsWithoutStackingTheGradients) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  if (!dshost_models::kFp8Built) GTEST_SKIP() << "built without fp8";
  at::manual_seed(25);
  const auto bf16 = at::dtype(at::kBFloat16).device(at::kCUDA);
  const int64_t heads = 4, width = 256;
  const auto attend = [](const std::vector<at::Tensor>& qkv) {
    return causal_attention(qkv[0].transpose(1, 2), qkv[1].transpose(1, 2), qkv[2].transpose(1, 2));
  };
  const auto q_alone = [](const std::vector<at::Tensor>& qkv) { return qkv[0] * 3; };
  for (const bool delayed : {false, true}) {
    dshost_models::Fp8Scaling ours_scaling, split_scaling;
    for (int pass = 0; pass < (delayed ? 2 : 1); ++pass) {
      for (const bool attention : {true, false}) {
        SCOPED_TRACE(std::string(delayed ? "delayed" : "current") + " scaling, pass " +
                     std::to_string(pass) + (attention ? ", attention" : ", q alone"));
        const at::Tensor x = at::randn({4, 48, 272}, bf16),
                         w = at::randn({3 * width, 272}, bf16) * 0.05,
                         b = at::randn({3 * width}, bf16) * 0.1;
        std::vector<at::Tensor> grads[2], outputs[2];
        for (int side = 0; side < 2; ++side) {
          std::vector<at::Tensor> leaves{x.clone(), w.clone(), b.clone()};
          for (at::Tensor& t : leaves) t.set_requires_grad(true);
          dshost_models::Fp8Scaling* scaling =
              delayed ? (side == 0 ? &ours_scaling : &split_scaling) : nullptr;
          const std::vector<at::Tensor> qkv =
              side == 0
                  ? dshost_models::fp8_qkv_linear(leaves[0], leaves[1], leaves[2], heads, scaling)
                  : dshost_models::fp8_linear(leaves[0], leaves[1], leaves[2], {scaling})
                        .view({4, 48, 3, heads, width / heads})
                        .unbind(2);
          if (side == 0) {
            ASSERT_NE(qkv[0].grad_fn()->name().find("Fp8QkvLinear"), std::string::npos)
                << qkv[0].grad_fn()->name();
          }
          at::manual_seed(26 + pass);
          const at::Tensor y = attention ? attend(qkv) : q_alone(qkv);
          y.backward(at::randn(y.sizes(), bf16));
          outputs[side] = qkv;
          for (const at::Tensor& t : leaves) grads[side].push_back(t.grad());
        }
        for (int i = 0; i < 3; ++i) {
          EXPECT_TRUE(at::equal(outputs[0][i], outputs[1][i])) << "output " << i;
          EXPECT_TRUE(at::equal(grads[0][i], grads[1][i])) << "gradient " << i;
        }
        EXPECT_GT(grads[0][0].abs().sum().item<double>(), 0.0);
      }
    }
  }
}

}  // namespace
}  // namespace dshost
