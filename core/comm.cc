#include "core/comm.h"

#include "core/error.h"
#include "core/heartbeat.h"
#include "core/manifest.h"  // join
#include "core/torch_compat.h"

#include <dshost/launcher.hpp>  // kStoppedByAnotherRank

#if DSHOST_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>
#include <cstring>

namespace dshost {
namespace {

// The non-negative integer in environment variable `name`; `fallback` where it is unset,
// and where there is none, an error.
int env_int(const char* name, std::optional<int> fallback = std::nullopt) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') {
    if (fallback) return *fallback;
    throw UserError(cat("environment variable ", name, " is not set; start ranks with ",
                        "`dshost run` (or set RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT as ",
                        "torchrun does)"));
  }
  char* end = nullptr;
  const long v = std::strtol(text, &end, 10);
  if (*end != '\0' || v < 0)
    throw UserError(
        cat("environment variable ", name, "='", text, "' is not a non-negative integer"));
  return static_cast<int>(v);
}

c10d::ReduceOp to_c10d(dshost_reduce_op op) {
  return op == DSHOST_MAX ? c10d::ReduceOp::MAX : c10d::ReduceOp::SUM;  // AVG: SUM then divide
}

// The address this machine would use to reach `host` (the source address of its route
// there), "" if unknown. Connecting a UDP socket sends nothing.
std::string local_address_towards(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), "9", &hints, &found) != 0) return "";
  std::string address;
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in local{};
  socklen_t len = sizeof(local);
  char text[INET_ADDRSTRLEN] = {};
  if (fd >= 0 && connect(fd, found->ai_addr, found->ai_addrlen) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0 &&
      inet_ntop(AF_INET, &local.sin_addr, text, sizeof(text)) != nullptr)
    address = text;
  if (fd >= 0) close(fd);
  freeaddrinfo(found);
  return address;
}

// gloo listens on one address that every other rank must reach. Its default, this
// machine's hostname, resolves to 127.0.1.1 on Debian and breaks multi-node jobs; the
// address of the route to the rendezvous host is reachable by construction.
std::shared_ptr<::gloo::transport::Device> gloo_device(const std::string& master_addr) {
  if (const char* iface = std::getenv("GLOO_SOCKET_IFNAME"))
    return c10d::ProcessGroupGloo::createDeviceForInterface(iface);
  const std::string address = local_address_towards(master_addr);
  if (!address.empty()) return c10d::ProcessGroupGloo::createDeviceForHostname(address);
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

// The collective this rank started last, for explain_termination (written at each start).
char g_last_collective[160] = "none";
int g_rank = -1;

void note_collective(const char* kind, const at::Tensor& t) {
  std::snprintf(g_last_collective, sizeof(g_last_collective), "%s of %lld %s elements", kind,
                static_cast<long long>(t.numel()), c10::toString(t.scalar_type()));
}

// gloo throws from its own threads when the ranks' collectives do not match (sizes or
// order), and that ends in std::terminate: one line saying so replaces the abort.
[[noreturn]] void explain_termination() {
  std::string what = "an exception of unknown type";
  try {
    if (const auto e = std::current_exception()) std::rethrow_exception(e);
  } catch (const std::exception& e) {
    what = without_backtrace(e.what());
  } catch (...) {
  }
  if (what.find("gloo") != std::string::npos)
    std::fprintf(
        stderr,
        "dshost: error: rank %d on %s: the ranks' collectives do not match: they were issued "
        "with different sizes or in a different order on different ranks (this rank's last: %s). "
        "Every rank must issue the same collectives in the same order; a plugin that "
        "communicates on some ranks only, or with sizes that differ by rank, does this. "
        "(gloo: %s)\n",
        g_rank, hostname().c_str(), g_last_collective, what.c_str());
  else
    std::fprintf(stderr, "dshost: error: rank %d on %s: internal error: %s (please report this)\n",
                 g_rank, hostname().c_str(), what.c_str());
  std::fflush(stderr);
  _exit(1);
}

// Why the rendezvous failed and what to do. A port taken on rank 0's host is the one
// failure a setting fixes; anything else is the network or a rank that never started.
std::string rendezvous_failure(const std::string& what, const Rendezvous& rv) {
  const std::string message = without_backtrace(what);
  if (message.find("EADDRINUSE") != std::string::npos ||
      message.find("ddress already in use") != std::string::npos)
    return cat("port ", rv.master_port, " is in use on ", hostname(),
               ": set launcher.master_port (MASTER_PORT) to a free port");
  return cat(message, ". Check that every rank can reach MASTER_ADDR:MASTER_PORT and that all ",
             "WORLD_SIZE=", rv.world_size, " ranks started.");
}

}  // namespace

