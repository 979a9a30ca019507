#include "stats.hpp"

#include <algorithm>
#include <cmath>

namespace shmbus_bench {

std::vector<std::array<double, 3>> LogHistogram::buckets() const {
  std::vector<std::array<double, 3>> out;
  for (std::size_t i = 0; i < kBuckets; ++i)
    if (counts[i])
      out.push_back({static_cast<double>(lower(i)) * scale,
                     static_cast<double>(lower(i) + width(i)) * scale,
                     static_cast<double>(counts[i])});
  return out;
}

LatencyStats one_way_stats(std::vector<std::uint64_t>& samples, double scale, LogHistogram* hist) {
  LatencyStats st;
  if (hist) {
    hist->clear(scale);
    for (const std::uint64_t v : samples)
      hist->record(v);
  }
  if (samples.empty()) return st;
  std::sort(samples.begin(), samples.end());
  const auto n = samples.size();
  // Nearest rank: the smallest sample with at least q of the samples at or below it.
  const auto pct = [&](double q) {
    auto idx = static_cast<std::size_t>(std::ceil(q * static_cast<double>(n)));
    idx = std::clamp<std::size_t>(idx, 1, n) - 1;
    return static_cast<double>(samples[idx]) * scale;
  };
  st.rounds = n;
  st.min = static_cast<double>(samples.front()) * scale;
  st.p50 = pct(0.50);
  st.p99 = pct(0.99);
  st.p999 = pct(0.999);
  st.max = static_cast<double>(samples.back()) * scale;
  return st;
}

Spread spread_of(std::vector<double> v) {
  Spread s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  const auto at = [&](double q) {
    return v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5)];
  };
  s.n = v.size();
  s.median = at(0.5);
  s.q1 = at(0.25);
  s.q3 = at(0.75);
  s.min = v.front();
  s.max = v.back();
  return s;
}

std::size_t RunRates::median_index() const {
  if (seconds.empty()) return 0;
  std::vector<std::size_t> order(seconds.size());
  for (std::size_t i = 0; i < order.size(); ++i)
    order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return rate(seconds[a]) < rate(seconds[b]);
  });
  return order[(order.size() - 1) / 2];
}

double RunRates::median_rate() const {
  return seconds.empty() ? 0 : rate(seconds[median_index()]);
}

double RunRates::min_rate() const {
  double m = 0;
  for (const double s : seconds)
    m = (m == 0 || rate(s) < m) ? rate(s) : m;
  return m;
}

double RunRates::max_rate() const {
  double m = 0;
  for (const double s : seconds)
    m = std::max(m, rate(s));
  return m;
}

}  // namespace shmbus_bench
