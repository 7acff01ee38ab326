// The basic_cnn plugin through the ABI, in-process, as the host creates it.
#include <dshost/torch.hpp>

#include "core/manifest.h"
#include "core/plugin_loader.h"
#include "core/services.h"
#include "tests/test_util.h"

#include <gtest/gtest.h>

namespace dshost {
namespace {

struct LiveModel {
  LoadedPlugin plugin;
  std::unique_ptr<PluginHost> host;
  const dshost_model_api* api = nullptr;
  dshost_model* model = nullptr;
  ~LiveModel() {
    if (model) api->destroy(model);
  }
};

// basic_cnn created with the [model] section `section`.
std::unique_ptr<LiveModel> create_basic_cnn(const std::string& section) {
  const std::string path = test::write_file(test::scratch_dir("model") + "/m.toml",
                                            "[model]\nplugin = \"basic_cnn\"\n" + section);
  auto live = std::make_unique<LiveModel>();
  live->plugin = PluginCatalog(DSHOST_BUILD_PLUGIN_DIR).load(DSHOST_KIND_MODEL, "basic_cnn", path);
  const dshost_plugin_descriptor* d = live->plugin.descriptor;
  live->host = std::make_unique<PluginHost>(
      "basic_cnn", Manifest::load(path, {}).resolve("model", {d->options, d->option_count}, true),
      RankInfo{}, nullptr);
  live->api = live->plugin.api<dshost_model_api>();
  dshost_error err{sizeof(dshost_error), {}};
  EXPECT_EQ(live->api->create(live->host->table(), &live->model, &err), DSHOST_OK) << err.message;
  return live;
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
    EXPECT_EQ(w.strides(), at::empty(w.sizes(), w.options().memory_format(
                                                    at::MemoryFormat::ChannelsLast)).strides());
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
  dshost_model_info info{sizeof(dshost_model_info)};
  dshost_error err{sizeof(dshost_error), {}};
  ASSERT_EQ(m->api->describe(m->model, &info, &err), DSHOST_OK) << err.message;
  EXPECT_EQ(info.unit_count, 4);
  // conv1 1*32*9+32, conv2 32*64*9+64, fc1 3136*128+128, fc2 128*10+10
  EXPECT_EQ(info.parameter_count, 320 + 18496 + 401536 + 1290);
  EXPECT_EQ(std::vector<int64_t>(info.input_shape, info.input_shape + info.input_ndim),
            (std::vector<int64_t>{1, 28, 28}));
}

}  // namespace
}  // namespace dshost
