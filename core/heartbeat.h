// Which ranks of a job still answer. Every rank sends a beat every kBeat to a hub that rank 0
// runs; a rank the hub has not heard from within kSilence, or whose connection closed, is
// silent (stopped, hung or gone). A query's answer names the silent ranks alone, so that it
// stays small at any world size.
//
// The hub is a socket of its own, not the rendezvous store: LibTorch 1.13's TCPStore server
// reads each request to its end with blocking reads and its clients wait for answers without a
// timeout, so one rank stopped (SIGSTOP) halfway through sending a request stops the store for
// every rank. The hub reads without blocking and keeps a half-sent record until the rest
// arrives, so no rank can hold it up. It listens on a port the system picks, as gloo's pairs
// do, so it asks for no port beyond those a job already needs open between its hosts.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace dshost {

// Rank 0's hub: keeps when each rank last beat, and answers queries with the silent ones.
class HeartbeatHub {
 public:
  // Listens on every interface at a port the system picks; port() names it.
  explicit HeartbeatHub(int world_size);
  ~HeartbeatHub();
  HeartbeatHub(const HeartbeatHub&) = delete;
  HeartbeatHub& operator=(const HeartbeatHub&) = delete;
  int port() const { return port_; }

 private:
  struct Connection;
  void serve();
  bool read_records(Connection& c);  // false: the peer is gone
  void handle(Connection& c, const char* record);

  int listener_ = -1, port_ = 0;
  std::vector<std::chrono::steady_clock::time_point> last_beat_;  // the hub's start, at first
  std::vector<std::string> hosts_;
  std::atomic<bool> stopping_{false};
  std::thread serving_;
};

// One rank's side: a thread that beats, and queries of what the hub counted.
class Heartbeat {
 public:
  static constexpr std::chrono::milliseconds kBeat{100}, kSilence{400};

  struct SilentRank {
    int rank = 0;
    std::string host;  // "" where the rank never beat
  };

  // Connects to the hub at hub_host:hub_port and starts beating. Throws std::runtime_error
  // when the hub cannot be reached.
  Heartbeat(const std::string& hub_host, int hub_port, int rank);
  ~Heartbeat();
  Heartbeat(const Heartbeat&) = delete;
  Heartbeat& operator=(const Heartbeat&) = delete;

  // The silent ranks, in rank order; nullopt where the hub did not answer within a second
  // (then it is not asked again).
  std::optional<std::vector<SilentRank>> silent_ranks();

 private:
  bool send_record(int32_t kind);

  int rank_;
  std::string host_;
  int fd_ = -1;
  std::mutex mutex_;  // one record or query at a time on fd_
  std::atomic<bool> stopping_{false};
  std::thread beating_;
};

}  // namespace dshost
