// The sections of a run: latency by size, the target block, throughput by
// size and the sleeping modes, each printed as it completes.

#include <algorithm>
#include <cinttypes>

#include "compare.hpp"

namespace shmbus_bench {

std::vector<const char*> Compare::latency_order() const {
  std::vector<const char*> keys;
  for (const char* key : kLatencyOrder)
    if (std::string(key) != "raw-futex" || opt_.plan == Plan::Limits) keys.push_back(key);
  return keys;
}

void Compare::section_title(const char* what) {
  md_.out("\n## %s, %s\n\n", what, opt_.same_core ? "one core" : "cores split");
}

void Compare::latency_section() {
  section_title("Latency: ping-pong, one way = round trip / 2");
  if (opt_.plan == Plan::Limits)
    md_.out(
        "Two processes on CPUs %d and %d. shmbus rows: topics of 64 slots, slot size =\n"
        "payload, policy block; the sender loans a slot and writes only the 8-byte sequence\n"
        "number; the receiver checks it in place. Baselines in *italics*. Spin-futex spins\n"
        "for the library's spin budget (50 us) before it sleeps, so with a peer on another\n"
        "core it seldom sleeps here; compare it with raw futex in --same-core runs.\n",
        opt_.cpu_a, opt_.same_core ? opt_.cpu_a : opt_.cpu_b);
  else
    md_.out(
        "Two processes pinned to CPUs %d and %d (moodycamel: two threads of one process).\n"
        "Zero-copy systems (shmbus, iceoryx) loan a buffer and write the 8-byte sequence\n"
        "number in place; the others send the whole payload. The receiver checks the\n"
        "sequence number of every message. Rows capped at 1 s (blocking: 1.5 s) of round\n"
        "trips after a warm-up; `rounds` says how many were measured. The bare line runs\n"
        "first in every block: it tags the block near or far (BASELINES.md, lesson 1).\n",
        opt_.cpu_a, opt_.cpu_b);
  for (const std::size_t size : opt_.sizes) {
    std::string state;
    for (const char* key : latency_order()) {
      System* s = sys(key);
      if (!s || !s->has_latency()) continue;
      lat_.push_back(run_latency(*s, "latency", size, false));
      if (lat_.back().key == "bare-line" && lat_.back().ok)
        state = state_of(2 * lat_.back().st.p50);
      lat_.back().state = state;
    }
    print_latency_block(size);
  }
}

// The latency targets compare shmbus at 64 B with the bare line, with iceoryx
// and with itself at 1 MiB. The size blocks above are a minute apart, and the
// host may have moved the vCPUs (near/far) in between, so the rows the targets
// use are measured again here, back to back, between two bare-line checks.
void Compare::target_block() {
  struct Item {
    const char* key;
    std::size_t size;
  };
  const Item items[] = {{"bare-line", 64}, {"shmbus-busy-spin", 64}, {"shmbus-busy-spin", 1 << 20},
                        {"iceoryx", 64},   {"iceoryx", 1 << 20},     {"bare-line", 64}};
  std::vector<LatRow> rows;
  for (const Item& it : items) {
    System* s = sys(it.key);
    if (!s) continue;
    rows.push_back(run_latency(*s, "targets", it.size, false));
  }
  // The block's state: that of both bare-line checks, or "mixed".
  std::string state;
  for (const auto& r : rows) {
    if (r.key != "bare-line" || !r.ok) continue;
    const std::string st = state_of(2 * r.st.p50);
    state = state.empty() ? st : (state == st ? state : "mixed");
  }
  md_.out("\n### Target block: the rows of the latency targets, back to back (%s)\n\n",
          state.empty() ? "state unknown" : state.c_str());
  md_.out(
      "| system | size | rounds | p50 | p99 | p99.9 | max "
      "|\n|---|---:|---:|---:|---:|---:|---:|\n");
  bool first_line = true;
  for (auto& r : rows) {
    r.state = state;
    std::string name = r.baseline ? "*" + r.system + "*" : r.system;
    if (r.key == "bare-line") {
      name += first_line ? " (before)" : " (after)";
      first_line = false;
    }
    if (!r.ok)
      md_.out("| %s | %s | FAILED: %s | | | | |\n", name.c_str(), size_label(r.size).c_str(),
              r.error.c_str());
    else
      md_.out("| %s | %s | %s | %s | %s | %s | %s |\n", name.c_str(), size_label(r.size).c_str(),
              group_digits(static_cast<double>(r.st.rounds)).c_str(), ns_label(r.st.p50).c_str(),
              ns_label(r.st.p99).c_str(), ns_label(r.st.p999).c_str(), ns_label(r.st.max).c_str());
    lat_.push_back(std::move(r));
  }
  md_.flush();
}

void Compare::throughput_section() {
  section_title("Throughput: one producer process, one consumer process");
  md_.out("%s",
          opt_.plan == Plan::Limits
              ? "shmbus rows: publish() copies the payload; policy block. Bare ring: the same\n"
                "slot count and bytes per slot as the shmbus ring, memcpy per message. Msgs per\n"
                "consumer fetch: ~1 when the consumer keeps up (each message is its own\n"
                "cache-line hand-off), large when the producer runs ahead and the consumer\n"
                "streams.\n"
              : "A fixed count of messages per row: at most 1 GiB, and at most 5 M messages for\n"
                "shmbus, the limits and moodycamel, 250 k for the others. The producer writes\n"
                "the whole payload of every message (zero-copy systems into their loan). Queue\n"
                "depth where a system has one: 1024 messages (fewer above 64 KiB: at most\n"
                "64 MiB); the bare ring has as many slots of the same size as the shmbus ring.\n");
  md_.out("%s Median of %" PRIu64 " runs, round-robin.\n",
          opt_.read_payload
              ? "The consumer checks the sequence number of every message and reads one word\n"
                "per cache line of its payload: bytes/s is payload delivered to the other core."
              : "The consumer checks the sequence number of every message and reads only its\n"
                "first 8 bytes: above 64 B, bytes/s is the rate the producer copies into shared\n"
                "memory (see --read-payload).",
          opt_.repeat);
  for (const std::size_t size : opt_.sizes) {
    const std::size_t first = tput_.size();
    for (const char* key : kThroughputOrder) {
      System* s = sys(key);
      if (!s || !s->has_throughput()) continue;
      TputRow row;
      row.key = s->key;
      row.system = s->name;
      row.size = size;
      row.baseline = s->baseline;
      row.count = count_for(*s, size);
      row.sys = s;
      tput_.push_back(row);
    }
    const std::uint64_t block_start = now_ns();
    for (std::uint64_t rep = 0; rep < opt_.repeat; ++rep) {
      if (rep > 0 && now_ns() - block_start > repeat_budget_ns()) {
        std::fprintf(stderr, "  (time budget: %s rows get %" PRIu64 " of %" PRIu64 " runs)\n",
                     size_label(size).c_str(), rep, opt_.repeat);
        break;
      }
      for (std::size_t k = first; k < tput_.size(); ++k)
        if (tput_[k].ok) run_throughput_once(tput_[k]);
    }
    print_throughput_block(size);
  }
}

void Compare::blocking_section() {
  const std::size_t size = opt_.sizes.empty() ? 64 : std::min<std::size_t>(64, opt_.sizes.front());
  const std::size_t bsize = std::max<std::size_t>(size, 16);
  md_.out("\n## Blocking: the receiver sleeps (%s)\n\n", size_label(bsize).c_str());
  md_.out(
      "A sleeping receiver costs a wake-up through the host (~30 us one way here), so a\n"
      "blocking mode is judged against a raw futex ping-pong in the same placement\n"
      "(BASELINES.md, lesson 2). shmbus with spin = 0 sleeps at once on every wait.\n"
      "Spaced: side A sends one message every %s (10x shmbus's default spin budget,\n"
      "so its default mode spins, gives up and sleeps before each message); one way =\n"
      "arrival time - send time (CLOCK_MONOTONIC, read on both cores).\n",
      ns_label(static_cast<double>(kSpacedGapNs)).c_str());
  const char* pingpong[] = {"raw-futex", "shmbus-sleep", "uds", "pipe", "boost-mq"};
  const char* same_core[] = {"raw-futex", "shmbus-sleep", "shmbus-spin-futex",
                             "uds",       "pipe",         "boost-mq"};
  const char* spaced[] = {"raw-futex", "shmbus-spin-futex", "shmbus-sleep", "uds",
                          "pipe",      "boost-mq"};
  for (const char* key : pingpong)
    if (System* s = sys(key)) lat_.push_back(run_latency(*s, "blocking-split", bsize, false));
  for (const char* key : same_core)
    if (System* s = sys(key)) lat_.push_back(run_latency(*s, "blocking-same-core", bsize, true));
  for (const char* key : spaced)
    if (System* s = sys(key); s && s->has_spaced()) lat_.push_back(run_spaced(*s, bsize));

  const LatRow* fx_split = find_lat("blocking-split", "raw-futex", bsize);
  const LatRow* fx_same = find_lat("blocking-same-core", "raw-futex", bsize);
  const LatRow* fx_spaced = find_lat("spaced", "raw-futex", bsize);
  struct Block {
    const char* section;
    const char* title;
    const LatRow* futex;
  };
  const Block blocks[] = {
      {"blocking-split", "Ping-pong, cores split", fx_split},
      {"blocking-same-core", "Ping-pong, both processes on one core", fx_same},
      {"spaced", "One way, messages spaced, cores split", fx_spaced},
  };
  for (const Block& b : blocks) {
    md_.out("\n### %s\n\n", b.title);
    md_.out("| system | rounds | p50 | p99 | p99.9 | max | p50 vs raw futex |\n");
    md_.out("|---|---:|---:|---:|---:|---:|---:|\n");
    for (const auto& r : lat_) {
      if (r.section != b.section) continue;
      const std::string name = r.baseline ? "*" + r.system + "*" : r.system;
      if (!r.ok) {
        md_.out("| %s | FAILED: %s | | | | | |\n", name.c_str(), r.error.c_str());
        continue;
      }
      md_.out("| %s | %s | %s | %s | %s | %s | %s |\n", name.c_str(),
              group_digits(static_cast<double>(r.st.rounds)).c_str(), ns_label(r.st.p50).c_str(),
              ns_label(r.st.p99).c_str(), ns_label(r.st.p999).c_str(), ns_label(r.st.max).c_str(),
              b.futex ? ratio_label(r.st.p50 / b.futex->st.p50).c_str() : "-");
    }
  }
  md_.flush();
}

void Compare::print_latency_block(std::size_t size) {
  const LatRow* line = find_lat("latency", "bare-line", size);
  const LatRow* copy = find_lat("latency", "bare-memcpy", size);
  md_.out("\n### %s%s\n\n", size_label(size).c_str(),
          line ? strprintf(" (bare line %s round trip: %s)", ns_label(2 * line->st.p50).c_str(),
                           state_of(2 * line->st.p50))
                     .c_str()
               : "");
  md_.out(
      "| system | rounds | p50 | p99 | p99.9 | max | p50 vs bare line | p50 vs bare memcpy |\n");
  md_.out("|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& r : lat_) {
    if (r.section != "latency" || r.size != size) continue;
    const std::string name = r.baseline ? "*" + r.system + "*" : r.system;
    if (!r.ok) {
      md_.out("| %s | FAILED: %s | | | | | | |\n", name.c_str(), r.error.c_str());
      continue;
    }
    md_.out("| %s | %s | %s | %s | %s | %s | %s | %s |\n", name.c_str(),
            group_digits(static_cast<double>(r.st.rounds)).c_str(), ns_label(r.st.p50).c_str(),
            ns_label(r.st.p99).c_str(), ns_label(r.st.p999).c_str(), ns_label(r.st.max).c_str(),
            line ? ratio_label(r.st.p50 / line->st.p50).c_str() : "-",
            copy ? ratio_label(r.st.p50 / copy->st.p50).c_str() : "-");
  }
  if (opt_.plan == Plan::Limits && line) print_latency_ratios(size, *line, copy);
  md_.flush();
}

// The limits preset's one line per shmbus row: its p50 and p99 against the
// limits of its block (a blocking mode also against the raw futex).
void Compare::print_latency_ratios(std::size_t size, const LatRow& line, const LatRow* copy) {
  const LatRow* fx = find_lat("latency", "raw-futex", size);
  md_.out("\n");
  for (const auto& r : lat_) {
    if (r.section != "latency" || r.size != size || r.baseline || !r.ok) continue;
    md_.out("- %s %s p50 = %s bare line (%s)", r.system.c_str(), size_label(size).c_str(),
            ratio_label(r.st.p50 / line.st.p50).c_str(), ns_label(line.st.p50).c_str());
    if (copy)
      md_.out(", %s bare memcpy (%s)", ratio_label(r.st.p50 / copy->st.p50).c_str(),
              ns_label(copy->st.p50).c_str());
    md_.out("; p99 = %s bare line p99", ratio_label(r.st.p99 / line.st.p99).c_str());
    if (fx && r.blocking)
      md_.out("; p50 = %s raw futex (%s)", ratio_label(r.st.p50 / fx->st.p50).c_str(),
              ns_label(fx->st.p50).c_str());
    md_.out("\n");
  }
}

void Compare::print_throughput_block(std::size_t size) {
  const TputRow* ring = find_tput("bare-ring", size);
  md_.out("\n### %s\n\n", size_label(size).c_str());
  md_.out(
      "| system | messages | messages/s (median) | range (runs) | bytes/s | msgs per consumer "
      "fetch | vs bare ring |\n");
  md_.out("|---|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& r : tput_) {
    if (r.size != size) continue;
    const std::string name = r.baseline ? "*" + r.system + "*" : r.system;
    if (!r.ok || r.seconds.empty()) {
      md_.out("| %s | FAILED: %s | | | | | |\n", name.c_str(), r.error.c_str());
      continue;
    }
    const std::uint64_t fetches = r.fetches[r.median_index()];
    const std::string per_fetch =
        fetches ? strprintf("%.1f", static_cast<double>(r.count) / static_cast<double>(fetches))
                : std::string("-");
    md_.out("| %s | %s | %s | %s - %s (%zu) | %s | %s | %s |\n", name.c_str(),
            group_digits(static_cast<double>(r.count)).c_str(),
            rate_label(r.median_rate(), "msg/s").c_str(), rate_label(r.min_rate(), "").c_str(),
            rate_label(r.max_rate(), "").c_str(), r.seconds.size(),
            rate_label(r.median_rate() * static_cast<double>(r.size), "B/s").c_str(),
            per_fetch.c_str(),
            ring ? ratio_label(r.median_rate() / ring->median_rate()).c_str() : "-");
  }
  if (opt_.plan == Plan::Limits && ring) {
    md_.out("\n");
    for (const auto& r : tput_)
      if (r.size == size && !r.baseline && r.ok && !r.seconds.empty())
        md_.out("- %s %s = %s bare ring (%s)\n", r.system.c_str(), size_label(size).c_str(),
                ratio_label(r.median_rate() / ring->median_rate()).c_str(),
                rate_label(ring->median_rate(), "msg/s").c_str());
  }
  md_.flush();
}

}  // namespace shmbus_bench
