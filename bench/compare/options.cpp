#include "options.hpp"

#include <sched.h>

#include <CLI/CLI.hpp>
#include <cctype>
#include <cerrno>
#include <cstdlib>

#include "harness/process.hpp"

#ifndef SHMBUS_BENCH_RESULTS_DIR
#define SHMBUS_BENCH_RESULTS_DIR "bench/results"
#endif

namespace shmbus_bench {
namespace {

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::size_t b = 0;
  for (;;) {
    const std::size_t e = s.find(sep, b);
    out.push_back(s.substr(b, e == std::string::npos ? std::string::npos : e - b));
    if (e == std::string::npos) break;
    b = e + 1;
  }
  return out;
}

// "64", "4KiB", "1M": 16 B (sequence number and send time) to 64 MiB.
std::size_t parse_size(const std::string& tok) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long n = std::strtoull(tok.c_str(), &end, 10);
  if (end == tok.c_str() || errno != 0 || tok[0] == '-')
    throw CLI::ValidationError("--sizes", "bad size '" + tok + "'");
  std::string suf(end);
  for (auto& c : suf)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  unsigned long long mult = 1;
  if (suf.empty() || suf == "b")
    mult = 1;
  else if (suf == "k" || suf == "kib" || suf == "kb")
    mult = 1024;
  else if (suf == "m" || suf == "mib" || suf == "mb")
    mult = 1024 * 1024;
  else
    throw CLI::ValidationError("--sizes", "bad size suffix in '" + tok + "' (use B, KiB or MiB)");
  const unsigned long long bytes = n * mult;
  if (bytes < 16 || bytes > (64ULL << 20))
    throw CLI::ValidationError("--sizes", "size '" + tok +
                                              "' must be between 16 B (sequence number and send "
                                              "time) and 64 MiB");
  return static_cast<std::size_t>(bytes);
}

Sections parse_sections(const std::string& list) {
  Sections s;
  const std::pair<const char*, bool*> known[] = {{"latency", &s.latency},
                                                 {"targets", &s.targets},
                                                 {"throughput", &s.throughput},
                                                 {"blocking", &s.blocking},
                                                 {"ratio", &s.ratio}};
  for (const auto& t : split(list, ',')) {
    bool found = false;
    for (const auto& [name, flag] : known)
      if (t == name) *flag = found = true;
    if (!found)
      throw CLI::ValidationError("--sections", "unknown section '" + t +
                                                   "' (latency, targets, throughput, blocking, "
                                                   "ratio)");
  }
  return s;
}

int parse_cpu(const std::string& v) {
  char* end = nullptr;
  errno = 0;
  const long n = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || errno != 0 || *end != '\0' || n < 0 || n >= CPU_SETSIZE)
    throw CLI::ValidationError("--cores", "wants two CPU numbers, e.g. 0,1; got '" + v + "'");
  return static_cast<int>(n);
}

// What a preset sets when the command line does not.
struct Preset {
  const char* name;
  const char* base_name;
  const char* sizes;
  const char* sections;
  const char* systems;  // "": all but the shmbus variants
  bool plot;
};
constexpr Preset kPresets[] = {
    {"full", "compare", "64,1KiB,4KiB,64KiB,1MiB", "latency,targets,throughput,blocking", "", true},
    {"limits", "limits", "64,4KiB,1MiB", "latency,throughput",
     "shmbus-busy-spin,shmbus-spin-futex,shmbus-copy,shmbus-multi-producer,shmbus-batch16", false},
    {"ratio", "ratio", "64", "ratio", "shmbus-busy-spin", false},
};

}  // namespace