Rendezvous Rendezvous::from_env() {
  Rendezvous rv;
  rv.rank = env_int("RANK");
  rv.world_size = env_int("WORLD_SIZE");
  rv.local_rank = env_int("LOCAL_RANK", rv.rank);
  rv.local_world_size = env_int("LOCAL_WORLD_SIZE", rv.world_size);
  rv.master_port = env_int("MASTER_PORT");
  rv.full_world_size = env_int("DSHOST_FULL_WORLD_SIZE", rv.world_size);
  if (const char* addr = std::getenv("MASTER_ADDR")) rv.master_addr = addr;
  if (rv.world_size < 1 || rv.rank >= rv.world_size)
    throw UserError(cat("RANK=", rv.rank, " is not below WORLD_SIZE=", rv.world_size));
  if (rv.full_world_size < rv.world_size)
    throw UserError(
        cat("DSHOST_FULL_WORLD_SIZE=", rv.full_world_size, " is below WORLD_SIZE=", rv.world_size));
  return rv;
}

struct Comm::Groups {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<CollectiveBackend> gloo, nccl;
};

PendingWork::PendingWork(std::string what, c10::intrusive_ptr<c10d::Work> work,
                         std::function<void()> epilogue, bool on_device)
    : what_(std::move(what)),
      work_(std::move(work)),
      epilogue_(std::move(epilogue)),
      on_device_(on_device) {}

PendingWork::~PendingWork() = default;

void PendingWork::finish(std::chrono::milliseconds timeout) {
  if (on_device_)
    work_->wait();
  else
    work_->wait(timeout);
  if (epilogue_) epilogue_();
}

Comm::Comm(const Rendezvous& rv, std::chrono::milliseconds timeout, at::Device device)
    : rv_(rv), timeout_(timeout), groups_(std::make_unique<Groups>()) {
  c10d::TCPStoreOptions opts;
  opts.port = static_cast<uint16_t>(rv.master_port);
  opts.isServer = rv.rank == 0;
  opts.numWorkers = rv.world_size;
  opts.waitWorkers = true;
  opts.timeout = timeout;
  try {
    groups_->store = c10::make_intrusive<c10d::TCPStore>(rv.master_addr, opts);
    auto gloo_opts = c10d::ProcessGroupGloo::Options::create(timeout);
    gloo_opts->devices.push_back(gloo_device(rv.master_addr));
    groups_->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(
        c10::make_intrusive<c10d::PrefixStore>("gloo", groups_->store), rv.rank, rv.world_size,
        gloo_opts);
#if DSHOST_CUDA
    if (device.is_cuda() && rv.local_world_size <= c10::cuda::device_count()) {
      auto nccl_opts = c10d::ProcessGroupNCCL::Options::create();
      nccl_opts->timeout = timeout;
      groups_->nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(
          c10::make_intrusive<c10d::PrefixStore>("nccl", groups_->store), rv.rank, rv.world_size,
          nccl_opts);
    }
#else
    (void)device;  // the ranks' collectives are gloo's alone
#endif
    start_heartbeat();
    g_rank = rv.rank;
    std::set_terminate(explain_termination);
  } catch (const UserError&) {
    throw;
  } catch (const std::exception& e) {
    throw UserError(cat("rank ", rv.rank, " on ", hostname(), ": rendezvous at ", rv.master_addr,
                        ":", rv.master_port, " failed: ", rendezvous_failure(e.what(), rv)),
                    1);
  }
}

// NCCL's communicators are shut down explicitly: LibTorch 2 otherwise warns at exit that
// destroy_process_group() was not called, and tears them down in an order of its own.
Comm::~Comm() {
#if DSHOST_CUDA && TORCH_VERSION_MAJOR >= 2
  if (groups_->nccl) groups_->nccl->shutdown();
#endif
}

int32_t Comm::register_buffer(const at::Tensor& buffer) {
  if (!buffer.is_contiguous()) throw UserError("register_buffer: the buffer is not contiguous", 1);
  buffers_.push_back(buffer.view({-1}));  // shares the storage: follows resize_storage
  return static_cast<int32_t>(buffers_.size() - 1);
}

