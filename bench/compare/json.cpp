// The run as JSON (every figure, every run, the histograms, the machine and
// the versions), and the plot drawn from it by bench/plot.py.

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <csignal>
#include <cstring>
#include <fstream>
#include <thread>

#include "compare.hpp"

#ifndef SHMBUS_BENCH_PLOT_SCRIPT
#define SHMBUS_BENCH_PLOT_SCRIPT "bench/plot.py"
#endif

namespace shmbus_bench {

void Compare::write_json(const MachineInfo& m) {
  std::string j = "{\n";
  j += strprintf("  \"tool\": \"shmbus-compare\",\n  \"preset\": \"%s\",\n", opt_.preset.c_str());
  j += "  \"shmbus_version\": \"" + json_escape(m.shmbus_version) + "\",\n";
  j += "  \"command\": \"" + json_escape(opt_.command) + "\",\n";
  j += "  \"machine\": {";
  j += "\"nproc\": " + std::to_string(m.nproc);
  j += ", \"cpu_model\": \"" + json_escape(m.cpu_model) + "\"";
  j += ", \"hypervisor\": " + std::string(m.hypervisor ? "true" : "false");
  j += ", \"kernel\": \"" + json_escape(m.kernel) + "\"";
  j += ", \"compiler\": \"" + json_escape(m.compiler) + "\"";
  j += ", \"build\": \"" + json_escape(m.build) + "\"";
  j += ", \"date\": \"" + json_escape(m.date) + "\"},\n";
  j += "  \"packages\": {";
  bool first = true;
  for (const auto& [k, v] : packages_) {
    j +=
        (first ? "" : ", ") + std::string("\"") + json_escape(k) + "\": \"" + json_escape(v) + "\"";
    first = false;
  }
  j += "},\n";
  j += strprintf("  \"placement\": {\"same_core\": %s, \"cpu_a\": %d, \"cpu_b\": %d},\n",
                 opt_.same_core ? "true" : "false", opt_.cpu_a,
                 opt_.same_core ? opt_.cpu_a : opt_.cpu_b);
  j += strprintf("  \"throughput_consumer_reads_payload\": %s,\n",
                 opt_.read_payload ? "true" : "false");
  const auto state = [](double rt) { return rt > 0 ? state_of(rt) : "unknown"; };
  j += strprintf(
      "  \"bracket\": {\"start_round_trip_ns\": %.1f, \"end_round_trip_ns\": %.1f, "
      "\"start\": \"%s\", \"end\": \"%s\"},\n",
      bracket_start_, bracket_end_, state(bracket_start_), state(bracket_end_));
  j += strprintf("  \"load_average_1min\": {\"start\": %.2f, \"end\": %.2f},\n", load_start_,
                 load_end_);
  j += strprintf("  \"total_seconds\": %.1f,\n", total_s_);
  j += "  \"sizes\": [";
  for (std::size_t i = 0; i < opt_.sizes.size(); ++i)
    j += (i ? ", " : "") + std::to_string(opt_.sizes[i]);
  j += "],\n  \"latency_blocks\": [";
  first = true;
  for (std::size_t size : opt_.sizes) {
    const LatRow* line = find_lat("latency", "bare-line", size);
    if (!line) continue;
    j += strprintf("%s{\"size\": %zu, \"bare_line_round_trip_ns\": %.1f, \"state\": \"%s\"}",
                   first ? "" : ", ", size, 2 * line->st.p50, state_of(2 * line->st.p50));
    first = false;
  }
  j += "],\n  \"systems\": [";
  first = true;
  for (const auto& c : comparators_) {
    j += first ? "\n    " : ",\n    ";
    first = false;
    j += "{\"key\": \"" + json_escape(c.key) + "\", \"name\": \"" + json_escape(c.name) + "\"";
    if (c.system)
      j += strprintf(", \"baseline\": %s, \"blocking\": %s, \"in_process\": %s",
                     c.system->baseline ? "true" : "false", c.system->blocking ? "true" : "false",
                     c.system->in_process ? "true" : "false");
    j += ", \"skipped\": " +
         (c.skipped.empty() ? std::string("null") : "\"" + json_escape(c.skipped) + "\"");
    j += "}";
  }
  j += "\n  ],\n  \"latency\": [";
  for (std::size_t i = 0; i < lat_.size(); ++i) {
    const auto& r = lat_[i];
    j += i ? ",\n    " : "\n    ";
    j += "{\"section\": \"" + r.section + "\", \"key\": \"" + r.key + "\", \"system\": \"" +
         json_escape(r.system) + "\"";
    j += ", \"size\": " + std::to_string(r.size);
    j += ", \"baseline\": " + std::string(r.baseline ? "true" : "false");
    j += ", \"blocking\": " + std::string(r.blocking ? "true" : "false");
    j += ", \"ok\": " + std::string(r.ok ? "true" : "false");
    if (!r.state.empty()) j += ", \"state\": \"" + r.state + "\"";
    if (r.ok) {
      j += strprintf(", \"rounds\": %" PRIu64
                     ", \"one_way_ns\": {\"min\": %.1f, \"p50\": %.1f, "
                     "\"p99\": %.1f, \"p99_9\": %.1f, \"max\": %.1f}",
                     r.st.rounds, r.st.min, r.st.p50, r.st.p99, r.st.p999, r.st.max);
      j += ", \"histogram_one_way_ns\": [";
      for (std::size_t k = 0; k < r.hist.size(); ++k)
        j += strprintf("%s[%.1f, %.1f, %.0f]", k ? ", " : "", r.hist[k][0], r.hist[k][1],
                       r.hist[k][2]);
      j += "]";
    } else {
      j += ", \"error\": \"" + json_escape(r.error) + "\"";
    }
    j += "}";
  }
  j += "\n  ],\n  \"throughput\": [";
  for (std::size_t i = 0; i < tput_.size(); ++i) {
    const auto& r = tput_[i];
    j += i ? ",\n    " : "\n    ";
    j += "{\"key\": \"" + r.key + "\", \"system\": \"" + json_escape(r.system) + "\"";
    j += ", \"size\": " + std::to_string(r.size);
    j += ", \"baseline\": " + std::string(r.baseline ? "true" : "false");
    const bool ok = r.ok && !r.seconds.empty();
    j += ", \"ok\": " + std::string(ok ? "true" : "false");
    j += ", \"messages\": " + std::to_string(r.count);
    if (ok) {
      j += strprintf(", \"messages_per_s\": %.1f, \"bytes_per_s\": %.1f, \"runs_seconds\": [",
                     r.median_rate(), r.median_rate() * static_cast<double>(r.size));
      for (std::size_t k = 0; k < r.seconds.size(); ++k)
        j += strprintf("%s%.6f", k ? ", " : "", r.seconds[k]);
      j += "], \"runs_consumer_fetches\": [";
      for (std::size_t k = 0; k < r.fetches.size(); ++k)
        j += strprintf("%s%" PRIu64, k ? ", " : "", r.fetches[k]);
      j += "]";
    } else {
      j += ", \"error\": \"" + json_escape(r.error) + "\"";
    }
    j += "}";
  }
  j += "\n  ],\n  \"targets\": [";
  for (std::size_t i = 0; i < targets_.size(); ++i) {
    const auto& t = targets_[i];
    j += i ? ",\n    " : "\n    ";
    j += "{\"what\": \"" + json_escape(t.what) + "\", \"target\": \"" + json_escape(t.rule) + "\"";
    if (t.available)
      j += strprintf(", \"ratio\": %.4f, \"result\": \"%s\"", t.value, t.pass ? "PASS" : "MISS");
    else
      j += ", \"ratio\": null, \"result\": \"n/a\"";
    j += ", \"detail\": \"" + json_escape(t.detail) + "\"}";
  }
  j += "\n  ],\n  \"latency_ratio_pairs\": [";
  for (std::size_t i = 0; i < pairs_.size(); ++i)
    j += strprintf(
        "%s{\"size\": %zu, \"bare_line_p50_ns\": %.1f, \"shmbus_busy_spin_p50_ns\": %.1f}",
        i ? ",\n    " : "\n    ", pairs_[i].size, pairs_[i].line_p50, pairs_[i].shmbus_p50);
  j += "\n  ],\n  \"failures\": [";
  for (std::size_t i = 0; i < failures_.size(); ++i)
    j += (i ? ", \"" : "\"") + json_escape(failures_[i]) + "\"";
  j += "]\n}\n";
  const std::string path = json_path();
  std::ofstream f(path);
  f << j;
  f.close();
  if (!f) {
    std::fprintf(stderr, "shmbus-compare: cannot write %s: %s\n", path.c_str(),
                 std::strerror(errno));
    failures_.push_back("cannot write " + path);
  }
}

// Runs plot.py with Debian's python (matplotlib), at most 120 s.
void Compare::draw_plot() {
  const std::string json = json_path();
  const std::string png = path(".png");
  const pid_t pid = ::fork();
  if (pid < 0) {
    failures_.push_back(strprintf("plot: fork: %s", std::strerror(errno)));
    return;
  }
  if (pid == 0) {
    ::dup2(2, 1);  // the plot's chatter goes to stderr, not into the Markdown
    ::execl(opt_.python.c_str(), opt_.python.c_str(), SHMBUS_BENCH_PLOT_SCRIPT, json.c_str(),
            png.c_str(), static_cast<char*>(nullptr));
    std::fprintf(stderr, "shmbus-compare: exec %s: %s\n", opt_.python.c_str(),
                 std::strerror(errno));
    ::_exit(127);
  }
  const std::uint64_t deadline = now_ns() + 120'000'000'000ULL;
  int st = 0;
  for (;;) {
    if (::waitpid(pid, &st, WNOHANG) == pid) break;
    if (now_ns() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &st, 0);
      failures_.push_back("plot: plot.py did not finish within 120 s");
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
    md_.out("\nPlot: %s\n", png.c_str());
  } else {
    md_.out("\nPlot: not drawn (%s %s failed; is python3-matplotlib installed?)\n",
            opt_.python.c_str(), SHMBUS_BENCH_PLOT_SCRIPT);
    failures_.push_back("plot: plot.py failed");
  }
}
}  // namespace shmbus_bench