Options parse_options(int argc, char** argv) {
  Options o;
  o.command = "shmbus-compare";
  for (int i = 1; i < argc; ++i)
    o.command += std::string(" ") + argv[i];

  CLI::App app{
      "shmbus against the IPC systems packaged here (Unix-domain socket, pipe,\n"
      "Boost.Interprocess message_queue, ZeroMQ, iceoryx, moodycamel ConcurrentQueue)\n"
      "and the machine's limits (bare cache line, bare memcpy, raw futex, bare SPSC\n"
      "ring): latency, throughput, the sleeping (blocking) modes, and interleaved\n"
      "bare-line/shmbus ratios. Prints Markdown on stdout (progress on stderr) and\n"
      "writes <name>.md, <name>.json (and, for the full preset, compare.png via\n"
      "bench/plot.py) to the output directory.\n\n"
      "Presets (options given on the command line win):\n"
      "  full    (default) every system, sizes 64,1KiB,4KiB,64KiB,1MiB, sections\n"
      "          latency,targets,throughput,blocking; writes compare.*\n"
      "  limits  shmbus and its variants against the limits only, sizes 64,4KiB,1MiB,\n"
      "          sections latency,throughput; writes limits.* (the old shmbus-ipc-bench)\n"
      "  ratio   bare line / shmbus busy-spin pairs, 64 B, --pairs 15; writes ratio.*\n\n"
      "Every wait times out (10 s); a failed row is reported and the others run.\n"
      "Exit status: 0 all rows ran, 1 some row failed, 2 bad usage.",
      "shmbus-compare"};
  std::string preset = "full", sizes, systems, sections, cores;
  app.add_option("--preset", preset, "full, limits or ratio (default full)")
      ->check(CLI::IsMember({"full", "limits", "ratio"}));
  app.add_option("--sizes", sizes, "payload sizes, e.g. 64,4KiB,1MiB (>= 16 B, <= 64 MiB)");
  app.add_option("--systems", systems,
                 "only these systems (keys as in the JSON, e.g. shmbus-busy-spin,iceoryx,uds);\n"
                 "the limits always run. shmbus variants: shmbus-copy (publish() copies),\n"
                 "shmbus-multi-producer, shmbus-batch16 (receive_batch)");
  app.add_option("--sections", sections, "latency,targets,throughput,blocking,ratio");
  app.add_option("--repeat", o.repeat, "runs of each throughput row, round-robin (default 3)")
      ->check(CLI::PositiveNumber);
  app.add_option("--slots", o.slots,
                 "throughput queue depth for every system, a power of two (default 1024,\n"
                 "fewer above 64 KiB: at most 64 MiB of slots); the bare ring gets the same")
      ->check(CLI::Range(std::uint64_t{2}, std::uint64_t{1} << 24));
  app.add_option("--messages", o.messages,
                 "throughput messages per row for every system (default 5 M for shared\n"
                 "memory and threads, 250 k for the others, at most 1 GiB per row)")
      ->check(CLI::PositiveNumber);
  app.add_option("--iters", o.iters, "latency round trips per row (default by system and size)")
      ->check(CLI::PositiveNumber);
  app.add_option("--warmup", o.warmup, "latency warm-up round trips (default by system and size)")
      ->check(CLI::PositiveNumber);
  app.add_option("--pairs", o.pairs, "pairs of the ratio section (default 15)")
      ->check(CLI::PositiveNumber);
  app.add_flag("--quick", o.quick, "a short smoke run (fewer rounds and messages, 1 run per row)");
  app.add_option("--cores", cores, "the two CPUs, e.g. 0,1 (default the first two allowed)");
  app.add_option("--out-dir", o.out_dir,
                 "where the results go (default " SHMBUS_BENCH_RESULTS_DIR ")");
  app.add_option("--python", o.python,
                 "the interpreter for plot.py (default /usr/bin/python3: Debian's, which has\n"
                 "python3-matplotlib)");
  bool no_plot = false;
  app.add_flag("--no-plot", no_plot, "do not draw compare.png");
  try {
    app.parse(argc, argv);
    const Preset* p = nullptr;
    for (const Preset& q : kPresets)
      if (preset == q.name) p = &q;
    o.preset = p->name;
    o.base_name = p->base_name;
    o.plot = p->plot && !no_plot;
    if (sizes.empty()) sizes = p->sizes;
    for (const auto& t : split(sizes, ','))
      o.sizes.push_back(parse_size(t));
    o.sections = parse_sections(sections.empty() ? p->sections : sections);
    if (systems.empty()) systems = p->systems;
    if (!systems.empty()) o.only = split(systems, ',');
    if ((o.slots & (o.slots - 1)) != 0)
      throw CLI::ValidationError("--slots", "wants a power of two >= 2");
    if (!cores.empty()) {
      const auto parts = split(cores, ',');
      if (parts.size() != 2)
        throw CLI::ValidationError("--cores", "wants two CPU numbers, e.g. 0,1");
      o.cpu_a = parse_cpu(parts[0]);
      o.cpu_b = parse_cpu(parts[1]);
      if (o.cpu_a == o.cpu_b) throw CLI::ValidationError("--cores", "wants two different CPUs");
    }
  } catch (const CLI::ParseError& e) {
    std::exit(app.exit(e) == 0 ? 0 : 2);
  }
  if (o.out_dir.empty()) o.out_dir = SHMBUS_BENCH_RESULTS_DIR;
  if (o.quick && app.count("--repeat") == 0) o.repeat = 1;
  return o;
}

}  // namespace shmbus_bench
