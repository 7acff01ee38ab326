// Fixtures for tests against real cluster software started by the test itself:
// two ssh hosts in network namespaces (tests/cluster/ssh-hosts.sh) and a single-node Slurm
// cluster (tests/cluster/slurm-cluster.sh). Both need root; elsewhere the tests are skipped.
#pragma once

#include "tests/test_util.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

namespace dshost::test {

// Hosts 10.231.0.1 and 10.231.0.2, each with its own sshd; ssh_args() lets ssh log in.
class SshHostsTest : public testing::Test {
 protected:
  static constexpr const char* kHostA = "10.231.0.1";
  static constexpr const char* kHostB = "10.231.0.2";

  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: network namespaces and sshd";
    dir_ = scratch_dir("ssh_hosts_" +
                       std::string(testing::UnitTest::GetInstance()->current_test_info()->name()));
    const Ran up = run({"/bin/sh", script(), "up", dir_});
    ASSERT_EQ(up.exit_code, 0) << up.out << up.err;
  }
  void TearDown() override {
    if (!dir_.empty()) run({"/bin/sh", script(), "down", dir_});
  }

  // --set values for the ssh launcher: this hostfile, this test's keys and known hosts.
  std::vector<std::string> ssh_sets(const std::string& hostfile_text) const {
    const std::string hostfile = write_file(dir_ + "/hostfile", hostfile_text);
    return {"--set", "launcher.hostfile=\"" + hostfile + "\"", "--set",
            "launcher.ssh_args=\"-F " + dir_ + "/ssh_config\""};
  }

  std::string dir_;

 private:
  static std::string script() {
    return std::string(DSHOST_SOURCE_DIR) + "/tests/cluster/ssh-hosts.sh";
  }
};

// munged, slurmctld and slurmd for this machine; SLURM_CONF points every client at them.
// The cluster lives in one short fixed directory: slurmd's sockets there must fit in 108
// bytes, and each test's start brings down what a test killed by ctest's timeout left.
class SlurmClusterTest : public testing::Test {
 protected:
  static constexpr const char* kClusterDir = "/tmp/dshost-slurm-test";

  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: the Slurm daemons";
    dir_ = scratch_dir("slurm_" +
                       std::string(testing::UnitTest::GetInstance()->current_test_info()->name()));
    const Ran up = run({"/bin/sh", script(), "up", kClusterDir});
    ASSERT_EQ(up.exit_code, 0) << up.out << up.err;
    setenv("SLURM_CONF", (std::string(kClusterDir) + "/slurm.conf").c_str(), 1);
  }
  void TearDown() override {
    unsetenv("SLURM_CONF");
    if (!dir_.empty()) run({"/bin/sh", script(), "down", kClusterDir});
  }

  std::string dir_;  // this test's own files: manifests' output, job logs

 private:
  static std::string script() {
    return std::string(DSHOST_SOURCE_DIR) + "/tests/cluster/slurm-cluster.sh";
  }
};

}  // namespace dshost::test
