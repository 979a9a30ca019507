#include "common.hpp"

#include <signal.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>

#include "os.hpp"
#include "shmbus/options.hpp"

namespace shmbus::cli {

using namespace std::chrono_literals;

int exit_code_of(ErrorCode c) {
  switch (c) {
    case ErrorCode::NotFound:
      return kExitNotFound;
    case ErrorCode::PermissionDenied:
      return kExitDenied;
    case ErrorCode::DaemonUnavailable:
      return kExitUnavailable;
    case ErrorCode::AlreadyExists:
      return kExitExists;
    case ErrorCode::InvalidArgument:
      return kExitUsage;  // a bad value, wherever it is found (here or by the library)
    case ErrorCode::InUse:
      return kExitInUse;
    default:
      return kExitError;
  }
}

void fail(int code, std::string message) {
  throw Failure{code, std::move(message)};
}

std::string strf(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  va_list ap2;
  va_copy(ap2, ap);
  const int n = std::vsnprintf(nullptr, 0, fmt, ap);
  va_end(ap);
  std::string out(n > 0 ? static_cast<std::size_t>(n) : 0, '\0');
  if (n > 0) std::vsnprintf(out.data(), out.size() + 1, fmt, ap2);
  va_end(ap2);
  return out;
}

void note(const std::string& message) {
  std::fflush(stdout);
  std::fprintf(stderr, "shmbus: %s\n", message.c_str());
}

// ---- stop signals -----------------------------------------------------------------

namespace {

volatile std::sig_atomic_t g_signal = 0;

extern "C" void on_stop_signal(int sig) {
  g_signal = sig;
}

}  // namespace

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  if (sigemptyset(&sa.sa_mask) != 0) fail(kExitError, "sigemptyset: " + detail::errno_text(errno));
  sa.sa_flags = 0;
  for (const int sig : {SIGINT, SIGTERM})
    if (sigaction(sig, &sa, nullptr) != 0)
      fail(kExitError,
           "cannot handle signal " + std::to_string(sig) + ": " + detail::errno_text(errno));
}

bool stop_requested() {
  return g_signal != 0;
}

int signal_exit() {
  return 128 + static_cast<int>(g_signal);
}

bool sleep_until(Clock::time_point until) {
  while (!stop_requested()) {
    const auto now = Clock::now();
    if (now >= until) return true;
    const auto d = std::min<Clock::duration>(until - now, 100ms);
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
    timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
    // EINTR (a stop signal) is the expected early return; the loop re-checks.
    (void)::nanosleep(&ts, nullptr);
  }
  return false;
}

std::chrono::nanoseconds seconds_to_ns(double s) {
  return std::chrono::nanoseconds(static_cast<std::int64_t>(std::clamp(s, 0.0, 9e9) * 1e9));
}

// ---- global options and connecting ------------------------------------------------

namespace {

std::string g_daemon_option;

BusOptions bus_options(const Globals& g, bool may_spawn) {
  BusOptions o;
  o.bus = g.bus;
  o.socket_path = g.socket;
  o.daemon_path = g.daemon;
  o.autospawn = may_spawn && !g.no_autospawn;
  o.daemon_uid = g.daemon_uid;
  return o;
}

}  // namespace

void add_globals(CLI::App* app, Globals& g, bool in_help) {
  const std::string group = in_help ? "Global options" : "";  // "": parsed, not shown
  app->add_option("--bus", g.bus, "bus name (default: default)")->group(group);
  app->add_option("--socket", g.socket,
                  "shmbusd socket (default: $SHMBUS_SOCKET, $XDG_RUNTIME_DIR/shmbus/<bus>.sock "
                  "or /tmp/shmbus-<uid>/<bus>.sock)")
      ->group(group);
  app->add_flag("--no-autospawn", g.no_autospawn,
                "never start shmbusd when none answers (also SHMBUS_NO_AUTOSPAWN=1)")
      ->group(group);
  app->add_option("--daemon", g.daemon,
                  "shmbusd binary to autospawn (default: $SHMBUS_DAEMON, shmbusd beside this "
                  "program or in its build tree, then PATH)")
      ->group(group);
  app->add_option("--daemon-uid", g.daemon_uid,
                  "also trust a daemon of this uid (a bus shared through a service account; "
                  "default: only yours or root's; also SHMBUS_DAEMON_UID)")
      ->check(CLI::Range(0L, static_cast<long>(INT_MAX)))
      ->group(group);
}

Bus connect(const Globals& g) {
  g_daemon_option = g.daemon;
  return Bus::connect(bus_options(g, true));
}

std::optional<Bus> connect_existing(const Globals& g) {
  try {
    return Bus::connect(bus_options(g, false));
  } catch (const Error& e) {
    if (e.code() != ErrorCode::DaemonUnavailable) throw;
    return std::nullopt;
  }
}

std::string socket_path_of(const Globals& g) {
  return g.socket.empty() ? detail::default_socket_path(g.bus) : g.socket;
}

const std::string& daemon_option() {
  return g_daemon_option;
}

// ---- option checks ------------------------------------------------------------------

CLI::Validator number_above(double floor, bool inclusive) {
  return CLI::Validator(
      [floor, inclusive](std::string& s) -> std::string {
        char* end = nullptr;
        errno = 0;
        const double v = std::strtod(s.c_str(), &end);
        if (s.empty() || end == nullptr || *end != '\0' || errno == ERANGE || v != v)
          return "'" + s + "' is not a number";
        if (inclusive ? v >= floor : v > floor) return {};
        return strf("must be %s %g, not %s", inclusive ? "at least" : "greater than", floor,
                    s.c_str());
      },
      inclusive ? strf(">= %g", floor) : strf("> %g", floor));
}

CLI::Validator start_validator() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        if (parse_start(s)) return {};
        return "must be " + std::string(kStartNames) + " (a sequence number), not '" + s + "'";
      },
      "earliest|latest|OFFSET");
}

// ---- the command tree ------------------------------------------------------------------

CLI::App* CommandTree::group(CLI::App* parent, const std::string& name, const std::string& help) {
  CLI::App* c = parent->add_subcommand(name, help);
  c->require_subcommand(1);
  add_globals(c, globals_, false);
  return c;
}

CLI::App* CommandTree::leaf(CLI::App* parent, const std::string& name, const std::string& help,
                            std::function<int()> action) {
  CLI::App* c = parent->add_subcommand(name, help);
  add_globals(c, globals_, false);
  actions_.emplace_back(c, std::move(action));
  return c;
}

int CommandTree::dispatch() const {
  for (const auto& [cmd, action] : actions_)
    if (cmd->parsed()) return action();
  return kExitUsage;  // require_subcommand makes this unreachable
}

}  // namespace shmbus::cli
