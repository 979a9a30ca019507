// The interleaved ratio section: bare line and shmbus busy-spin ping-pongs
// back to back in fresh process pairs, one ratio per pair.
//
// The host moves the vCPUs, and shmbus's p50 itself steps by 5-10 ns from one
// process pair to the next, so a ratio of two rows measured seconds apart says
// little about a 1.5x target. This section alternates short runs of the two
// and takes the ratio of each adjacent pair; the order within a pair
// alternates too, so a drift during the section favours neither side.

#include <algorithm>
#include <cinttypes>

#include "compare.hpp"

namespace shmbus_bench {

void Compare::ratio_section() {
  md_.out("\n## Latency ratio, interleaved (bare line / shmbus pairs)\n");
  if (opt_.same_core) {
    md_.out("\nSkipped: busy-spin ping-pong needs two CPUs (--same-core was given).\n");
    return;
  }
  md_.out(
      "\nEach pair runs the bare line and shmbus zero-copy busy-spin back to back in fresh\n"
      "process pairs, alternating which goes first (shmbus: two topics of 64 slots,\n"
      "multi-producer, policy block, as shmbus-ipc-bench measured it). One ratio per\n"
      "pair: the run-to-run states of the host and of each process pair then show as\n"
      "spread, not as bias.\n");
  System* line = sys("bare-line");
  // Its own instance: the multi-producer topic the ratio was always taken with,
  // so that figures before and after this driver compare.
  const auto shmbus =
      make_shmbus("shmbus-busy-spin", "shmbus zero-copy, busy-spin",
                  ShmbusWait{shmbus::WaitStrategy::BusySpin, -1}, ShmbusVariant{false, true, 1});
  if (!line) return;  // always built: the limits run whatever --systems says
  for (const std::size_t size : opt_.sizes) {
    md_.out("\n### Bare line vs shmbus zero-copy busy-spin, %s, %" PRIu64 " pairs\n\n",
            size_label(size).c_str(), opt_.pairs);
    md_.out("| pair | bare line p50 (ns) | shmbus p50 (ns) | ratio |\n|---:|---:|---:|---:|\n");
    std::vector<double> ratios, lines;
    for (std::uint64_t k = 0; k < opt_.pairs; ++k) {
      RatioPair p;
      p.size = size;
      std::string error;
      for (int half = 0; half < 2 && error.empty(); ++half) {
        const bool line_turn = (half == 0) == (k % 2 == 0);
        const LatRow r = run_latency(line_turn ? *line : *shmbus, "ratio", size, false);
        if (!r.ok)
          error = r.error;
        else
          (line_turn ? p.line_p50 : p.shmbus_p50) = r.st.p50;
      }
      if (!error.empty()) {
        md_.out("| %" PRIu64 " | FAILED: %s | | |\n", k + 1, error.c_str());
        continue;
      }
      pairs_.push_back(p);
      ratios.push_back(p.shmbus_p50 / p.line_p50);
      lines.push_back(p.line_p50);
      md_.out("| %" PRIu64 " | %s | %s | %s |\n", k + 1, group_digits(p.line_p50).c_str(),
              group_digits(p.shmbus_p50).c_str(), ratio_label(ratios.back()).c_str());
      md_.flush();
    }
    if (ratios.empty()) continue;
    const auto within =
        std::count_if(ratios.begin(), ratios.end(), [](double r) { return r <= 1.5; });
    const Spread r = spread_of(ratios);
    const Spread l = spread_of(lines);
    md_.out(
        "\nshmbus / bare line, p50 of %s: median %s (quartiles %s and %s, range %s-%s); %zu of "
        "%zu pairs within 1.5x. Bare line p50 over the pairs: %s-%s ns (median %s).\n",
        size_label(size).c_str(), ratio_label(r.median).c_str(), ratio_label(r.q1).c_str(),
        ratio_label(r.q3).c_str(), ratio_label(r.min).c_str(), ratio_label(r.max).c_str(),
        static_cast<std::size_t>(within), r.n, group_digits(l.min).c_str(),
        group_digits(l.max).c_str(), group_digits(l.median).c_str());
  }
}

}  // namespace shmbus_bench
