// Header-only C++ helpers shared by every plugin kind: errors that become ABI statuses,
// a typed wrapper over the host's services table, and the entry-point macro.
// Needs no LibTorch; launchers use it alone.
#pragma once

#include <dshost/abi.h>

#include <unistd.h>

#include <cstring>
#include <exception>
#include <new>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace dshost {

// Concatenates anything streamable: cat("sample ", 3, " of ", file).
template <class... Parts>
std::string cat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

// This machine's host name, as errors name it.
inline std::string hostname() {
  char name[256] = {};
  gethostname(name, sizeof(name) - 1);
  return name;
}

// The running program's path (the dshost binary, in the host and in its plugins).
inline std::string this_executable() {
  char path[4096] = {};
  const ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
  return n > 0 ? std::string(path, static_cast<size_t>(n)) : std::string();
}

// The items of `text` between `separator`s: "a,,b" gives a, "" and b; "" and a trailing
// separator give no item.
inline std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> items;
  std::istringstream in(text);
  for (std::string item; std::getline(in, item, separator);) items.push_back(item);
  return items;
}

// Thrown inside a plugin; turned into a status + message at the ABI boundary.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message, dshost_status status = DSHOST_INVALID_ARGUMENT)
      : std::runtime_error(message), status_(status) {}
  dshost_status status() const { return status_; }

 private:
  dshost_status status_;
};

// An exception's message without the C++ backtrace LibTorch appends to its errors: users
// get the sentence, not the stack.
inline std::string without_backtrace(const std::string& message) {
  return message.substr(0, message.find("\nException raised from "));
}

inline void write_error(dshost_error* err, const char* message) {
  if (err == nullptr) return;
  err->struct_size = sizeof(dshost_error);
  std::strncpy(err->message, without_backtrace(message).c_str(), DSHOST_ERROR_CAPACITY - 1);
  err->message[DSHOST_ERROR_CAPACITY - 1] = '\0';
}

// Runs `body` and converts any exception into a status + message: nothing escapes. An
// exception other than Error and out-of-memory returns `other`.
template <class Body>
dshost_status guarded(dshost_error* err, Body&& body,
                      dshost_status other = DSHOST_INTERNAL) noexcept {
  try {
    body();
    return DSHOST_OK;
  } catch (const Error& e) {
    write_error(err, e.what());
    return e.status();
  } catch (const std::bad_alloc&) {
    write_error(err, "out of memory");
    return DSHOST_OUT_OF_MEMORY;
  } catch (const std::exception& e) {  // (LibTorch's CUDA allocator: "CUDA out of memory. ...")
    write_error(err, e.what());
    return std::strstr(e.what(), "CUDA out of memory") ? DSHOST_OUT_OF_MEMORY : other;
  } catch (...) {
    write_error(err, "unknown exception");
    return DSHOST_INTERNAL;
  }
}

// Throws an Error carrying the host's status and message when a services call failed.
inline void check(dshost_status status, const dshost_error& err) {
  if (status != DSHOST_OK) throw Error(err.message, status);
}

// Element k of an array of ABI structs, read the first element's struct_size apart (see
// abi.h: the writer's struct may be larger than this build's).
template <class T>
const T& element(const T* array, size_t k) {
  return *reinterpret_cast<const T*>(reinterpret_cast<const char*>(array) +
                                     k * array[0].struct_size);
}

inline dshost_slice slice(int32_t buffer, int64_t offset, int64_t count) {
  return dshost_slice{sizeof(dshost_slice), buffer, offset, count};
}

// An asynchronous collective. wait() blocks until its result is in place; a Work that is
// dropped unwaited is waited for (errors then surface at the next collective).
class Work {
 public:
  Work() = default;
  Work(const dshost_services* t, dshost_work* w) : t_(t), w_(w) {}
  Work(Work&& o) noexcept : t_(o.t_), w_(o.w_) { o.w_ = nullptr; }
  Work& operator=(Work&& o) noexcept {
    if (this != &o) {
      drop();
      t_ = o.t_;
      w_ = o.w_;
      o.w_ = nullptr;
    }
    return *this;
  }
  Work(const Work&) = delete;
  Work& operator=(const Work&) = delete;
  ~Work() { drop(); }

  bool pending() const { return w_ != nullptr; }
  void wait() {
    if (w_ == nullptr) return;
    dshost_error err{};
    dshost_work* w = w_;
    w_ = nullptr;
    check(t_->wait(t_->host, w, &err), err);
  }

 private:
  void drop() noexcept {
    if (w_ == nullptr) return;
    dshost_error err{};
    t_->wait(t_->host, w_, &err);
    w_ = nullptr;
  }
  const dshost_services* t_ = nullptr;
  dshost_work* w_ = nullptr;
};

// The host's services, with C++ types. Does not own the table.
class Services {
 public:
  explicit Services(const dshost_services* table) : t_(table) {}

