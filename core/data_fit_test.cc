// Images as data.channels and data.image_size present them (core/data_fit.h); the refusals
// themselves are tested through the command line (tests/cli_errors_test.cc).
#include "core/data_fit.h"

#include <gtest/gtest.h>

namespace dshost {
namespace {

TEST(DataFit, ImagesArePresentedAtTheConfiguredChannelsAndSize) {
  const std::vector<int64_t> grey28{1, 28, 28};
  EXPECT_EQ(presented_shape(grey28, true, 0, 0), grey28);
  EXPECT_EQ(presented_shape(grey28, true, 3, 0), (std::vector<int64_t>{3, 28, 28}));
  EXPECT_EQ(presented_shape(grey28, true, 3, 224), (std::vector<int64_t>{3, 224, 224}));
  EXPECT_EQ(presented_shape({1024}, false, 3, 224), (std::vector<int64_t>{1024}))
      << "tokens as they are";
}

}  // namespace
}  // namespace dshost
