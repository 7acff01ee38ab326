// What a test needs, declared beside its suite; ctest's labels come from here (the test
// binary writes ctest's file after each build: tests/test_main.cc).
//   unit (the default): fast, runs anywhere, in parallel.
//   slow: trains whole runs, tens of seconds each; run one at a time.
//   gpu:  needs a CUDA device (and skips without one); run one at a time.
// A test whose parameter names the device "cuda" (".../zero2_cuda", ".../cuda") is labelled
// gpu whatever its suite's label.
#pragma once

#include <gtest/gtest.h>

#include <string>

namespace dshost::test {

enum class Label { unit, slow, gpu };

bool label_suite(const char* suite, Label label);
Label label_of(const testing::TestInfo& test);
std::string label_name(Label label);

}  // namespace dshost::test

#define DSHOST_SUITE_LABEL(suite, label)                          \
  [[maybe_unused]] static const bool dshost_suite_label_##suite = \
      ::dshost::test::label_suite(#suite, ::dshost::test::Label::label)