at::Tensor Comm::view(const dshost_slice& s) const {
  if (s.buffer < 0 || s.buffer >= static_cast<int32_t>(buffers_.size()))
    throw UserError(cat("collective on unregistered buffer ", s.buffer), 1);
  const at::Tensor& b = buffers_[s.buffer];
  if (s.offset < 0 || s.count < 0 || s.offset + s.count > b.numel())
    throw UserError(cat("slice [", s.offset, ", ", s.offset + s.count, ") outside buffer ",
                        s.buffer, " of ", b.numel(), " elements"),
                    1);
  return b.narrow(0, s.offset, s.count);
}

// Gloo (LibTorch 1.13) knows no bf16: reductions run on fp32 copies, and collectives that
// only move data (all-gather, broadcast) move the same 16 bits labelled fp16.
static bool needs_fp32_copy(const at::Tensor& t) {
  return !t.is_cuda() && t.scalar_type() == at::kBFloat16;
}
static at::Tensor as_gloo_bits(const at::Tensor& t) {
  return needs_fp32_copy(t) ? t.view(at::kHalf) : t;
}

// Ranks that share a GPU have no NCCL (a communicator takes one rank per device): their
// CUDA tensors go through gloo as host copies, and come back when the work is waited for.
bool Comm::staged(const at::Tensor& t) const { return t.is_cuda() && !groups_->nccl; }

std::unique_ptr<PendingWork> Comm::all_reduce(const dshost_slice& s, dshost_reduce_op op) {
  at::Tensor target = view(s);
  note_collective("all_reduce", target);
  std::vector<at::Tensor> io{
      staged(target) || needs_fp32_copy(target)
          ? target.to(at::kCPU, at::kFloat, /*non_blocking=*/false, /*copy=*/true)
          : target};
  CollectiveBackend& group = io[0].is_cuda() ? *groups_->nccl : *groups_->gloo;
  c10d::AllreduceOptions opts;
  opts.reduceOp = to_c10d(op);
  auto work = group.allreduce(io, opts);
  const int world = rv_.world_size;
  return std::make_unique<PendingWork>(
      "all_reduce", work,
      [target, io, op, world]() mutable {
        if (op == DSHOST_AVG) io[0].div_(world);
        if (!io[0].is_same(target)) target.copy_(io[0]);
      },
      io[0].is_cuda());
}

std::unique_ptr<PendingWork> Comm::all_gather(const dshost_slice& in, const dshost_slice& out) {
  at::Tensor input = view(in), output = view(out);
  note_collective("all_gather", input);
  if (output.numel() != input.numel() * rv_.world_size)
    throw UserError(cat("all_gather: output has ", output.numel(), " elements, expected ",
                        input.numel(), " x ", rv_.world_size),
                    1);
#if DSHOST_CUDA
  if (input.is_cuda() && !staged(input)) {
    auto work = groups_->nccl->_allgather_base(output, input);
    return std::make_unique<PendingWork>("all_gather", work, nullptr, true);
  }
#endif
  // Gloo: list all-gather into views of the output (a host copy of it when staged); the
  // input is copied since it may be one of those views.
  const at::Tensor gathered =
      staged(output) ? at::empty(output.sizes(), output.options().device(at::kCPU)) : output;
  std::vector<at::Tensor> inputs{
      as_gloo_bits(input.to(at::kCPU, /*non_blocking=*/false, /*copy=*/true))};
  std::vector<std::vector<at::Tensor>> outputs(1);
  for (int r = 0; r < rv_.world_size; ++r)
    outputs[0].push_back(as_gloo_bits(gathered).narrow(0, r * input.numel(), input.numel()));
  auto work = groups_->gloo->allgather(outputs, inputs);
  return std::make_unique<PendingWork>(
      "all_gather", work,
      [inputs, outputs, gathered, output]() mutable {
        if (!gathered.is_same(output)) output.copy_(gathered);
      },
      false);
}

std::unique_ptr<PendingWork> Comm::reduce_scatter(const dshost_slice& in, const dshost_slice& out,
                                                  dshost_reduce_op op) {
  at::Tensor input = view(in), output = view(out);
  note_collective("reduce_scatter", input);
  if (input.numel() != output.numel() * rv_.world_size)
    throw UserError(cat("reduce_scatter: input has ", input.numel(), " elements, expected ",
                        output.numel(), " x ", rv_.world_size),
                    1);
#if DSHOST_CUDA
  if (input.is_cuda() && !staged(input)) {
    c10d::ReduceScatterOptions opts;
    opts.reduceOp = op == DSHOST_AVG ? c10d::ReduceOp(c10d::ReduceOp::AVG) : to_c10d(op);
    auto work = groups_->nccl->_reduce_scatter_base(output, input, opts);
    return std::make_unique<PendingWork>("reduce_scatter", work, nullptr, true);
  }
#endif
  // Gloo has no reduce_scatter here: all-reduce a host copy, keep this rank's part.
  std::vector<at::Tensor> io{input.to(at::kCPU, at::kFloat, /*non_blocking=*/false, /*copy=*/true)};
  c10d::AllreduceOptions opts;
  opts.reduceOp = to_c10d(op);
  auto work = groups_->gloo->allreduce(io, opts);
  const int world = rv_.world_size, rank = rv_.rank;
  return std::make_unique<PendingWork>(
      "reduce_scatter", work,
      [io, output, op, world, rank]() mutable {
        at::Tensor part = io[0].narrow(0, rank * output.numel(), output.numel());
        if (op == DSHOST_AVG) part.div_(world);
        output.copy_(part);
      },
      false);
}

