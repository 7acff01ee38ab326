#include "core/heartbeat.h"

#include <dshost/plugin.hpp>  // cat, hostname

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>

namespace dshost {
namespace {

// A record, rank to hub: the rank and the kind as big-endian 32-bit integers, then the
// sender's host name, NUL-padded (Linux host names are at most 64 bytes).
constexpr size_t kHostBytes = 64, kRecordBytes = 8 + kHostBytes;
constexpr int32_t kBeatRecord = 1, kQueryRecord = 2;
// The hub's answer to a query: the number of silent ranks as a big-endian 32-bit integer,
// then for each in rank order its rank the same way and its host as in records.
constexpr size_t kSilentBytes = 4 + kHostBytes;
constexpr std::chrono::milliseconds kAnswerWithin{1000};

void put_host(char* at, const std::string& host) {
  std::memset(at, 0, kHostBytes);
  std::memcpy(at, host.data(), std::min(host.size(), kHostBytes));
}
std::string host_at(const char* at) { return std::string(at, strnlen(at, kHostBytes)); }

int32_t int32_at(const char* at) {
  uint32_t v;
  std::memcpy(&v, at, 4);
  return static_cast<int32_t>(ntohl(v));
}
void put_int32(char* at, int32_t value) {
  const uint32_t v = htonl(static_cast<uint32_t>(value));
  std::memcpy(at, &v, 4);
}

// Connects a TCP socket to host:port, or throws.
int connect_to(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_INET;  // as gloo's device (comm.cc)
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int e = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found))
    throw std::runtime_error(cat("cannot resolve ", host, ": ", gai_strerror(e)));
  int fd = -1;
  for (addrinfo* a = found; a != nullptr && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(found);
  if (fd < 0)
    throw std::runtime_error(cat("cannot connect to the heartbeat hub at ", host, ":", port));
  return fd;
}

// Reads exactly `size` bytes before `deadline`; false on timeout or a closed connection.
bool read_before(int fd, char* out, size_t size, std::chrono::steady_clock::time_point deadline) {
  while (size > 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    if (left.count() <= 0 || poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    const ssize_t n = recv(fd, out, size, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return false;
    if (n > 0) {
      out += n;
      size -= static_cast<size_t>(n);
    }
  }
  return true;
}

}  // namespace

// One rank's connection to the hub: its rank once a record named it, what it sent that is
// not yet a whole record, and answers not yet sent.
struct HeartbeatHub::Connection {
  int fd;
  int rank = -1;
  std::string in, out;
};

HeartbeatHub::HeartbeatHub(int world_size)
    : last_beat_(world_size, std::chrono::steady_clock::now()), hosts_(world_size) {
  listener_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  sockaddr_in any{};
  any.sin_family = AF_INET;
  any.sin_addr.s_addr = htonl(INADDR_ANY);
  socklen_t size = sizeof(any);
  if (listener_ < 0 || bind(listener_, reinterpret_cast<sockaddr*>(&any), sizeof(any)) != 0 ||
      listen(listener_, SOMAXCONN) != 0 ||
      getsockname(listener_, reinterpret_cast<sockaddr*>(&any), &size) != 0) {
    const std::string why = std::strerror(errno);
    if (listener_ >= 0) close(listener_);
    throw std::runtime_error(cat("cannot listen for heartbeats: ", why));
  }
  port_ = ntohs(any.sin_port);
  serving_ = std::thread([this] { serve(); });
}

HeartbeatHub::~HeartbeatHub() {
  stopping_ = true;
  serving_.join();
  close(listener_);
}

void HeartbeatHub::serve() {
  std::vector<std::unique_ptr<Connection>> connections;
  while (!stopping_) {
    std::vector<pollfd> polled{{listener_, POLLIN, 0}};
    for (const auto& c : connections)
      polled.push_back({c->fd, static_cast<short>(POLLIN | (c->out.empty() ? 0 : POLLOUT)), 0});
    if (poll(polled.data(), polled.size(), 100) <= 0) continue;
    for (size_t i = 0; i < connections.size(); ++i) {
      Connection& c = *connections[i];
      bool alive = !(polled[i + 1].revents & (POLLIN | POLLHUP | POLLERR)) || read_records(c);
      if (alive && !c.out.empty()) {
        const ssize_t n = send(c.fd, c.out.data(), c.out.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) c.out.erase(0, static_cast<size_t>(n));
        alive = n >= 0 || errno == EAGAIN || errno == EINTR;
      }
      if (!alive) {  // the rank's process ended, or it closed its side: silent at once
        close(c.fd);
        c.fd = -1;
        if (c.rank >= 0) last_beat_[c.rank] = {};
      }
    }
    connections.erase(std::remove_if(connections.begin(), connections.end(),
                                     [](const auto& c) { return c->fd < 0; }),
                      connections.end());
    if (polled[0].revents & POLLIN)
      for (int fd; (fd = accept4(listener_, nullptr, nullptr, SOCK_NONBLOCK)) >= 0;)
        connections.push_back(std::make_unique<Connection>(Connection{fd}));
  }
  for (const auto& c : connections) close(c->fd);
}

bool HeartbeatHub::read_records(Connection& c) {
  char buffer[4096];
  for (;;) {
    const ssize_t n = recv(c.fd, buffer, sizeof(buffer), MSG_DONTWAIT);
    if (n > 0) {
      c.in.append(buffer, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EAGAIN) break;
    if (n == 0 || errno != EINTR) return false;
  }
  size_t used = 0;
  for (; c.in.size() - used >= kRecordBytes; used += kRecordBytes) handle(c, c.in.data() + used);
  c.in.erase(0, used);
  return true;
}

void HeartbeatHub::handle(Connection& c, const char* record) {
  const int32_t rank = int32_at(record), kind = int32_at(record + 4);
  if (rank < 0 || rank >= static_cast<int32_t>(last_beat_.size())) return;
  const auto now = std::chrono::steady_clock::now();
  if (kind == kBeatRecord) {
    c.rank = rank;
    last_beat_[rank] = now;
    hosts_[rank] = host_at(record + 8);
  } else if (kind == kQueryRecord) {
    std::string silent;
    for (size_t r = 0; r < last_beat_.size(); ++r) {
      if (now - last_beat_[r] < Heartbeat::kSilence) continue;
      silent.resize(silent.size() + kSilentBytes);
      char* at = silent.data() + silent.size() - kSilentBytes;
      put_int32(at, static_cast<int32_t>(r));
      put_host(at + 4, hosts_[r]);
    }
    char count[4];
    put_int32(count, static_cast<int32_t>(silent.size() / kSilentBytes));
    c.out.append(count, 4).append(silent);
  }
}

Heartbeat::Heartbeat(const std::string& hub_host, int hub_port, int rank)
    : rank_(rank), host_(hostname()) {
  fd_ = connect_to(hub_host, hub_port);
  const int on = 1;
  const timeval send_within{1, 0};  // a stopped hub that no longer reads must not hold a beat
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
  setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &send_within, sizeof(send_within));
  beating_ = std::thread([this] {
    while (!stopping_) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        send_record(kBeatRecord);
      }
      std::this_thread::sleep_for(kBeat);
    }
  });
}

