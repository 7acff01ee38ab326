#include <dshost/torch.hpp>  // first: ATen's DLPack

#include "core/evaluation.h"

#include "core/checkpoint.h"  // step_dir_name
#include "core/dataset.h"
#include "core/error.h"
#include "core/input_pipeline.h"
#include "core/log.h"
#include "core/plugin_handles.h"
#include "core/rank_setup.h"
#include "core/safetensors.h"  // write_file_atomically
#include "core/sampler.h"

#include <algorithm>
#include <iomanip>
#include <memory>
#include <vector>

namespace dshost {

Evaluation evaluate_test_split(RankSetup& s, const Rendezvous& rv, int64_t batch) {
  const int64_t size = s.data->size(DSHOST_TEST_SPLIT);
  if (size == 0) return {};
  const auto order = std::make_shared<const std::vector<int64_t>>(
      shard_indices(size, rv.rank, rv.world_size, 0, 0, /*shuffle=*/false, /*pad=*/false));
  double loss_sum = 0, correct = 0, count = 0;
  for (size_t first = 0; first < order->size(); first += batch) {
    const int64_t n = std::min<int64_t>(batch, order->size() - first);
    s.pipeline->load(DSHOST_TEST_SPLIT, order, first, n, 0, s.inputs, s.targets);
    const dshost_eval_result r = s.model->evaluate(n);
    loss_sum += r.loss_sum;
    correct += static_cast<double>(r.correct);
    count += static_cast<double>(r.count);
  }
  const auto totals = s.comm->sum({loss_sum, correct, count});
  return {totals[0] / totals[2], totals[1] / totals[2], static_cast<int64_t>(totals[2])};
}

void write_evaluation(const std::filesystem::path& run_dir, const std::string& checkpoint,
                      int64_t step, const Evaluation& e) {
  const std::filesystem::path dir = run_dir / "eval";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    throw UserError(
        cat("cannot create ", dir.string(), ": ", ec.message(), "; check run.output_dir"), 1);
  const std::string file = (dir / (step_dir_name(step) + ".json")).string();
  const nlohmann::json result{{"checkpoint", checkpoint},
                              {"step", step},
                              {"test_accuracy", e.accuracy},
                              {"test_loss", e.loss},
                              {"samples", e.samples}};
  write_file_atomically(file, result.dump(2) + "\n");
  log::info(cat("checkpoint ", checkpoint, " (step ", step, "): test accuracy ", std::fixed,
                std::setprecision(4), e.accuracy, " loss ", e.loss, " (", e.samples,
                " samples); written to ", file));
}

}  // namespace dshost
