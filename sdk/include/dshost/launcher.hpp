// Launcher plugins: derive from dshost::Launcher and export with DSHOST_LAUNCHER_PLUGIN.
// Needs no LibTorch.
#pragma once

#include <dshost/plugin.hpp>

#include <string>
#include <vector>

namespace dshost {

class Launcher {
 public:
  explicit Launcher(const Services& services) : services_(services) {}
  virtual ~Launcher() = default;

  struct Outcome {
    int exit_code = 0;    // 0, or the first failing rank's code (128 + signal if killed)
    std::string failure;  // names the rank and host when exit_code != 0
  };
  // Runs `argv` as every rank (with `env` added) until all end; see dshost_launcher_api.
  virtual Outcome launch(const std::vector<std::string>& argv,
                         const std::vector<std::string>& env) = 0;

  const Services& services() const { return services_; }

 private:
  Services services_;
};

inline std::vector<std::string> to_strings(const char* const* list) {
  std::vector<std::string> out;
  for (; list != nullptr && *list != nullptr; ++list) out.emplace_back(*list);
  return out;
}

template <class L>
const dshost_launcher_api* launcher_api() {
  static const dshost_launcher_api api = {
      sizeof(dshost_launcher_api),
      [](const dshost_services* t, dshost_launcher** out, dshost_error* err) {
        return guarded(err,
                       [&] { *out = reinterpret_cast<dshost_launcher*>(new L(Services(t))); });
      },
      [](dshost_launcher* l) { delete reinterpret_cast<L*>(l); },
      [](dshost_launcher* l, const dshost_launch_request* request, int32_t* exit_code,
         dshost_error* err) {
        Launcher::Outcome outcome;
        const dshost_status status = guarded(err, [&] {
          outcome = reinterpret_cast<L*>(l)->launch(to_strings(request->argv),
                                                    to_strings(request->env));
        });
        if (status != DSHOST_OK) return status;
        *exit_code = outcome.exit_code;
        if (outcome.exit_code == 0) return DSHOST_OK;
        write_error(err, outcome.failure.c_str());
        return DSHOST_RANK_FAILED;
      },
  };
  return &api;
}

}  // namespace dshost

#define DSHOST_LAUNCHER_PLUGIN(CLASS, NAME, VERSION, DESCRIPTION, OPTIONS, OPTION_COUNT) \
  DSHOST_DEFINE_PLUGIN(DSHOST_KIND_LAUNCHER, NAME, VERSION, DESCRIPTION, "", OPTIONS,    \
                       OPTION_COUNT, ::dshost::launcher_api<CLASS>())
