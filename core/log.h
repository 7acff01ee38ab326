// Logging for the host and, through the services table, for plugins. spdlog stays behind
// this header (its own library, which never sees LibTorch's bundled fmt).
#pragma once

#include <string>
#include <string_view>

namespace dshost::log {

enum class Level { debug = 0, info = 1, warn = 2, error = 3 };

// `rank` tags every line; ranks other than 0 log warnings and errors only, unless
// all_ranks is set (train.log_all_ranks).
void init(int rank, bool all_ranks);
void write(Level level, std::string_view logger, std::string_view message);

inline void info(std::string_view m) { write(Level::info, "dshost", m); }
inline void warn(std::string_view m) { write(Level::warn, "dshost", m); }
inline void error(std::string_view m) { write(Level::error, "dshost", m); }

}  // namespace dshost::log