  const dshost_services* table() const { return t_; }
  int rank() const { return t_->rank; }
  int world_size() const { return t_->world_size; }
  int local_rank() const { return t_->local_rank; }
  int local_world_size() const { return t_->local_world_size; }
  DLDevice device() const { return t_->device; }
  dshost_precision precision() const { return t_->precision; }
  // Whether the model should run the matrix multiplies it can in fp8 (train.precision =
  // "fp8"; precision() is then bf16).
  bool fp8() const {
    return t_->struct_size >= DSHOST_STRUCT_SIZE(dshost_services, fp8) && t_->fp8 != 0;
  }
  uint64_t seed() const { return t_->seed; }
  const dshost_optimizer_config& optimizer() const { return *t_->optimizer; }

  void log(dshost_log_level level, const std::string& message) const {
    t_->log(t_->host, level, message.c_str());
  }
  void info(const std::string& message) const { log(DSHOST_LOG_INFO, message); }
  void warn(const std::string& message) const { log(DSHOST_LOG_WARN, message); }

  int64_t get_int(const char* key) const {
    int64_t v = 0;
    call(t_->get_int, key, &v);
    return v;
  }
  double get_float(const char* key) const {
    double v = 0;
    call(t_->get_float, key, &v);
    return v;
  }
  bool get_bool(const char* key) const {
    int32_t v = 0;
    call(t_->get_bool, key, &v);
    return v != 0;
  }
  std::string get_string(const char* key) const {
    const char* v = nullptr;
    call(t_->get_string, key, &v);
    return v;
  }

  // Takes ownership of `buffer` (see dshost_services.register_buffer).
  int32_t register_buffer(DLManagedTensor* buffer) const {
    dshost_error err{};
    int32_t id = -1;
    check(t_->register_buffer(t_->host, buffer, &id, &err), err);
    return id;
  }
  Work all_reduce(const dshost_slice& data, dshost_reduce_op op) const {
    return start([&](dshost_work** w, dshost_error* e) {
      return t_->all_reduce(t_->host, &data, op, w, e);
    });
  }
  Work all_gather(const dshost_slice& in, const dshost_slice& out) const {
    return start([&](dshost_work** w, dshost_error* e) {
      return t_->all_gather(t_->host, &in, &out, w, e);
    });
  }
  Work reduce_scatter(const dshost_slice& in, const dshost_slice& out, dshost_reduce_op op) const {
    return start([&](dshost_work** w, dshost_error* e) {
      return t_->reduce_scatter(t_->host, &in, &out, op, w, e);
    });
  }
  Work broadcast(const dshost_slice& data, int root) const {
    return start([&](dshost_work** w, dshost_error* e) {
      return t_->broadcast(t_->host, &data, root, w, e);
    });
  }

  void unit_event(dshost_unit_event event, int unit) const {
    dshost_error err{};
    check(t_->unit_event(t_->host, event, unit, &err), err);
  }

 private:
  template <class Start>
  Work start(Start&& fn) const {
    dshost_error err{};
    dshost_work* w = nullptr;
    check(fn(&w, &err), err);
    return Work(t_, w);
  }

  template <class Fn, class Out>
  void call(Fn fn, const char* key, Out* out) const {
    dshost_error err{};
    check(fn(t_->host, key, out, &err), err);
  }

  const dshost_services* t_;
};

}  // namespace dshost

#if defined(_GLIBCXX_USE_CXX11_ABI)
#define DSHOST_CXX11_ABI _GLIBCXX_USE_CXX11_ABI
#else
#define DSHOST_CXX11_ABI -1
#endif

// Defines the plugin's exported entry point. TORCH_VERSION_TEXT is "" for plugins that do
// not use LibTorch. OPTIONS is a static array of dshost_option (or nullptr with count 0).
#define DSHOST_DEFINE_PLUGIN(KIND, NAME, VERSION, DESCRIPTION, TORCH_VERSION_TEXT, OPTIONS, \
                             OPTION_COUNT, API)                                             \
  extern "C" DSHOST_EXPORT const dshost_plugin_descriptor* dshost_plugin_v1(void) {         \
    static const dshost_plugin_descriptor plugin = {sizeof(dshost_plugin_descriptor),       \
                                                    DSHOST_ABI_MAJOR,                       \
                                                    DSHOST_ABI_MINOR,                       \
                                                    KIND,                                   \
                                                    NAME,                                   \
                                                    VERSION,                                \
                                                    DESCRIPTION,                            \
                                                    TORCH_VERSION_TEXT,                     \
                                                    DSHOST_CXX11_ABI,                       \
                                                    OPTIONS,                                \
                                                    OPTION_COUNT,                           \
                                                    API};                                   \
    return &plugin;                                                                         \
  }

// Shorthand for one entry of a plugin's options table.
#define DSHOST_OPTION(NAME, TYPE, DEFAULT, ALLOWED, HELP) \
  dshost_option { sizeof(dshost_option), NAME, TYPE, DEFAULT, ALLOWED, 0, 0.0, 0.0, HELP }
#define DSHOST_OPTION_RANGE(NAME, TYPE, DEFAULT, MIN, MAX, HELP) \
  dshost_option { sizeof(dshost_option), NAME, TYPE, DEFAULT, nullptr, 1, MIN, MAX, HELP }
