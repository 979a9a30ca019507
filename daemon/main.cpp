// shmbusd: parses flags and configuration, then runs shmbus::daemon::Daemon.
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "daemon.hpp"
#include "keeper.hpp"
#include "shmbus/error.hpp"
#include "shmbus/version.hpp"

namespace {
shmbus::daemon::Daemon* g_daemon = nullptr;
void on_signal(int) {
  if (g_daemon != nullptr) g_daemon->stop();
}
}  // namespace

int main(int argc, char** argv) {
  // The keeper a daemon starts (keeper.hpp): `--keeper PATH INODE`, its
  // sockets descriptors 3 (to the daemon) and 4 (listening at PATH, whose
  // inode INODE is). Not an option for users.
  if (argc == 4 && std::strcmp(argv[1], "--keeper") == 0)
    return shmbus::daemon::run_keeper(argv[2], std::strtoull(argv[3], nullptr, 10), 4, 3);
  CLI::App app{
      "shmbusd: the shmbus coordinator. Creates topic regions, hands out seats,\n"
      "enforces access rules and cleans up after processes that die. Runs in the\n"
      "foreground and logs to stderr; the data path never goes through it."};
  std::string config_path, bus, socket, log_level, data_dir;
  app.add_option("-c,--config", config_path,
                 "TOML configuration file (topic defaults, access rules)")
      ->check(CLI::ExistingFile);
  app.add_option("-b,--bus", bus, "bus name (default: default)");
  app.add_option("-s,--socket", socket,
                 "socket path (default: $SHMBUS_SOCKET, $XDG_RUNTIME_DIR/shmbus/<bus>.sock or "
                 "/tmp/shmbus-<uid>/<bus>.sock)");
  app.add_option("-d,--data-dir", data_dir,
                 "directory of the file topics (default: $SHMBUS_DATA_DIR, "
                 "$XDG_STATE_HOME/shmbus/<bus> or ~/.local/state/shmbus/<bus>); "
                 "this user's, mode 0700");
  app.add_option("-l,--log-level", log_level, "trace, debug, info, warn, error (default: info)")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  app.set_version_flag("--version", std::string("shmbusd ") + shmbus::version());
  CLI11_PARSE(app, argc, argv);

  spdlog::set_default_logger(spdlog::stderr_color_mt("shmbusd"));
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ [pid %P] %v");
  try {
    shmbus::daemon::Config config;
    if (!config_path.empty()) config = shmbus::daemon::load_config(config_path);
    if (!bus.empty()) config.bus = bus;
    if (!socket.empty()) config.socket_path = socket;
    if (!log_level.empty()) config.log_level = log_level;
    if (!data_dir.empty()) config.data_dir = data_dir;
    // The keeper is this very binary (the one running, not one found on PATH).
    std::array<char, 4096> self{};
    if (const ssize_t n = ::readlink("/proc/self/exe", self.data(), self.size() - 1); n > 0)
      config.keeper_program.assign(self.data(), static_cast<std::size_t>(n));
    else
      spdlog::warn(
          "cannot find this program (/proc/self/exe: {}): no keeper, so topics do not "
          "outlive this daemon",
          std::strerror(errno));
    spdlog::set_level(spdlog::level::from_str(config.log_level));
    shmbus::daemon::Daemon daemon(config);
    daemon.start();
    g_daemon = &daemon;
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    // SIGPIPE ignored: a client gone mid-reply is an EPIPE we handle, not a
    // death. SIGXFSZ too: a file topic over RLIMIT_FSIZE is an EFBIG error
    // at its creation, not the end of the daemon.
    if (sigaction(SIGTERM, &sa, nullptr) != 0 || sigaction(SIGINT, &sa, nullptr) != 0 ||
        sigaction(SIGPIPE, &ignore, nullptr) != 0 || sigaction(SIGXFSZ, &ignore, nullptr) != 0)
      throw shmbus::Error(shmbus::ErrorCode::SystemError,
                          std::string("sigaction: ") + std::strerror(errno));
    daemon.run();
    g_daemon = nullptr;
    return 0;
  } catch (const shmbus::Error& e) {
    spdlog::error("{}", e.what());
    return e.code() == shmbus::ErrorCode::AlreadyExists ? 3 : 1;
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
}
