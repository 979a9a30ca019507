// What every command of the `shmbus` CLI shares: exit codes, failures and
// diagnostics, stop signals, the global options and connecting, option checks,
// and the command tree that main() dispatches.
#pragma once

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "shmbus/bus.hpp"
#include "shmbus/error.hpp"

namespace shmbus::cli {

using Clock = std::chrono::steady_clock;

// ---- exit codes -------------------------------------------------------------

inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitTimeout = 2;
inline constexpr int kExitNotFound = 3;
inline constexpr int kExitDenied = 4;
inline constexpr int kExitUnavailable = 5;
inline constexpr int kExitExists = 6;        // topic create: it exists already
inline constexpr int kExitTopicDeleted = 7;  // pub/sub: the topic was deleted under us
inline constexpr int kExitInUse = 8;         // topic delete --if-unused: seats attached
inline constexpr int kExitUsage = 64;

// The exit code of a library error.
[[nodiscard]] int exit_code_of(ErrorCode c);

// ---- failures and diagnostics ---------------------------------------------------

// A failure the command line itself reports: its message and exit code.
struct Failure {
  int code;
  std::string message;
};

[[noreturn]] void fail(int code, std::string message);

// printf into a std::string.
[[nodiscard]] std::string strf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// A diagnostic on stderr, "shmbus: <message>".
void note(const std::string& message);

// ---- stop signals -----------------------------------------------------------------

// SIGINT and SIGTERM end the long-running commands cleanly: no SA_RESTART, so a
// blocking read or sleep returns EINTR and the loop sees stop_requested().
void install_stop_handlers();
[[nodiscard]] bool stop_requested();
[[nodiscard]] int signal_exit();  // 128 + the signal that came

// Sleeps until `until`, waking early for a stop signal. False if one came.
[[nodiscard]] bool sleep_until(Clock::time_point until);

// Seconds from the command line as a duration (capped at about 285 years, so the
// conversion cannot overflow).
[[nodiscard]] std::chrono::nanoseconds seconds_to_ns(double s);

// Delayed messages (pub --delay, --at; describe, stat).
// "500ms", "5s", "2m", "1.5h" (also "us", "d"): a duration; nullopt if the
// text is not a number and one of those units, or is negative or absurd.
[[nodiscard]] std::optional<std::chrono::nanoseconds> parse_duration(std::string_view text);
// RFC 3339 in UTC or with an offset: "2026-12-24T18:00:00Z",
// "2026-12-24T18:00:00.250+01:00" (a space for the T too): ns since the
// epoch; nullopt if it is not such a time.
[[nodiscard]] std::optional<std::int64_t> parse_time(std::string_view text);
// ns since the epoch as "2026-12-24T18:00:00.000Z".
[[nodiscard]] std::string format_time(std::uint64_t ns);

// ---- global options and connecting ------------------------------------------------

struct Globals {
  std::string bus = "default";
  std::string socket;
  std::string daemon;
  bool no_autospawn = false;
  long daemon_uid = -1;  // a shared bus's service account (BusOptions::daemon_uid)
};

// The global options; `in_help` false parses them without listing them (a
// subcommand's help shows its own options; `shmbus --help` shows these).
void add_globals(CLI::App* app, Globals& g, bool in_help = true);

// Connects, starting a daemon when none answers (unless --no-autospawn).
[[nodiscard]] Bus connect(const Globals& g);

// Connects without ever starting a daemon; nullopt when none answers.
[[nodiscard]] std::optional<Bus> connect_existing(const Globals& g);

// The socket the library uses: --socket, else its default for the bus.
[[nodiscard]] std::string socket_path_of(const Globals& g);

// --daemon as given to the last connect(), for the hint when autospawn failed.
[[nodiscard]] const std::string& daemon_option();

// ---- option checks ------------------------------------------------------------------

// A number above `floor` (or at least it), with a plain message (CLI11's ranges
// print the double limits).
[[nodiscard]] CLI::Validator number_above(double floor, bool inclusive);

// A start position: earliest, latest or an offset (shmbus::parse_start).
[[nodiscard]] CLI::Validator start_validator();

// ---- the command tree ------------------------------------------------------------------

// The subcommands and the action each runs; every node takes the global options.
class CommandTree {
 public:
  CommandTree(CLI::App& app, Globals& g) : app_(app), globals_(g) {}

  [[nodiscard]] CLI::App& app() { return app_; }
  [[nodiscard]] Globals& globals() { return globals_; }

  // A command that only holds subcommands (`topic`, `daemon`).
  CLI::App* group(CLI::App* parent, const std::string& name, const std::string& help);
  // A command that runs `action` when it is the one parsed.
  CLI::App* leaf(CLI::App* parent, const std::string& name, const std::string& help,
                 std::function<int()> action);

  // Runs the action of the parsed command; kExitUsage when none was.
  [[nodiscard]] int dispatch() const;

 private:
  CLI::App& app_;
  Globals& globals_;
  std::vector<std::pair<CLI::App*, std::function<int()>>> actions_;
};

}  // namespace shmbus::cli
