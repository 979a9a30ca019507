// shmbus-bridge: parses flags and the configuration, then runs shmbus::bridge::Bridge.
#include <nats/nats.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "bridge.hpp"
#include "shmbus/error.hpp"

namespace {
shmbus::bridge::Bridge* g_bridge = nullptr;
void on_signal(int) {
  if (g_bridge != nullptr) g_bridge->stop();  // an atomic store: signal-safe
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "shmbus-bridge: hands local topics to NATS JetStream ([[out]]) and takes JetStream\n"
      "subjects into local topics ([[in]]), at least once, with duplicates dropped by\n"
      "JetStream's duplicate window. Runs in the foreground, logs to stderr, stops on\n"
      "SIGTERM or SIGINT. See docs/bridge.md.\n\n"
      "Exit codes: 0 stopped, 1 failed, 2 bad flags or configuration, 3 no NATS server\n"
      "answered, 4 no shmbusd or a configured topic does not exist."};
  std::string config_path, bus = "default", socket, log_level = "info";
  bool check = false;
  double status_interval = -1;
  app.add_option("-c,--config", config_path, "TOML configuration file (docs/bridge.md)")
      ->required();
  app.add_option("-b,--bus", bus, "the bus to serve")->capture_default_str();
  app.add_option("--socket", socket, "the daemon's socket (default: as every shmbus program)");
  app.add_flag("--check", check,
               "validate the configuration, that its topics exist and that NATS answers; "
               "move nothing");
  app.add_option("--status-interval", status_interval,
                 "seconds between status lines (overrides status_interval; 0: none)")
      ->check(CLI::Range(0.0, 86400.0));
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : shmbus::bridge::kExitConfig;
  }
  spdlog::set_default_logger(spdlog::stderr_color_mt("shmbus-bridge"));
  spdlog::set_level(spdlog::level::from_str(log_level));
  shmbus::bridge::Config config;
  try {
    config = shmbus::bridge::load_config(config_path);
  } catch (const shmbus::Error& e) {
    std::fprintf(stderr, "shmbus-bridge: %s\n", e.what());
    return shmbus::bridge::kExitConfig;
  }
  if (status_interval >= 0)
    config.status_interval =
        std::chrono::milliseconds(static_cast<long long>(status_interval * 1000));
  shmbus::BusOptions bo;
  bo.bus = bus;
  bo.socket_path = socket;
  int rc = 0;
  {
    shmbus::bridge::Bridge bridge(std::move(config), bo);
    if (check) {
      std::string why;
      rc = bridge.check(why);
      std::fprintf(rc == 0 ? stdout : stderr, "%s%s\n",
                   rc == 0 ? "" : "shmbus-bridge: ", why.c_str());
    } else {
      g_bridge = &bridge;
      struct sigaction sa {};
      sa.sa_handler = on_signal;
      sigemptyset(&sa.sa_mask);
      ::sigaction(SIGTERM, &sa, nullptr);
      ::sigaction(SIGINT, &sa, nullptr);
      ::signal(SIGPIPE, SIG_IGN);
      rc = bridge.run();
      g_bridge = nullptr;
    }
  }
  nats_Close();  // waits for nats.c's threads
  return rc;
}
