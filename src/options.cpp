#include "shmbus/options.hpp"

#include <charconv>
#include <string>

#include "shmbus/version.hpp"

namespace shmbus {

const char* version() noexcept {
  return SHMBUS_VERSION;
}

namespace {

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char c = a[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != b[i]) return false;
  }
  return true;
}

}  // namespace

std::string_view to_string(Policy p) noexcept {
  switch (p) {
    case Policy::Block:
      return "block";
    case Policy::Reject:
      return "reject";
    case Policy::Overwrite:
      return "overwrite";
  }
  return "unknown";
}

std::string_view to_string(WaitStrategy w) noexcept {
  switch (w) {
    case WaitStrategy::BusySpin:
      return "busy_spin";
    case WaitStrategy::SpinYield:
      return "spin_yield";
    case WaitStrategy::SpinFutex:
      return "spin_futex";
  }
  return "unknown";
}

std::string_view to_string(StartFrom s) noexcept {
  switch (s) {
    case StartFrom::Latest:
      return "latest";
    case StartFrom::Earliest:
      return "earliest";
    case StartFrom::Offset:
      return "offset";
  }
  return "unknown";
}

std::string_view to_string(GroupMode m) noexcept {
  switch (m) {
    case GroupMode::Shared:
      return "shared";
    case GroupMode::Partitioned:
      return "partitioned";
  }
  return "unknown";
}

std::optional<GroupMode> parse_group_mode(std::string_view s) noexcept {
  for (const GroupMode m : {GroupMode::Shared, GroupMode::Partitioned})
    if (iequals(s, to_string(m))) return m;
  return std::nullopt;
}

std::string_view to_string(Delivery d) noexcept {
  switch (d) {
    case Delivery::AtMostOnce:
      return "at_most_once";
    case Delivery::AtLeastOnce:
      return "at_least_once";
  }
  return "unknown";
}

std::optional<Delivery> parse_delivery(std::string_view s) noexcept {
  std::string t(s);
  for (char& c : t)
    if (c == '-') c = '_';
  for (const Delivery d : {Delivery::AtMostOnce, Delivery::AtLeastOnce})
    if (iequals(t, to_string(d))) return d;
  return std::nullopt;
}

std::string_view to_string(Storage s) noexcept {
  switch (s) {
    case Storage::Memory:
      return "memory";
    case Storage::File:
      return "file";
  }
  return "unknown";
}

std::optional<Storage> parse_storage(std::string_view s) noexcept {
  for (const Storage v : {Storage::Memory, Storage::File})
    if (iequals(s, to_string(v))) return v;
  return std::nullopt;
}

std::optional<std::chrono::milliseconds> parse_flush(std::string_view s) noexcept {
  if (iequals(s, "none")) return std::chrono::milliseconds(0);
  constexpr std::string_view kPrefix = "interval:";
  if (s.size() <= kPrefix.size() || !iequals(s.substr(0, kPrefix.size()), kPrefix))
    return std::nullopt;
  s.remove_prefix(kPrefix.size());
  std::uint64_t v = 0;
  const char* end = s.data() + s.size();
  const auto [p, ec] = std::from_chars(s.data(), end, v);
  if (ec != std::errc{} || p == s.data() || v == 0) return std::nullopt;
  const std::string_view unit(p, static_cast<std::size_t>(end - p));
  std::uint64_t scale = 0;
  if (unit.empty() || iequals(unit, "ms"))
    scale = 1;
  else if (iequals(unit, "s"))
    scale = 1000;
  else if (iequals(unit, "m"))
    scale = 60'000;
  else
    return std::nullopt;
  const auto max = static_cast<std::uint64_t>(kMaxFlushInterval.count());
  if (v > max / scale) return std::nullopt;
  return std::chrono::milliseconds(static_cast<std::int64_t>(v * scale));
}

std::string flush_name(std::chrono::milliseconds interval) {
  if (interval.count() <= 0) return "none";
  return "interval:" + std::to_string(interval.count()) + "ms";
}

std::optional<Policy> parse_policy(std::string_view s) noexcept {
  for (const Policy p : {Policy::Block, Policy::Reject, Policy::Overwrite})
    if (iequals(s, to_string(p))) return p;
  return std::nullopt;
}

std::optional<WaitStrategy> parse_wait_strategy(std::string_view s) noexcept {
  for (const WaitStrategy w :
       {WaitStrategy::BusySpin, WaitStrategy::SpinYield, WaitStrategy::SpinFutex})
    if (iequals(s, to_string(w))) return w;
  if (iequals(s, "busy")) return WaitStrategy::BusySpin;
  if (iequals(s, "yield")) return WaitStrategy::SpinYield;
  if (iequals(s, "futex")) return WaitStrategy::SpinFutex;
  return std::nullopt;
}

std::optional<StartPosition> parse_start(std::string_view s) noexcept {
  if (iequals(s, "earliest")) return StartPosition{StartFrom::Earliest, 0};
  if (iequals(s, "latest")) return StartPosition{StartFrom::Latest, 0};
  std::uint64_t v = 0;
  const char* end = s.data() + s.size();
  const auto [p, ec] = std::from_chars(s.data(), end, v);
  if (s.empty() || ec != std::errc{} || p != end) return std::nullopt;
  return StartPosition{StartFrom::Offset, v};
}

}  // namespace shmbus
