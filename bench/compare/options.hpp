// shmbus-compare's command line (CLI11) and its presets.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace shmbus_bench {

struct Sections {
  bool latency = false;     // ping-pong, every system and size
  bool targets = false;     // the target block (implied by latency in the full preset)
  bool throughput = false;  // streaming, every system and size
  bool blocking = false;    // the sleeping modes (64 B)
  bool ratio = false;       // interleaved bare line / shmbus busy-spin pairs
};

// Which systems a preset measures and how many rounds and messages a row
// gets: the comparison (issue 4's rules) or shmbus against the limits alone
// (the rules of the former shmbus-ipc-bench, whose figures stay comparable).
enum class Plan { Compare, Limits };

struct Options {
  std::string preset = "full";
  Plan plan = Plan::Compare;
  std::string base_name = "compare";  // <out-dir>/<base_name>.md, .json, .png
  std::vector<std::size_t> sizes;
  std::vector<std::string> only;  // system keys; empty: all of the preset's
  Sections sections;
  bool targets = true;  // evaluate issue 4's targets (full preset)
  bool quick = false;
  bool plot = true;
  bool read_payload = true;  // throughput consumers read one word per cache line
  bool same_core = false;    // both sides of every row on CPU A (spinners yield)
  // shmbus topics made mode 0660, so shared_control: producers always check
  // the slot's stamp (P0), as on a topic another uid may use (docs/daemon.md).
  bool shared_topic = false;
  std::uint64_t repeat = 3;
  std::uint64_t slots = 0;     // throughput queue depth; 0: by size (1024, at most 64 MiB)
  std::uint64_t messages = 0;  // throughput messages per row, every size; 0: by plan
  std::uint64_t count = 0;     // throughput messages per row within the byte budget; 0: by plan
  std::uint64_t iters = 0;     // latency round trips per row; 0: by plan
  std::uint64_t warmup = 0;    // latency warm-up round trips; 0: by plan
  bool warmup_set = false;     // --warmup given (it may be 0)
  std::uint64_t pairs = 15;    // ratio section
  std::string out_dir;
  std::string json_path;  // --json: the JSON goes here instead of <out-dir>/<base_name>.json
  std::string python = "/usr/bin/python3";
  int cpu_a = -1, cpu_b = -1;
  std::string command;  // as given, for the report
};

// Parses the command line; prints --help or a usage error and exits (0 or 2).
Options parse_options(int argc, char** argv);

}  // namespace shmbus_bench
