#include "tests/fake_ranks.h"

#include <dshost/torch.hpp>

#include <exception>
#include <thread>

namespace dshost::test {

struct FakeRanks::Rank {
  FakeRanks* world;
  int rank;
  dshost_services table{sizeof(dshost_services)};
  std::vector<at::Tensor> buffers;
  std::vector<std::string> log;
};

namespace {

dshost_work* finished() {
  static int done;
  return reinterpret_cast<dshost_work*>(&done);
}

}  // namespace

dshost_optimizer_config adamw(double weight_decay) {
  return {sizeof(dshost_optimizer_config), DSHOST_ADAMW, 0.9, 0.999, 1e-8, weight_decay, 0.0};
}

FakeRanks::FakeRanks(int world_size, dshost_optimizer_config optimizer)
    : world_size_(world_size), optimizer_(optimizer), calls_(world_size) {
  for (int r = 0; r < world_size; ++r) {
    auto rank = std::make_unique<Rank>();
    rank->world = this;
    rank->rank = r;
    dshost_services& t = rank->table;
    t.host = reinterpret_cast<dshost_host*>(rank.get());
    t.rank = r;
    t.world_size = world_size;
    t.local_rank = r;
    t.local_world_size = world_size;
    t.device = {kDLCPU, 0};
    t.precision = DSHOST_FP32;
    t.optimizer = &optimizer_;
    t.log = [](dshost_host* host, dshost_log_level, const char* message) {
      rank_of(host).log.push_back(message);
    };
    t.register_buffer = [](dshost_host* host, DLManagedTensor* buffer, int32_t* id, dshost_error*) {
      Rank& me = rank_of(host);
      *id = static_cast<int32_t>(me.buffers.size());
      me.buffers.push_back(from_dlpack(buffer));
      return DSHOST_OK;
    };
    t.all_reduce = [](dshost_host* host, const dshost_slice* data, dshost_reduce_op op,
                      dshost_work** work, dshost_error*) {
      Rank& me = rank_of(host);
      const at::Tensor t = me.buffers[data->buffer].view(-1).narrow(0, data->offset, data->count);
      return collective(host, {Call::kAllReduce, t, t, op}, work);
    };
    t.all_gather = [](dshost_host* host, const dshost_slice* in, const dshost_slice* out,
                      dshost_work** work, dshost_error*) {
      Rank& me = rank_of(host);
      return collective(
          host,
          {Call::kAllGather, me.buffers[in->buffer].view(-1).narrow(0, in->offset, in->count),
           me.buffers[out->buffer].view(-1).narrow(0, out->offset, out->count)},
          work);
    };
    t.reduce_scatter = [](dshost_host* host, const dshost_slice* in, const dshost_slice* out,
                          dshost_reduce_op op, dshost_work** work, dshost_error*) {
      Rank& me = rank_of(host);
      return collective(
          host,
          {Call::kReduceScatter, me.buffers[in->buffer].view(-1).narrow(0, in->offset, in->count),
           me.buffers[out->buffer].view(-1).narrow(0, out->offset, out->count), op},
          work);
    };
    t.broadcast = [](dshost_host* host, const dshost_slice* data, int32_t root, dshost_work** work,
                     dshost_error*) {
      Rank& me = rank_of(host);
      const at::Tensor t = me.buffers[data->buffer].view(-1).narrow(0, data->offset, data->count);
      return collective(host, {Call::kBroadcast, t, t, DSHOST_SUM, root}, work);
    };
    t.wait = [](dshost_host*, dshost_work*, dshost_error*) { return DSHOST_OK; };
    ranks_.push_back(std::move(rank));
  }
}

FakeRanks::~FakeRanks() = default;

FakeRanks::Rank& FakeRanks::rank_of(dshost_host* host) { return *reinterpret_cast<Rank*>(host); }

const dshost_services* FakeRanks::services(int rank) const { return &ranks_[rank]->table; }

std::vector<std::string> FakeRanks::log(int rank) const { return ranks_[rank]->log; }

void FakeRanks::run(const std::function<void(int rank)>& body) {
  std::vector<std::exception_ptr> errors(world_size_);
  std::vector<std::thread> threads;
  for (int r = 0; r < world_size_; ++r)
    threads.emplace_back([&, r] {
      try {
        body(r);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
}

dshost_status FakeRanks::collective(dshost_host* host, Call call, dshost_work** work) {
  Rank& me = rank_of(host);
  me.world->meet(me.rank, call);
  *work = finished();
  return DSHOST_OK;
}

void FakeRanks::meet(int rank, const Call& call) {
  std::unique_lock<std::mutex> lock(mutex_);
  calls_[rank] = call;
  if (rank == 0) ++collectives_;
  const uint64_t generation = generation_;
  if (++arrived_ == world_size_) {
    compute();
    arrived_ = 0;
    ++generation_;
    met_.notify_all();
    return;
  }
  met_.wait(lock, [&] { return generation_ != generation; });
}

// Every rank's call of one collective, computed in fp64 and written in each output's dtype.
void FakeRanks::compute() {
  const Call& first = calls_[0];
  const auto reduced = [&](const std::function<at::Tensor(const Call&)>& part) {
    at::Tensor sum = at::zeros_like(part(first), at::kDouble);
    for (const Call& c : calls_) sum += part(c).to(at::kDouble);
    return first.op == DSHOST_AVG ? sum / world_size_ : sum;
  };
  switch (first.kind) {
    case Call::kAllReduce: {
      const at::Tensor sum = reduced([](const Call& c) { return c.in; });
      for (Call& c : calls_) c.out.copy_(sum);
      break;
    }
    case Call::kAllGather: {
      std::vector<at::Tensor> ins;
      for (const Call& c : calls_) ins.push_back(c.in.clone());
      const at::Tensor whole = at::cat(ins);
      for (Call& c : calls_) c.out.copy_(whole);
      break;
    }
    case Call::kReduceScatter: {
      const int64_t count = first.out.numel();
      for (int r = 0; r < world_size_; ++r)
        calls_[r].out.copy_(
            reduced([&](const Call& c) { return c.in.narrow(0, r * count, count); }));
      break;
    }
    case Call::kBroadcast: {
      const at::Tensor root = calls_[first.root].in.clone();
      for (Call& c : calls_) c.out.copy_(root);
      break;
    }
  }
}

}  // namespace dshost::test
