// shmbus-compare's driver: the systems, the sections it runs (latency, the
// target block, throughput, blocking, the interleaved ratio) and the rows
// they produce, reported as Markdown and JSON.
#pragma once

#include <array>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "harness/machine.hpp"
#include "harness/process.hpp"
#include "harness/report.hpp"
#include "harness/stats.hpp"
#include "options.hpp"
#include "system.hpp"

namespace shmbus_bench {

constexpr std::uint64_t kSpacedGapNs = 500'000;  // 10x shmbus's default spin budget (50 us)

// The order of the rows in the tables (raw-futex: in the latency blocks of
// the limits preset; the comparison measures it in the blocking section).
inline constexpr const char* kLatencyOrder[] = {
    "bare-line",         "bare-memcpy", "raw-futex",  "shmbus-busy-spin",
    "shmbus-spin-futex", "iceoryx",     "moodycamel", "boost-mq-poll",
    "boost-mq",          "uds",         "pipe",       "zmq"};
inline constexpr const char* kThroughputOrder[] = {"bare-ring",
                                                   "bare-ring-16",
                                                   "shmbus-busy-spin",
                                                   "shmbus-spin-futex",
                                                   "shmbus-single-producer",
                                                   "shmbus-multi-producer",
                                                   "shmbus-single-producer-batch16",
                                                   "iceoryx",
                                                   "moodycamel",
                                                   "boost-mq-poll",
                                                   "boost-mq",
                                                   "uds",
                                                   "pipe",
                                                   "zmq"};

struct LatRow {
  std::string section;  // "latency", "targets", "blocking-split", "blocking-same-core", "spaced"
  std::string key, system;
  std::size_t size = 0;
  bool baseline = false, blocking = false;
  bool ok = false;
  std::string error;
  std::string state;  // near/far of its latency block (the block's bare line)
  LatencyStats st;
  std::vector<std::array<double, 3>> hist;  // [lower ns, upper ns, count], non-empty buckets
};

struct TputRow : RunRates {
  std::vector<std::uint64_t> fetches;  // per run: the consumer's fetches (0: not known)
  std::string key, system;
  std::size_t size = 0;
  bool baseline = false;
  bool ok = true;
  std::string error;
  System* sys = nullptr;
};

struct Target {
  std::string what;
  std::string rule;  // e.g. "<= 1.5x"
  bool available = false;
  double value = 0;
  bool pass = false;
  std::string detail;
};

// One pair of the ratio section.
struct RatioPair {
  std::size_t size = 0;
  double line_p50 = 0, shmbus_p50 = 0;
};

class Compare {
 public:
  Compare(Options o, PairRunner& runner) : opt_(std::move(o)), runner_(runner) {}
  int run();

 private:
  // runs.cpp: the systems and one run of a row.
  using SkipFn =
      std::function<void(const std::string& key, const std::string& name, const std::string& why)>;
  void build_systems();
  void add_limits_systems(std::vector<std::unique_ptr<System>>& rest) const;
  void add_compare_systems(std::vector<std::unique_ptr<System>>& rest, const SkipFn& skip) const;
  bool wanted(const System& s) const;
  System* sys(const std::string& key) const;
  Scenario scenario(Mode mode, std::size_t size);
  LatencyPlan latency_plan(const System& s, std::size_t size) const;
  std::uint64_t slots_for(std::size_t size) const;
  std::uint64_t count_for(const System& s, std::size_t size) const;
  std::uint64_t repeat_budget_ns() const;
  std::uint64_t limits_iters() const;
  std::uint64_t limits_warmup() const;
  std::uint64_t limits_count() const;
  // Prepares `s`, runs role a on side A and role b on side B, cleans up.
  using Role = void (System::*)(Side&, const Scenario&);
  PairResult run_system(System& s, const Scenario& sc, const std::string& label, Role a, Role b,
                        PairOptions po);
  LatRow lat_row(const System& s, const std::string& section, std::size_t size) const;
  LatRow run_latency(System& s, const std::string& section, std::size_t size, bool same_core);
  LatRow run_spaced(System& s, std::size_t size);
  bool run_throughput_once(TputRow& row);
  double bracket_round_trip();

  // sections.cpp and ratio.cpp
  std::vector<const char*> latency_order() const;
  void section_title(const char* what);  // "## what, cores split" (or "one core")
  void latency_section();
  void target_block();
  void throughput_section();
  void blocking_section();
  void ratio_section();
  void print_latency_block(std::size_t size);
  void print_latency_ratios(std::size_t size, const LatRow& line, const LatRow* copy);
  void print_throughput_block(std::size_t size);

  // summary.cpp
  void print_header(const MachineInfo& m);
  void print_size_columns();
  void print_summary();
  void evaluate_targets();
  void print_run_state();

  // json.cpp
  void write_json(const MachineInfo& m);
  void draw_plot();

  const LatRow* find_lat(const std::string& section, const std::string& key,
                         std::size_t size) const;
  const TputRow* find_tput(const std::string& key, std::size_t size) const;
  std::string path(const char* ext) const { return opt_.out_dir + "/" + opt_.base_name + ext; }
  std::string json_path() const { return opt_.json_path.empty() ? path(".json") : opt_.json_path; }

  Options opt_;
  PairRunner& runner_;
  Report md_;
  std::vector<Comparator> comparators_;
  std::vector<LatRow> lat_;
  std::vector<TputRow> tput_;
  std::vector<RatioPair> pairs_;
  std::vector<Target> targets_;
  std::vector<std::string> failures_;
  std::map<std::string, std::string> packages_;
  double bracket_start_ = 0, bracket_end_ = 0;
  double load_start_ = -1, load_end_ = -1;
  std::string work_dir_;
  bool roudi_up_ = false;
  int next_run_id_ = 0;
  double total_s_ = 0;
};

}  // namespace shmbus_bench
