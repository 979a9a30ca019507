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

// "64", "4KiB", "1M": `min` bytes (the sequence number, and for the
// comparison the send time of a spaced message too) to 64 MiB.
std::size_t parse_size(const std::string& tok, std::size_t min) {
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
  if (bytes < min || bytes > (64ULL << 20))
    throw CLI::ValidationError(
        "--sizes", "size '" + tok + "' must be between " + std::to_string(min) + " B and 64 MiB");
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
  Plan plan;
  bool targets;       // issue 4's targets and the target block
  bool read_payload;  // throughput consumers read the payload
  bool plot;
};
constexpr Preset kPresets[] = {
    {"full", "compare", "64,1KiB,4KiB,64KiB,1MiB", "latency,throughput,blocking", Plan::Compare,
     true, true, true},
    {"limits", "limits", "64,4KiB,1MiB", "latency,throughput", Plan::Limits, false, false, false},
    {"ratio", "ratio", "64", "ratio", Plan::Limits, false, false, false},
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
      "bare-line/shmbus ratios. Two real processes (fork), pinned to two cores. Prints\n"
      "Markdown on stdout (progress on stderr) and writes <name>.md, <name>.json (and,\n"
      "for the full preset, compare.png via bench/plot.py) to the output directory.\n\n"
      "Presets (options given on the command line win):\n"
      "  full    (default) every system, sizes 64,1KiB,4KiB,64KiB,1MiB, sections\n"
      "          latency (with the target block),throughput,blocking; issue 4's\n"
      "          targets; consumers read the payload; writes compare.*\n"
      "  limits  shmbus alone against the limits, more variants of shmbus\n"
      "          (multi-producer, receive_batch, publish() copy), sizes 64,4KiB,1MiB,\n"
      "          sections latency,throughput; writes limits.* (shmbus-ipc-bench runs this)\n"
      "  ratio   bare line / shmbus busy-spin pairs, 64 B, --pairs 15; writes ratio.*\n\n"
      "Every wait times out (10 s); a failed row is reported and the others run.\n"
      "Exit status: 0 all rows ran, 1 some row failed, 2 bad usage.",
      "shmbus-compare"};
  // The last of a repeated option wins: shmbus-ipc-bench puts --preset limits
  // first, and whatever its caller gives after it (even --preset) overrides.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  std::string preset = "full", sizes, systems, sections, cores;
  app.add_option("--preset", preset, "full, limits or ratio (default full)")
      ->check(CLI::IsMember({"full", "limits", "ratio"}));
  app.add_option("--sizes", sizes,
                 "payload sizes, e.g. 64,4KiB,1MiB; suffixes B, K/KiB, M/MiB; at least 16 B\n"
                 "(8 B for limits and ratio: the sequence number), at most 64 MiB");
  app.add_option("--systems", systems,
                 "only these systems (keys as in the JSON, e.g. shmbus-busy-spin,iceoryx,uds);\n"
                 "the limits always run");
  app.add_option("--sections", sections,
                 "latency,targets,throughput,blocking,ratio; ratio alternates short\n"
                 "bare-line and shmbus busy-spin ping-pongs and reports the ratio of each pair");
  app.add_option("--repeat", o.repeat, "runs of each throughput row, round-robin (default 3)")
      ->check(CLI::PositiveNumber);
  app.add_option("--slots", o.slots,
                 "throughput queue depth for every system, a power of two (default 1024,\n"
                 "fewer above 64 KiB: at most 64 MiB of slots); the bare ring gets the same")
      ->check(CLI::Range(std::uint64_t{2}, std::uint64_t{1} << 24));
  app.add_option("--messages", o.messages,
                 "throughput messages per row for every system and size (default: full 5 M\n"
                 "for shared memory and threads, 250 k for the others, at most 1 GiB per row;\n"
                 "limits 10 M, at most 2 GiB per row)")
      ->check(CLI::PositiveNumber);
  app.add_option("--count", o.count,
                 "throughput messages per row, still at most the byte budget per row\n"
                 "(shmbus-ipc-bench's spelling)")
      ->check(CLI::PositiveNumber);
  app.add_option("--iters", o.iters,
                 "measured round trips per latency row (default by preset, system and size)")
      ->check(CLI::PositiveNumber);
  app.add_option("--warmup", o.warmup, "round trips before measuring (default by preset)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--pairs", o.pairs, "bare line / shmbus pairs of the ratio section (default 15)")
      ->check(CLI::PositiveNumber);
  app.add_flag("--quick", o.quick, "a short smoke run (fewer rounds and messages, 1 run per row)");
  bool read_payload = false;
  app.add_flag("--read-payload", read_payload,
               "throughput consumers read one word per cache line of every message and check\n"
               "it (always on in the full preset; otherwise the sequence number only)");
  app.add_flag("--same-core", o.same_core,
               "both processes of every row on CPU A (spinners yield the core; busy-spin\n"
               "latency rows are skipped); limits and ratio presets");
  app.add_flag("--shared-topic", o.shared_topic,
               "make shmbus topics as if other uids may use them (mode 0660: producers "
               "always check the slot's stamp)");
  app.add_option("--cores", cores, "the two CPUs, e.g. 0,1 (default the first two allowed)");
  app.add_option("--out-dir", o.out_dir,
                 "where the results go (default " SHMBUS_BENCH_RESULTS_DIR ")");
  app.add_option("--json", o.json_path, "write the JSON to this file instead of the output dir");
  app.add_option("--python", o.python,
                 "the interpreter for plot.py (default /usr/bin/python3: Debian's, which has\n"
                 "python3-matplotlib)");
  bool no_plot = false;
  app.add_flag("--no-plot", no_plot, "do not draw compare.png");
  try {
    app.parse(argc, argv);
    const Preset* p = &kPresets[0];
    for (const Preset& q : kPresets)
      if (preset == q.name) p = &q;
    o.preset = p->name;
    o.base_name = p->base_name;
    o.plan = p->plan;
    o.targets = p->targets;
    o.read_payload = p->read_payload || read_payload;
    o.plot = p->plot && !no_plot;
    o.warmup_set = app.count("--warmup") > 0;
    if (sizes.empty()) sizes = p->sizes;
    const std::size_t min_size = o.plan == Plan::Limits ? 8 : 16;
    for (const auto& t : split(sizes, ','))
      o.sizes.push_back(parse_size(t, min_size));
    o.sections = parse_sections(sections.empty() ? p->sections : sections);
    // The target block was always part of the comparison's latency section.
    if (o.targets && o.sections.latency) o.sections.targets = true;
    if (!systems.empty()) o.only = split(systems, ',');
    if ((o.slots & (o.slots - 1)) != 0)
      throw CLI::ValidationError("--slots", "wants a power of two >= 2");
    if (o.same_core && o.plan != Plan::Limits)
      throw CLI::ValidationError("--same-core", "is for the limits and ratio presets");
    if (!cores.empty()) {
      const auto parts = split(cores, ',');
      if (parts.size() != 2)
        throw CLI::ValidationError("--cores", "wants two CPU numbers, e.g. 0,1");
      o.cpu_a = parse_cpu(parts[0]);
      o.cpu_b = parse_cpu(parts[1]);
      if (o.cpu_a == o.cpu_b && !o.same_core)
        throw CLI::ValidationError("--cores", "wants two different CPUs (or --same-core)");
    }
  } catch (const CLI::ParseError& e) {
    std::exit(app.exit(e) == 0 ? 0 : 2);
  }
  if (o.out_dir.empty()) o.out_dir = SHMBUS_BENCH_RESULTS_DIR;
  if (o.quick && app.count("--repeat") == 0) o.repeat = 1;
  return o;
}

}  // namespace shmbus_bench
