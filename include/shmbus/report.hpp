// Component reports: the counters of a program beside the bus (shmbus-bridge,
// say) that `shmbus stat` shows next to the topics. A program sends them with
// Bus::report; shmbusd keeps them per connection, so they go when the
// program's Bus closes or the program dies (docs/daemon.md, "Component
// reports"); Bus::reports lists everyone's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace shmbus {

// Counters in one report.
inline constexpr std::size_t kMaxReportCounters = 32;
// Reports (distinct names) one Bus connection may hold in shmbusd.
inline constexpr std::size_t kMaxReportsPerConnection = 16;
// Reports one shmbusd holds, from all connections together.
inline constexpr std::size_t kMaxReports = 256;
// Bytes those reports may take as shmbusd lists them (the sum of each one's
// encoded size: names, kind, counters and 20 bytes of pid, uid, time and
// count). shmbusd never waits for a client, so the whole list must fit a Unix
// socket's send buffer (212992 bytes by default): 256 reports of up to 512
// bytes (8 counters of 30-character names take about 370), or 52 of the
// largest (32 counters of 63-character names: 2486 bytes).
inline constexpr std::size_t kMaxReportBytes = 128 * 1024;

struct ReportCounter {
  std::string name;
  std::uint64_t value = 0;
  bool operator==(const ReportCounter&) const = default;
};

struct ComponentReport {
  std::string name, kind;
  // The reporting process's, as the kernel told shmbusd (SO_PEERCRED of its
  // connection), not as the reporter claims.
  std::uint32_t pid = 0, uid = 0;
  // When shmbusd received the report: system clock, ns since the epoch.
  std::uint64_t updated_ns = 0;
  std::vector<ReportCounter> counters;  // in the order reported
  bool operator==(const ComponentReport&) const = default;
};

// Throws shmbus::Error(InvalidArgument) saying which part is wrong and what is
// allowed. The name, the kind and each counter's name follow the rule of topic
// names (1 to 63 characters from A-Z a-z 0-9 . _ -); at most
// kMaxReportCounters counters, no counter name twice.
void validate_report(std::string_view name, std::string_view kind,
                     std::span<const ReportCounter> counters);

}  // namespace shmbus
