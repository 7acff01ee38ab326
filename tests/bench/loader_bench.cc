// dshost's input pipeline alone, without a model: training micro-batches (RandomResizedCrop
// (224) and flip, normalised, as `dshost run` feeds resnet50) from the image_folder dataset
// plugin on FOLDER/train with WORKERS threads, on the CPU. Prints one JSON line: images/s
// over BATCHES batches of 64 after one epoch's warm-up batch, the workers and the cores.
//   dshost_loader_bench FOLDER WORKERS BATCHES
#include "core/dataset.h"
#include "core/input_pipeline.h"
#include "core/job.h"
#include "core/sampler.h"

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: dshost_loader_bench FOLDER WORKERS BATCHES\n");
    return 2;
  }
  const int workers = std::stoi(argv[2]);
  const int64_t batches = std::stoll(argv[3]), rows = 64;
  const dshost::Job job = dshost::prepare_job(
      DSHOST_SOURCE_DIR "/configs/quickstart.toml",
      {"data.dataset=\"image_folder\"", "data.path=\"" + std::string(argv[1]) + "\"",
       "plugins.paths=\"" DSHOST_BUILD_PLUGIN_DIR "\""});
  const dshost::DatasetPlugin data(job, dshost::RankInfo{}, {3, 224, 224});
  dshost::InputPipeline pipeline(data, rows, workers, 4, at::kCPU);
  at::Tensor inputs = at::empty({rows, 3, 224, 224}), targets = at::empty({rows}, at::kLong);
  const int64_t size = data.size(DSHOST_TRAIN_SPLIT), per_epoch = size / rows;
  std::shared_ptr<const std::vector<int64_t>> order;
  const auto load = [&](int64_t b) {
    if (b % per_epoch == 0)
      order = std::make_shared<const std::vector<int64_t>>(
          dshost::shard_indices(size, 0, 1, 42, b / per_epoch, true, false));
    pipeline.load(DSHOST_TRAIN_SPLIT, order, (b % per_epoch) * rows, rows, 1000 + b / per_epoch,
                  inputs, targets);
  };
  load(0);
  const auto start = std::chrono::steady_clock::now();
  for (int64_t b = 1; b <= batches; ++b) load(b);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf(
      "{\"side\": \"dshost\", \"images_per_second\": %.1f, \"workers\": %d, \"cores\": %u}\n",
      static_cast<double>(batches * rows) / seconds, workers, std::thread::hardware_concurrency());
  return 0;
}
