// The report around the sections: the header (machine, versions, command),
// the summary tables, the targets of issue 4 and the run's state.

#include <algorithm>
#include <cinttypes>
#include <optional>

#include "compare.hpp"

namespace shmbus_bench {

void Compare::print_header(const MachineInfo& m) {
  md_.out("# shmbus-compare (preset %s)\n\n", opt_.preset.c_str());
  md_.out("| | |\n|---|---|\n");
  md_.out("| machine | %s (%s)%s, %ld online CPUs |\n", m.cpu_model.c_str(), m.cpu_family.c_str(),
          m.hypervisor ? ", virtual machine" : "", m.nproc);
  md_.out("| kernel | %s |\n", m.kernel.c_str());
  md_.out("| compiler | %s, %s |\n", m.compiler.c_str(), m.build.c_str());
  md_.out("| shmbus | %s |\n", m.shmbus_version.c_str());
  std::string pk;
  for (const auto& [k, v] : packages_)
    pk += (pk.empty() ? "" : ", ") + k + " " + v;
  md_.out("| packages | %s |\n", pk.c_str());
  if (opt_.same_core)
    md_.out("| placement | both processes on CPU %d (spinners yield) |\n", opt_.cpu_a);
  else
    md_.out("| placement | side A on CPU %d, side B on CPU %d |\n", opt_.cpu_a, opt_.cpu_b);
  if (opt_.plan == Plan::Limits)
    md_.out("| plan | latency: %" PRIu64 " round trips after %" PRIu64
            " warm-up (/10 from 256 KiB); throughput: %" PRIu64 " messages%s, %" PRIu64
            " runs per row |\n",
            limits_iters(), limits_warmup(), opt_.messages ? opt_.messages : limits_count(),
            opt_.messages ? "" : " (at most 2 GiB per row)", opt_.repeat);
  md_.out("| command | `%s` |\n", opt_.command.c_str());
  md_.out("| date | %s |\n", m.date.c_str());
  for (const auto& c : comparators_)
    if (!c.skipped.empty())
      md_.out("\nSkipped: %s (%s): %s\n", c.name.c_str(), c.key.c_str(), c.skipped.c_str());
  md_.flush();
}

// The rest of a summary table's head: one column per size.
void Compare::print_size_columns() {
  for (const std::size_t s : opt_.sizes)
    md_.out(" %s |", size_label(s).c_str());
  md_.out("\n|---|");
  for (std::size_t i = 0; i < opt_.sizes.size(); ++i)
    md_.out("---:|");
  md_.out("\n");
}

void Compare::print_summary() {
  md_.out("\n## Summary\n\n");
  if (opt_.sections.latency) {
    md_.out("One-way latency, p50 / p99 (ping-pong, cores split):\n\n| system |");
    print_size_columns();
    for (const char* key : latency_order()) {
      const System* s = sys(key);
      if (!s || !s->has_latency()) continue;
      md_.out("| %s |", s->baseline ? ("*" + s->name + "*").c_str() : s->name.c_str());
      for (std::size_t size : opt_.sizes) {
        const LatRow* r = find_lat("latency", key, size);
        if (r)
          md_.out(" %s / %s |", ns_label(r->st.p50).c_str(), ns_label(r->st.p99).c_str());
        else
          md_.out(" failed |");
      }
      md_.out("\n");
    }
  }
  if (opt_.sections.throughput) {
    md_.out(
        "\nThroughput, messages/s (median; one producer process, one consumer process):\n\n| "
        "system |");
    print_size_columns();
    for (const char* key : kThroughputOrder) {
      const System* s = sys(key);
      if (!s || !s->has_throughput()) continue;
      md_.out("| %s |", s->baseline ? ("*" + s->name + "*").c_str() : s->name.c_str());
      for (std::size_t size : opt_.sizes) {
        const TputRow* r = find_tput(key, size);
        if (r)
          md_.out(" %s (%s) |", rate_label(r->median_rate(), "").c_str(),
                  rate_label(r->median_rate() * static_cast<double>(size), "B/s").c_str());
        else
          md_.out(" failed |");
      }
      md_.out("\n");
    }
  }
}

void Compare::evaluate_targets() {
  // From the target block when it ran (its first bare line is the reference),
  // else from the size blocks.
  const auto lat = [&](const char* key, std::size_t size) {
    const LatRow* r = find_lat("targets", key, size);
    return r ? r : find_lat("latency", key, size);
  };
  // Two latency figures compare only when their blocks were in the same
  // near/far state; otherwise the line says so, with the ratio of the two
  // figures each taken relative to its own block's bare line.
  const auto states = [&](const LatRow* a, const LatRow* b) -> std::string {
    if (!a || !b) return "";
    if (a->state == "mixed" || b->state == "mixed")
      return " [the host moved the vCPUs during the block (bare line before and after differ): "
             "re-run]";
    if (a->state == b->state) return "";
    const LatRow* la = lat("bare-line", a->size);
    const LatRow* lb = lat("bare-line", b->size);
    std::string s = " [NOT COMPARABLE: blocks in different states, " + a->state + " vs " + b->state;
    if (la && lb)
      s += "; relative to each block's bare line: " +
           ratio_label((a->st.p50 / la->st.p50) / (b->st.p50 / lb->st.p50));
    return s + "]";
  };
  const auto add = [&](std::string what, std::string rule, std::optional<double> v, bool le,
                       double bound, std::string detail) {
    Target t;
    t.what = std::move(what);
    t.rule = std::move(rule);
    t.detail = std::move(detail);
    if (v) {
      t.available = true;
      t.value = *v;
      t.pass = le ? *v <= bound : *v >= bound;
    }
    targets_.push_back(t);
  };
  // A latency ratio (p50 of a over p50 of b) and a throughput ratio (median
  // rates); `le`: the ratio must be at most `bound`, else at least.
  const auto lat_target = [&](std::string what, std::string rule, const LatRow* a, const LatRow* b,
                              bool le, double bound, bool with_states) {
    add(std::move(what), std::move(rule),
        a && b ? std::optional<double>(a->st.p50 / b->st.p50) : std::nullopt, le, bound,
        a && b ? strprintf("%s vs %s", ns_label(a->st.p50).c_str(), ns_label(b->st.p50).c_str()) +
                     (with_states ? states(a, b) : "")
               : "not measured");
  };
  const auto tput_target = [&](std::string what, std::string rule, const TputRow* a,
                               const TputRow* b, bool le, double bound) {
    add(std::move(what), std::move(rule),
        a && b ? std::optional<double>(a->median_rate() / b->median_rate()) : std::nullopt, le,
        bound,
        a && b
            ? rate_label(a->median_rate(), "msg/s") + " vs " + rate_label(b->median_rate(), "msg/s")
            : "not measured");
  };
  const std::size_t kSmall = 64, kBig = 1 << 20;
  // The bare line of the same block is the reference: always the same state.
  lat_target("64 B latency p50: shmbus busy-spin vs bare line", "<= 1.5x",
             lat("shmbus-busy-spin", kSmall), lat("bare-line", kSmall), true, 1.5, false);
  lat_target("64 B latency p50: shmbus busy-spin vs iceoryx", "<= 1/10x",
             lat("shmbus-busy-spin", kSmall), lat("iceoryx", kSmall), true, 0.1, true);
  lat_target("1 MiB latency p50: shmbus busy-spin vs its own 64 B", "<= 2x",
             lat("shmbus-busy-spin", kBig), lat("shmbus-busy-spin", kSmall), true, 2.0, true);
  lat_target("1 MiB latency p50: shmbus busy-spin vs iceoryx 1 MiB", "<= 1/10x",
             lat("shmbus-busy-spin", kBig), lat("iceoryx", kBig), true, 0.1, true);
  tput_target("64 B throughput: shmbus busy-spin vs bare SPSC ring (index per message)", ">= 0.5x",
              find_tput("shmbus-busy-spin", kSmall), find_tput("bare-ring", kSmall), false, 0.5);
  tput_target("64 B throughput: shmbus busy-spin vs iceoryx", ">= 5x",
              find_tput("shmbus-busy-spin", kSmall), find_tput("iceoryx", kSmall), false, 5.0);
  lat_target(
      "wake-up p50 (receiver asleep): shmbus spin-futex, spin 0 vs UDS blocking ping-pong, cores "
      "split",
      "<= 1x", find_lat("blocking-split", "shmbus-sleep", kSmall),
      find_lat("blocking-split", "uds", kSmall), true, 1.0, false);
  tput_target(
      "64 B streaming: shmbus busy-spin vs spin-futex throughput (spin-futex may be at most 2x "
      "slower)",
      "<= 2x", find_tput("shmbus-busy-spin", kSmall), find_tput("shmbus-spin-futex", kSmall), true,
      2.0);

  md_.out("\n## Targets (issue 4)\n\n");
  for (const auto& t : targets_) {
    if (!t.available) {
      md_.out("- n/a  %s (target %s): %s\n", t.what.c_str(), t.rule.c_str(), t.detail.c_str());
      continue;
    }
    const std::string v = t.value < 0.5 ? strprintf("%.3fx (1/%.1f)", t.value, 1 / t.value)
                                        : strprintf("%.2fx", t.value);
    md_.out("- %s %s = %s (target %s): %s\n", t.pass ? "PASS" : "MISS", t.what.c_str(), v.c_str(),
            t.rule.c_str(), t.detail.c_str());
  }
  // Context for the wake-up target: the other placements.
  const LatRow* same_a = find_lat("blocking-same-core", "shmbus-sleep", kSmall);
  const LatRow* same_b = find_lat("blocking-same-core", "uds", kSmall);
  const LatRow* sp_a = find_lat("spaced", "shmbus-spin-futex", kSmall);
  const LatRow* sp_b = find_lat("spaced", "uds", kSmall);
  if (same_a && same_b)
    md_.out("- (context) same core: shmbus spin 0 %s vs UDS %s = %s\n",
            ns_label(same_a->st.p50).c_str(), ns_label(same_b->st.p50).c_str(),
            ratio_label(same_a->st.p50 / same_b->st.p50).c_str());
  if (sp_a && sp_b)
    md_.out("- (context) spaced one way: shmbus default spin-futex %s vs UDS %s = %s\n",
            ns_label(sp_a->st.p50).c_str(), ns_label(sp_b->st.p50).c_str(),
            ratio_label(sp_a->st.p50 / sp_b->st.p50).c_str());
}

void Compare::print_run_state() {
  md_.out("\n## Run state\n\n");
  md_.out(
      "Bare-line round trip at start %s (%s), at end %s (%s). Load average (1 min) at\n"
      "start %.2f, at end %.2f%s. Total %.0f s.\n",
      ns_label(bracket_start_).c_str(), bracket_start_ > 0 ? state_of(bracket_start_) : "failed",
      ns_label(bracket_end_).c_str(), bracket_end_ > 0 ? state_of(bracket_end_) : "failed",
      load_start_, load_end_,
      std::max(load_start_, load_end_) > 0.5 ? " (other processes competed for the two cores)" : "",
      total_s_);
  if (!failures_.empty()) {
    md_.out("\n## Failures (%zu)\n\n", failures_.size());
    for (const auto& f : failures_)
      md_.out("- %s\n", f.c_str());
  }
}

}  // namespace shmbus_bench