Heartbeat::~Heartbeat() {
  stopping_ = true;
  beating_.join();
  if (fd_ >= 0) close(fd_);
}

bool Heartbeat::send_record(int32_t kind) {
  if (fd_ < 0) return false;
  char record[kRecordBytes];
  put_int32(record, rank_);
  put_int32(record + 4, kind);
  put_host(record + 8, host_);
  return send(fd_, record, sizeof(record), MSG_NOSIGNAL) == static_cast<ssize_t>(sizeof(record));
}

std::optional<std::vector<Heartbeat::SilentRank>> Heartbeat::silent_ranks() {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto deadline = std::chrono::steady_clock::now() + kAnswerWithin;
  char count[4];
  std::string silent;
  bool answered = send_record(kQueryRecord) && read_before(fd_, count, 4, deadline);
  if (answered) {
    silent.resize(kSilentBytes * static_cast<size_t>(std::max(int32_at(count), 0)));
    answered = read_before(fd_, silent.data(), silent.size(), deadline);
  }
  if (!answered) {
    if (fd_ >= 0) close(fd_);  // a late answer must not be read as the next one
    fd_ = -1;
    return std::nullopt;
  }
  std::vector<SilentRank> out;
  for (size_t at = 0; at < silent.size(); at += kSilentBytes)
    out.push_back({int32_at(silent.data() + at), host_at(silent.data() + at + 4)});
  return out;
}

}  // namespace dshost