std::unique_ptr<PendingWork> Comm::broadcast(const dshost_slice& s, int root) {
  at::Tensor target = view(s);
  note_collective("broadcast", target);
  const at::Tensor held =
      staged(target) ? target.to(at::kCPU, /*non_blocking=*/false, /*copy=*/true) : target;
  std::vector<at::Tensor> io{as_gloo_bits(held)};
  CollectiveBackend& group = io[0].is_cuda() ? *groups_->nccl : *groups_->gloo;
  c10d::BroadcastOptions opts;
  opts.rootRank = root;
  auto work = group.broadcast(io, opts);
  return std::make_unique<PendingWork>(
      "broadcast", work,
      [io, held, target]() mutable {
        if (!held.is_same(target)) target.copy_(held);
      },
      io[0].is_cuda());
}

// The host's own blocking reduction over gloo (`what`: "sum" or "maximum").
at::Tensor Comm::reduce_on_host(at::Tensor values, bool maximum, const char* what) {
  std::vector<at::Tensor> io{std::move(values)};
  note_collective(maximum ? "host maximum" : "host sum", io[0]);
  c10d::AllreduceOptions opts;
  opts.reduceOp = maximum ? c10d::ReduceOp::MAX : c10d::ReduceOp::SUM;
  try {
    groups_->gloo->allreduce(io, opts)->wait(timeout_);
  } catch (const std::exception& e) {
    throw stopped_by_another_rank(cat("rank ", rv_.rank, " on ", hostname(), ": a ", what,
                                      " over ranks failed: ", without_backtrace(e.what())));
  }
  return io[0];
}

std::vector<double> Comm::sum(const std::vector<double>& values) {
  const at::Tensor summed = reduce_on_host(at::tensor(values, at::kDouble), false, "sum");
  const double* p = summed.data_ptr<double>();
  return std::vector<double>(p, p + values.size());
}

double Comm::max(double value) {
  return reduce_on_host(at::tensor({value}, at::kDouble), true, "maximum").item<double>();
}

// Rank 0 runs the heartbeat hub and tells the others its port through the store.
void Comm::start_heartbeat() {
  if (rv_.rank == 0) {
    hub_ = std::make_unique<HeartbeatHub>(rv_.world_size);
    const std::string port = std::to_string(hub_->port());
    groups_->store->set("heartbeat_port", std::vector<uint8_t>(port.begin(), port.end()));
  }
  const std::vector<uint8_t> port = groups_->store->get("heartbeat_port");
  heartbeat_ = std::make_unique<Heartbeat>(
      rv_.master_addr, std::stoi(std::string(port.begin(), port.end())), rv_.rank);
}

std::string Comm::silent_ranks() const {
  const auto ranks = heartbeat_->silent_ranks();
  if (!ranks)
    return cat("rank 0 at ", rv_.master_addr, " does not answer (stopped, hung or ended)");
  std::vector<std::string> silent;
  for (const Heartbeat::SilentRank& r : *ranks)
    if (r.rank != rv_.rank)
      silent.push_back(cat(r.rank, " on host ", r.host.empty() ? "?" : r.host));
  if (silent.empty()) return "";
  return cat(silent.size() > 1 ? "ranks " : "rank ", join(silent),
             silent.size() > 1 ? " do" : " does", " not answer (stopped, hung or ended)");
}

UserError Comm::stopped_by_another_rank(const std::string& seen) const {
  const std::string silent = silent_ranks();
  return UserError(silent.empty()
                       ? cat(seen,
                             "; every rank still answers: another rank failed (its own error says "
                             "why), or the ranks wait in different collectives")
                       : cat(silent, "; ", seen),
                   kStoppedByAnotherRank);
}

}  // namespace dshost
