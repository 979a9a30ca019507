// shmbus daemon status | stop: ask after the bus's shmbusd, or stop it. Neither
// ever starts a daemon.
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "../output.hpp"
#include "commands.hpp"
#include "os.hpp"

namespace shmbus::cli {
namespace {

using namespace std::chrono_literals;

int cmd_status(const Globals& g) {
  auto bus = connect_existing(g);
  if (!bus) {
    note("no shmbusd answers for bus '" + g.bus + "' on " + socket_path_of(g) +
         " (not running); start one with: shmbusd --bus " + g.bus +
         (g.socket.empty() ? std::string() : " --socket " + g.socket) +
         ", or let any other shmbus command autospawn it");
    return kExitError;
  }
  const auto topics = bus->topics();
  std::printf("shmbusd is running\n");
  print_table({{"bus:", g.bus},
               {"socket:", bus->socket_path()},
               {"pid:", std::to_string(bus->daemon_pid())},
               {"topics:", std::to_string(topics.size())}});
  return kExitOk;
}

int cmd_stop(const Globals& g, double wait_seconds) {
  auto bus = connect_existing(g);
  if (!bus)
    fail(kExitUnavailable, "no shmbusd answers for bus '" + g.bus + "' on " + socket_path_of(g) +
                               "; nothing to stop");
  const std::string path = bus->socket_path();
  const int pid = bus->daemon_pid();
  bus->shutdown_daemon();
  bus.reset();
  // The daemon replies, then leaves its loop, removes its socket and exits:
  // wait for that, so that a following `daemon status` sees it gone.
  const auto until = Clock::now() + seconds_to_ns(wait_seconds);
  while (pid > 0 ? detail::process_alive(pid) : detail::socket_answers(path)) {
    if (Clock::now() >= until)
      fail(kExitError, strf("asked shmbusd (pid %d) to stop, but it is still there after %gs", pid,
                            wait_seconds));
    std::this_thread::sleep_for(20ms);  // polling: the daemon is not our child, no exit event
  }
  // A client of the bus that may autospawn starts a new daemon as soon as the
  // old one is gone. Say so, rather than claim the bus has no daemon now.
  if (detail::socket_answers(path)) {
    if (auto again = connect_existing(g); again && again->daemon_pid() != pid)
      fail(kExitError,
           strf("stopped shmbusd (pid %d), but a client of bus '%s' started a new one at once "
                "(pid %d); stop the bus's clients first, or run them with --no-autospawn "
                "(SHMBUS_NO_AUTOSPAWN=1)",
                pid, g.bus.c_str(), again->daemon_pid()));
  }
  std::printf("stopped shmbusd (pid %d) of bus '%s' on %s\n", pid, g.bus.c_str(), path.c_str());
  return kExitOk;
}

}  // namespace

void add_daemon_commands(CommandTree& tree) {
  const Globals& g = tree.globals();
  CLI::App* daemon = tree.group(&tree.app(), "daemon", "ask after or stop the bus's shmbusd");
  tree.leaf(daemon, "status",
            "print the daemon's socket, pid and topic count (never starts one; exit 1 if none "
            "answers)",
            [&g] { return cmd_status(g); });
  auto stop_wait = std::make_shared<double>(10);
  CLI::App* stop = tree.leaf(daemon, "stop", "stop the daemon (never starts one)",
                             [&g, stop_wait] { return cmd_stop(g, *stop_wait); });
  stop->add_option("--wait", *stop_wait, "seconds to wait for the daemon to go away (default: 10)")
      ->check(number_above(0, true));
}

}  // namespace shmbus::cli
