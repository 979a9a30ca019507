// The main job's demo: connects to the bus (starting shmbusd if none runs) and
// makes two runs, each with one producer process and two consumer groups in
// separate processes (group "audit" with one member, group "workers" with two
// competing members):
//   1) paced, at a rate the machine can serve: the latency publish -> receive
//      is then what the bus itself adds;
//   2) flat out: the figure is throughput; latency there is time in the queue.
// Checks that every message reached each group exactly once, and exits 1 when not.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <shmbus/shmbus.hpp>
#include <string>

#include "demo_run.hpp"

namespace {

struct Options {
  std::uint64_t messages = 2'000'000;  // flat-out run
  std::uint64_t paced = 20'000;        // paced run
  std::uint64_t rate = 10'000;         // paced run, messages/s
  std::uint32_t size = 64;
  bool stop_daemon = false;
  shmbus::BusOptions bus;
};

void usage() {
  std::printf(
      "usage: shmbus-demo [--quick] [--messages N] [--paced N] [--rate N] [--size BYTES]\n"
      "                   [--bus NAME] [--stop-daemon]\n"
      "  Runs one producer and two consumer groups ('audit': 1 member, 'workers': 2\n"
      "  competing members) in separate processes over one topic, twice:\n"
      "    1) paced at --rate: the publish-to-receive latency is the bus's own;\n"
      "    2) flat out: throughput (latency there is queueing, not the bus).\n"
      "  Checks that each group received every message exactly once (exit 1 if not).\n"
      "  Connects to shmbusd, starting it when none runs; it keeps running afterwards.\n"
      "  --quick         a short run: --messages 200000 --paced 2000\n"
      "  --messages N    messages in the flat-out run (default 2000000)\n"
      "  --paced N       messages in the paced run (default 20000)\n"
      "  --rate N        paced run's rate in messages/s (default 10000)\n"
      "  --size BYTES    payload size, 16..65536 (default 64)\n"
      "  --bus NAME      the bus to use (default 'default'; socket from SHMBUS_SOCKET)\n"
      "  --stop-daemon   ask shmbusd to exit at the end\n");
}

// ns / us / ms / s, picked by magnitude.
std::string human_time(std::uint64_t ns) {
  char b[32];
  const double v = static_cast<double>(ns);
  if (ns < 1000)
    std::snprintf(b, sizeof b, "%llu ns", static_cast<unsigned long long>(ns));
  else if (ns < 1'000'000)
    std::snprintf(b, sizeof b, "%.1f us", v / 1e3);
  else if (ns < 1'000'000'000)
    std::snprintf(b, sizeof b, "%.1f ms", v / 1e6);
  else
    std::snprintf(b, sizeof b, "%.2f s", v / 1e9);
  return b;
}

std::string plural(std::uint64_t n, const char* one) {
  return std::to_string(n) + " " + one + (n == 1 ? "" : "s");
}

// "20000 of 20000 received, each once (members 10012 + 9988)".
std::string delivery(const demo::RunResult& r, int g, std::uint64_t total) {
  std::string s =
      std::to_string(r.group[g].distinct) + " of " + std::to_string(total) + " received, each once";
  std::string members;
  int n = 0;
  for (int c = 0; c < demo::kConsumers; ++c)
    if (demo::kGroupOf[c] == g) {
      members += (n++ ? " + " : "") + std::to_string(r.member[c].received);
    }
  if (n > 1) s += " (members " + members + ")";
  return s;
}

// Exactly once per group; prints what is off to stderr.
bool check(const char* run, const demo::RunResult& r, std::uint64_t total) {
  bool ok = r.error.empty();
  if (!ok) std::fprintf(stderr, "shmbus-demo: %s run: %s\n", run, r.error.c_str());
  for (int g = 0; g < demo::kGroups; ++g) {
    std::uint64_t bad = 0;
    for (int c = 0; c < demo::kConsumers; ++c)
      if (demo::kGroupOf[c] == g) bad += r.member[c].bad_payload;
    if (r.group[g].distinct == total && r.group[g].duplicates == 0 && bad == 0) continue;
    ok = false;
    std::fprintf(stderr,
                 "shmbus-demo: MISMATCH in the %s run, group '%s': %llu of %llu messages "
                 "received, %llu duplicates, %llu with a wrong payload\n",
                 run, demo::kGroupName[g], static_cast<unsigned long long>(r.group[g].distinct),
                 static_cast<unsigned long long>(total),
                 static_cast<unsigned long long>(r.group[g].duplicates),
                 static_cast<unsigned long long>(bad));
  }
  return ok;
}

void print_paced(const demo::RunResult& r, const Options& o) {
  std::printf(
      "1) paced: %llu messages at %llu msg/s -- latency publish -> receive: what the bus adds,\n"
      "   including waking a reader that slept between messages\n",
      static_cast<unsigned long long>(o.paced), static_cast<unsigned long long>(o.rate));
  for (int g = 0; g < demo::kGroups; ++g) {
    std::uint64_t p50 = 0, p99 = 0, max = 0;  // of the member that saw the worst
    for (int c = 0; c < demo::kConsumers; ++c)
      if (demo::kGroupOf[c] == g) {
        p50 = std::max(p50, r.member[c].p50);
        p99 = std::max(p99, r.member[c].p99);
        max = std::max(max, r.member[c].max);
      }
    std::printf("   %-8s p50 %s, p99 %s, max %s; %s\n", demo::kGroupName[g],
                human_time(p50).c_str(), human_time(p99).c_str(), human_time(max).c_str(),
                delivery(r, g, o.paced).c_str());
  }
}

void print_flat(const demo::RunResult& r, const Options& o) {
  const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  std::printf(
      "2) flat out: %llu messages as fast as they go -- throughput; latency here is time in\n"
      "   the queue, not the bus (4 processes on %s, the producer waits only for a full ring)\n",
      static_cast<unsigned long long>(o.messages),
      cpus > 0 ? plural(static_cast<std::uint64_t>(cpus), "CPU").c_str() : "? CPUs");
  for (int g = 0; g < demo::kGroups; ++g) {
    std::uint64_t last = 0, wait = 0;
    for (int c = 0; c < demo::kConsumers; ++c)
      if (demo::kGroupOf[c] == g) {
        last = std::max(last, r.member[c].last_ns);
        wait = std::max(wait, r.member[c].p50);
      }
    const double secs = last > r.start_ns ? static_cast<double>(last - r.start_ns) / 1e9 : 0;
    const double msgs = secs > 0 ? static_cast<double>(o.messages) / secs : 0;
    std::printf("   %-8s %.2f M msg/s, %.0f MB/s (queue wait p50 %s); %s\n", demo::kGroupName[g],
                msgs / 1e6, msgs * o.size / 1e6, human_time(wait).c_str(),
                delivery(r, g, o.messages).c_str());
  }
}

// How to stop the daemon: the shmbus CLI beside this build, else on PATH.
std::string stop_command(const Options& o) {
  std::error_code ec;
  namespace fs = std::filesystem;
  const fs::path cli =
      fs::read_symlink("/proc/self/exe", ec).parent_path().parent_path() / "cli" / "shmbus";
  std::string cmd = "shmbus";
  if (!ec && fs::exists(cli, ec)) {
    const fs::path rel = fs::proximate(cli, ec);  // build/release/cli/shmbus from the tree's top
    cmd = (ec || rel.begin()->string() == "..") ? cli.string() : rel.string();
  }
  cmd += " daemon stop";
  if (o.bus.bus != "default") cmd += " --bus " + o.bus.bus;
  if (const char* s = std::getenv("SHMBUS_SOCKET"); s != nullptr && *s != '\0')
    cmd += std::string(" --socket ") + s;
  return cmd;
}

bool parse_count(const char* flag, const char* text, std::uint64_t& out) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(text, &end, 10);
  if (*end != '\0' || v == 0 || errno != 0 || text[0] == '-') {
    std::fprintf(stderr, "shmbus-demo: %s needs a positive number\n", flag);
    return false;
  }
  out = v;
  return true;
}

// 0: run; 1: --help printed; 2: bad arguments (reported).
int parse(int argc, char** argv, Options& o) {
  bool quick = false, set_messages = false, set_paced = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    std::uint64_t v = 0;
    if (a == "--help" || a == "-h") {
      usage();
      return 1;
    } else if (a == "--quick") {
      quick = true;
    } else if (a == "--stop-daemon") {
      o.stop_daemon = true;
    } else if (a == "--bus" && has_value) {
      o.bus.bus = argv[++i];
    } else if ((a == "--messages" || a == "--paced" || a == "--rate" || a == "--size") &&
               has_value) {
      if (!parse_count(a.c_str(), argv[++i], v)) return 2;
      if (a == "--messages") o.messages = v, set_messages = true;
      if (a == "--paced") o.paced = v, set_paced = true;
      if (a == "--rate") o.rate = v;
      if (a == "--size") o.size = v <= 65536 ? static_cast<std::uint32_t>(v) : 0;
    } else {
      std::fprintf(stderr, "shmbus-demo: unknown argument '%s' (try --help)\n", a.c_str());
      return 2;
    }
  }
  if (quick && !set_messages) o.messages = 200'000;
  if (quick && !set_paced) o.paced = 2'000;
  if (o.size < 16 || o.size > 65536) {
    std::fprintf(stderr, "shmbus-demo: --size must be between 16 and 65536\n");
    return 2;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (const int p = parse(argc, argv, o); p != 0) return p == 1 ? 0 : 2;
  try {
    int daemon_pid = 0;
    std::string socket;
    {
      shmbus::Bus bus = shmbus::Bus::connect(o.bus);  // starts shmbusd when none answers
      daemon_pid = bus.daemon_pid();
      socket = bus.socket_path();
    }
    std::printf(
        "shmbus demo on bus '%s': 1 producer process; groups 'audit' (1 member) and 'workers'\n"
        "(2 competing members), each in its own process; %u-byte messages\n\n",
        o.bus.bus.c_str(), o.size);
    std::fflush(stdout);  // before fork(), or the children would print it again

    const std::string topic = "demo-" + std::to_string(getpid());
    demo::RunConfig cfg{o.bus, topic + "-paced", o.paced, o.size, static_cast<double>(o.rate)};
    const demo::RunResult paced = demo::run(cfg);
    bool ok = check("paced", paced, o.paced);
    if (ok) print_paced(paced, o);
    std::printf("\n");
    std::fflush(stdout);

    cfg = demo::RunConfig{o.bus, topic + "-flat", o.messages, o.size, 0};
    const demo::RunResult flat = demo::run(cfg);
    if (check("flat-out", flat, o.messages)) {
      print_flat(flat, o);
    } else {
      ok = false;
    }

    std::printf("\n%s\n", ok ? "check: each group received every message exactly once, in both runs"
                             : "check: FAILED (see above)");
    if (o.stop_daemon) {
      shmbus::Bus::connect(o.bus).shutdown_daemon();
      std::printf("shmbusd pid %d (socket %s) asked to stop (--stop-daemon)\n", daemon_pid,
                  socket.c_str());
    } else {
      std::printf(
          "shmbusd pid %d (socket %s) keeps running for the next program;\n"
          "stop it with: %s\n",
          daemon_pid, socket.c_str(), stop_command(o).c_str());
    }
    return ok ? 0 : 1;
  } catch (const shmbus::Error& e) {
    std::fprintf(stderr, "shmbus-demo: %s\n", e.what());
    return 1;
  }
}
