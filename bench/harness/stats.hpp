// Statistics of the harness: exact percentiles of latency samples, an
// HDR-style histogram small enough to live in shared memory, the spread of a
// set of figures (median, quartiles, range) and the rates of repeated runs.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace shmbus_bench {

// One-way latency statistics, ns.
struct LatencyStats {
  std::uint64_t rounds = 0;
  double min = 0, p50 = 0, p99 = 0, p999 = 0, max = 0;
};

// An HDR-style log-bucketed histogram of nanosecond samples: exact below 128,
// then 64 linear sub-buckets per power of two (at most 1/64 = 1.6% wide), up
// to 2^40 ns. Fixed size, no allocation: it lives in the control block.
struct LogHistogram {
  static constexpr int kSubBits = 6;
  static constexpr std::uint64_t kSub = 1ULL << kSubBits;  // 64
  static constexpr std::uint64_t kExact = 2 * kSub;        // values below are exact
  static constexpr int kMaxBit = 40;                       // values >= 2^40 are clamped
  static constexpr std::size_t kBuckets = kExact + (kMaxBit - kSubBits - 1) * kSub;
  std::uint64_t counts[kBuckets];
  std::uint64_t total;
  double scale;  // multiply a bucket's bounds by this to get ns (0.5: round trips as one way)

  static std::size_t index(std::uint64_t v) noexcept {
    if (v < kExact) return static_cast<std::size_t>(v);
    if (v >= (1ULL << kMaxBit)) v = (1ULL << kMaxBit) - 1;
    const int top = 63 - __builtin_clzll(v);  // >= kSubBits + 1
    const std::uint64_t sub = (v >> (top - kSubBits)) & (kSub - 1);
    return static_cast<std::size_t>(kExact + static_cast<std::uint64_t>(top - kSubBits - 1) * kSub +
                                    sub);
  }
  // The bucket's smallest value and its width (raw units, before scale).
  static std::uint64_t lower(std::size_t i) noexcept {
    if (i < kExact) return i;
    const std::uint64_t k = (i - kExact) / kSub, sub = (i - kExact) % kSub;
    return (kSub + sub) << (k + 1);
  }
  static std::uint64_t width(std::size_t i) noexcept {
    return i < kExact ? 1 : 1ULL << ((i - kExact) / kSub + 1);
  }
  void clear(double s) noexcept {
    std::memset(counts, 0, sizeof counts);
    total = 0;
    scale = s;
  }
  void record(std::uint64_t v) noexcept {
    ++counts[index(v)];
    ++total;
  }
  // The non-empty buckets as [lower ns, upper ns, count].
  [[nodiscard]] std::vector<std::array<double, 3>> buckets() const;
};
static_assert(std::is_trivially_copyable_v<LogHistogram>);

// Exact percentiles of the samples (sorted here; nearest rank), scaled by
// `scale` (0.5: the samples are round trips and the figures one way). Also
// fills `hist`, when given, with the same samples.
LatencyStats one_way_stats(std::vector<std::uint64_t>& samples, double scale = 0.5,
                           LogHistogram* hist = nullptr);

// The spread of a set of figures: median, quartiles and range. A quantile q
// is the value at rank round(q * (n - 1)) of the sorted figures.
struct Spread {
  std::size_t n = 0;
  double median = 0, q1 = 0, q3 = 0, min = 0, max = 0;
};
Spread spread_of(std::vector<double> v);

// Repeated runs of one streaming row: `count` messages each, one duration per run.
struct RunRates {
  std::uint64_t count = 0;
  std::vector<double> seconds;

  [[nodiscard]] double rate(double s) const { return s > 0 ? static_cast<double>(count) / s : 0; }
  // The median run by rate (the lower middle one for an even number of runs):
  // its index in `seconds` (0 when there is none) and its rate.
  [[nodiscard]] std::size_t median_index() const;
  [[nodiscard]] double median_rate() const;
  [[nodiscard]] double min_rate() const;
  [[nodiscard]] double max_rate() const;
};

}  // namespace shmbus_bench
