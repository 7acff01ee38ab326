#include "core/heartbeat.h"

#include "tests/test_util.h"

#include <dshost/plugin.hpp>  // hostname

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdint>
#include <thread>

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

TEST(Heartbeat, TheHubCountsEveryRanksBeatsAndNamesItsHost) {
  HeartbeatHub hub(3);
  Heartbeat rank0("127.0.0.1", hub.port(), 0, 3), rank1("localhost", hub.port(), 1, 3),
      rank2("127.0.0.1", hub.port(), 2, 3);
  std::this_thread::sleep_for(Heartbeat::kSilence);
  const auto before = rank1.ranks();
  std::this_thread::sleep_for(Heartbeat::kSilence);
  const auto after = rank1.ranks();
  ASSERT_TRUE(before && after);
  ASSERT_EQ(after->size(), 3u);
  for (int r = 0; r < 3; ++r) {
    EXPECT_GT((*after)[r].beats, (*before)[r].beats) << "rank " << r;
    EXPECT_EQ((*after)[r].host, hostname());
  }
}

// A rank stopped (SIGSTOP) halfway through sending a record: the hub keeps the half and
// goes on counting and answering the others; the stopped rank is the silent one.
TEST(Heartbeat, ARankStoppedHalfwayThroughARecordHoldsUpNoOne) {
  HeartbeatHub hub(2);
  const int stopped = connect_locally(hub.port());
  const uint32_t half_a_beat[2] = {htonl(1), htonl(1)};  // rank 1, a beat; its host never comes
  ASSERT_EQ(send(stopped, half_a_beat, sizeof(half_a_beat), 0), 8);
  Heartbeat rank0("127.0.0.1", hub.port(), 0, 2);
  const auto before = rank0.ranks();
  std::this_thread::sleep_for(Heartbeat::kSilence);
  const auto after = rank0.ranks();
  ASSERT_TRUE(before && after) << "the hub did not answer";
  EXPECT_GT((*after)[0].beats, (*before)[0].beats);
  EXPECT_EQ((*after)[1].beats, 0);
  EXPECT_EQ((*after)[1].host, "");
  close(stopped);
}

// A hub whose rank is stopped: the kernel still accepts the connection, nothing answers.
TEST(Heartbeat, AHubThatDoesNotAnswerIsNoAnswerAndNotAWait) {
  const test::Listener stopped_hub;
  ASSERT_GT(stopped_hub.port, 0);
  Heartbeat rank1("127.0.0.1", stopped_hub.port, 1, 2);
  EXPECT_FALSE(rank1.ranks().has_value());
  EXPECT_FALSE(rank1.ranks().has_value()) << "asked again after no answer";
}

TEST(Heartbeat, AHubThatIsNotThereIsAnError) {
  int port;
  {
    HeartbeatHub gone(1);
    port = gone.port();
  }
  EXPECT_THROW(Heartbeat("127.0.0.1", port, 0, 1), std::runtime_error);
}

}  // namespace
}  // namespace dshost
