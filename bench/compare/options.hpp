// shmbus-compare's command line (CLI11) and its presets.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace shmbus_bench {

struct Sections {
  bool latency = false;     // ping-pong, every system and size
  bool targets = false;     // the target block and the PASS/MISS lines of issue 4
  bool throughput = false;  // streaming, every system and size
  bool blocking = false;    // the sleeping modes (64 B)
  bool ratio = false;       // interleaved bare line / shmbus busy-spin pairs
};

struct Options {
  std::string preset = "full";
  std::string base_name = "compare";  // <out-dir>/<base_name>.md, .json, .png
  std::vector<std::size_t> sizes;
  std::vector<std::string> only;  // system keys; empty: all but the shmbus variants
  Sections sections;
  bool quick = false;
  bool plot = true;
  std::uint64_t repeat = 3;
  std::uint64_t slots = 0;     // throughput queue depth; 0: by size (1024, at most 64 MiB)
  std::uint64_t messages = 0;  // throughput messages per row; 0: by system and size
  std::uint64_t iters = 0;     // latency round trips per row; 0: by system and size
  std::uint64_t warmup = 0;    // latency warm-up round trips; 0: by system and size
  std::uint64_t pairs = 15;    // ratio section
  std::string out_dir;
  std::string python = "/usr/bin/python3";
  int cpu_a = -1, cpu_b = -1;
  std::string command;  // as given, for the report
};

// Parses the command line; prints --help or a usage error and exits (0 or 2).
Options parse_options(int argc, char** argv);

}  // namespace shmbus_bench
