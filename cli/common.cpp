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
#include <ctime>

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
    case ErrorCode::Timeout:
      return kExitTimeout;
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

std::optional<std::chrono::nanoseconds> parse_duration(std::string_view text) {
  static constexpr std::pair<std::string_view, double> kUnits[] = {
      {"ms", 1e6}, {"us", 1e3}, {"s", 1e9}, {"m", 60e9}, {"h", 3600e9}, {"d", 86400e9}};
  for (const auto& [unit, ns] : kUnits) {
    if (text.size() <= unit.size() || !text.ends_with(unit)) continue;
    const std::string number(text.substr(0, text.size() - unit.size()));
    // Digits and at most one '.': no sign, exponent, "inf" or "nan".
    if (number.find_first_not_of("0123456789.") != std::string::npos ||
        std::count(number.begin(), number.end(), '.') > 1 || number == ".")
      return std::nullopt;
    const double v = std::strtod(number.c_str(), nullptr) * ns;
    if (v > 9e18) return std::nullopt;  // about 285 years
    return std::chrono::nanoseconds(static_cast<std::int64_t>(v));
  }
  return std::nullopt;
}

std::optional<std::int64_t> parse_time(std::string_view t) {
  // YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)
  const auto digits = [&](std::size_t at, std::size_t n, int& out) {
    if (at + n > t.size()) return false;
    out = 0;
    for (std::size_t i = at; i < at + n; ++i) {
      if (t[i] < '0' || t[i] > '9') return false;
      out = out * 10 + (t[i] - '0');
    }
    return true;
  };
  int year = 0, mon = 0, day = 0, hour = 0, min = 0, sec = 0;
  if (!digits(0, 4, year) || t.size() < 20 || t[4] != '-' || !digits(5, 2, mon) || t[7] != '-' ||
      !digits(8, 2, day) || (t[10] != 'T' && t[10] != 't' && t[10] != ' ') ||
      !digits(11, 2, hour) || t[13] != ':' || !digits(14, 2, min) || t[16] != ':' ||
      !digits(17, 2, sec))
    return std::nullopt;
  if (mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60)
    return std::nullopt;
  std::size_t at = 19;
  std::int64_t frac_ns = 0;
  if (at < t.size() && t[at] == '.') {
    std::int64_t scale = 100'000'000;
    ++at;
    const std::size_t first = at;
    for (; at < t.size() && t[at] >= '0' && t[at] <= '9'; ++at, scale /= 10)
      frac_ns += (t[at] - '0') * scale;
    if (at == first) return std::nullopt;
  }
  std::int64_t offset_s = 0;
  if (at < t.size() && (t[at] == 'Z' || t[at] == 'z')) {
    ++at;
  } else if (at < t.size() && (t[at] == '+' || t[at] == '-')) {
    int oh = 0, om = 0;
    if (!digits(at + 1, 2, oh) || at + 3 >= t.size() || t[at + 3] != ':' ||
        !digits(at + 4, 2, om) || oh > 23 || om > 59)
      return std::nullopt;
    offset_s = (t[at] == '+' ? 1 : -1) * (oh * 3600 + om * 60);
    at += 6;
  } else {
    return std::nullopt;  // a time without a zone is ambiguous
  }
  if (at != t.size()) return std::nullopt;
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = mon - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = min;
  tm.tm_sec = sec;
  const std::int64_t secs = static_cast<std::int64_t>(::timegm(&tm)) - offset_s;
  if (tm.tm_mday != day) return std::nullopt;  // timegm normalised a 31st of a short month
  return secs * 1'000'000'000 + frac_ns;
}

std::string format_time(std::uint64_t ns) {
  const auto secs = static_cast<time_t>(ns / 1'000'000'000u);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  char out[48];
  std::snprintf(out, sizeof out, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<unsigned>(ns % 1'000'000'000u / 1'000'000u));
  return out;
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
