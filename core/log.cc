#include "core/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <mutex>

namespace dshost::log {
namespace {

std::mutex g_mutex;
std::shared_ptr<spdlog::logger> g_logger;

spdlog::level::level_enum to_spdlog(Level level) {
  switch (level) {
    case Level::debug:
      return spdlog::level::debug;
    case Level::info:
      return spdlog::level::info;
    case Level::warn:
      return spdlog::level::warn;
    case Level::error:
      return spdlog::level::err;
  }
  return spdlog::level::info;
}

std::shared_ptr<spdlog::logger> logger() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!g_logger) {
    g_logger = spdlog::stderr_color_mt("dshost-host");
    g_logger->set_pattern("%H:%M:%S %^%l%$ %v");
  }
  return g_logger;
}

}  // namespace

void init(int rank, bool all_ranks) {
  auto l = logger();
  l->set_pattern("%H:%M:%S %^%l%$ %v");
  l->set_level(rank == 0 || all_ranks ? spdlog::level::info : spdlog::level::warn);
}

void write(Level level, std::string_view name, std::string_view message) {
  logger()->log(to_spdlog(level), "[{}] {}", name, message);
}

}  // namespace dshost::log
