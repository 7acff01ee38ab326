#include <dshost/torch.hpp>  // first: ATen's DLPack

#include "core/evaluation.h"

#include "core/dataset.h"
#include "core/input_pipeline.h"
#include "core/plugin_handles.h"
#include "core/rank_setup.h"
#include "core/sampler.h"

#include <algorithm>
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

}  // namespace dshost
