#include "core/heartbeat.h"

#include "tests/test_util.h"

#include <dshost/plugin.hpp>  // cat, hostname

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace dshost {
namespace {

// A TCP connection from this process to 127.0.0.1:port.
int connect_locally(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in hub{};
  hub.sin_family = AF_INET;
  hub.sin_port = htons(static_cast<uint16_t>(port));
  hub.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&hub), sizeof(hub)), 0);
  return fd;
}

// A query's answer as "rank@host, ...", or "no answer".
std::string described(const std::optional<std::vector<Heartbeat::SilentRank>>& silent) {
  if (!silent) return "no answer";
  std::string text;
  for (const Heartbeat::SilentRank& r : *silent)
    text += cat(text.empty() ? "" : ", ", r.rank, "@", r.host);
  return text;
}

// A rank's whole beat record, sent on fd from host `host`.
void send_beat(int fd, int rank, const std::string& host) {
  char record[72] = {};
  const uint32_t head[2] = {htonl(static_cast<uint32_t>(rank)), htonl(1)};
  std::memcpy(record, head, 8);
  std::memcpy(record + 8, host.data(), host.size());
  ASSERT_EQ(send(fd, record, sizeof(record), 0), 72);
}

// A rank that beat once and then stopped (its connection still open, as under SIGSTOP) is
// not silent at once; kSilence later, the hub names it and the host it beat from, and no
// other.
TEST(Heartbeat, TheHubNamesARankThatStoppedBeatingAndItsHost) {
  HeartbeatHub hub(3);
  Heartbeat rank0("127.0.0.1", hub.port(), 0), rank1("localhost", hub.port(), 1);
  const int stopped = connect_locally(hub.port());
  ASSERT_NO_FATAL_FAILURE(send_beat(stopped, 2, "stopped-host"));
  std::this_thread::sleep_for(Heartbeat::kBeat);
  EXPECT_EQ(described(rank1.silent_ranks()), "");
  std::this_thread::sleep_for(Heartbeat::kSilence);
  EXPECT_EQ(described(rank1.silent_ranks()), "2@stopped-host");
  close(stopped);
}

// A rank whose process ended (its connection closed) is silent at once, well within
// kSilence, named with its host.
TEST(Heartbeat, ARankWhoseConnectionClosedIsSilentAtOnce) {
  HeartbeatHub hub(2);
  Heartbeat rank0("127.0.0.1", hub.port(), 0);
  auto rank1 = std::make_unique<Heartbeat>("127.0.0.1", hub.port(), 1);
  std::this_thread::sleep_for(Heartbeat::kBeat);
  rank1.reset();
  std::this_thread::sleep_for(Heartbeat::kBeat);
  EXPECT_EQ(described(rank0.silent_ranks()), "1@" + hostname());
}

// The answer names the silent ranks only: of 4,096 ranks of which two beat, the other 4,094
// come back in rank order, each once, with no host (they never beat).
TEST(Heartbeat, TheAnswerHoldsTheSilentRanksAlone) {
  HeartbeatHub hub(4096);
  Heartbeat rank0("127.0.0.1", hub.port(), 0), rank4095("127.0.0.1", hub.port(), 4095);
  std::this_thread::sleep_for(Heartbeat::kSilence);
  std::string never_beat = "1@";
  for (int r = 2; r < 4095; ++r) never_beat += cat(", ", r, "@");
  EXPECT_EQ(described(rank0.silent_ranks()), never_beat);
}

// A rank stopped (SIGSTOP) halfway through sending a record: the hub keeps the half and
// goes on hearing and answering the others; the stopped rank is the silent one.
TEST(Heartbeat, ARankStoppedHalfwayThroughARecordHoldsUpNoOne) {
  HeartbeatHub hub(2);
  const int stopped = connect_locally(hub.port());
  const uint32_t half_a_beat[2] = {htonl(1), htonl(1)};  // rank 1, a beat; its host never comes
  ASSERT_EQ(send(stopped, half_a_beat, sizeof(half_a_beat), 0), 8);
  Heartbeat rank0("127.0.0.1", hub.port(), 0);
  std::this_thread::sleep_for(Heartbeat::kSilence);
  EXPECT_EQ(described(rank0.silent_ranks()), "1@");
  close(stopped);
}

// A hub whose rank is stopped: the kernel still accepts the connection, nothing answers.
TEST(Heartbeat, AHubThatDoesNotAnswerIsNoAnswerAndNotAWait) {
  const test::Listener stopped_hub;
  ASSERT_GT(stopped_hub.port, 0);
  Heartbeat rank1("127.0.0.1", stopped_hub.port, 1);
  EXPECT_FALSE(rank1.silent_ranks().has_value());
  EXPECT_FALSE(rank1.silent_ranks().has_value()) << "asked again after no answer";
}

TEST(Heartbeat, AHubThatIsNotThereIsAnError) {
  int port;
  {
    HeartbeatHub gone(1);
    port = gone.port();
  }
  EXPECT_THROW(Heartbeat("127.0.0.1", port, 0), std::runtime_error);
}

}  // namespace
}  // namespace dshost
