// Compare::run(): the order of a run. The CPUs, the output and scratch
// directories, the systems, the brackets, iceoryx's daemon around the
// sections that need it, then the report.

#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <stdexcept>

#include "compare.hpp"

#ifndef SHMBUS_IOX_ROUDI
#define SHMBUS_IOX_ROUDI "/usr/bin/iox-roudi"
#endif

namespace shmbus_bench {
namespace {

// mkdir -p; throws with the path and errno's text.
void make_dirs(const std::string& dir) {
  for (std::size_t i = 1; i <= dir.size(); ++i) {
    if (i < dir.size() && dir[i] != '/') continue;
    const std::string part = dir.substr(0, i);
    if (::mkdir(part.c_str(), 0755) != 0 && errno != EEXIST)
      throw std::runtime_error("mkdir " + part + ": " + std::strerror(errno));
  }
}

}  // namespace

int Compare::run() {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (::sched_getaffinity(0, sizeof allowed, &allowed) != 0)
    throw std::runtime_error(std::string("sched_getaffinity: ") + std::strerror(errno));
  if (opt_.cpu_a < 0) {
    std::vector<int> cpus;
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &allowed)) cpus.push_back(c);
    if (cpus.size() >= 2) {
      opt_.cpu_a = cpus[0];
      opt_.cpu_b = cpus[1];
    } else if (opt_.plan == Plan::Limits && !cpus.empty()) {
      std::fprintf(stderr, "shmbus-compare: only one CPU is allowed; running on one core\n");
      opt_.cpu_a = opt_.cpu_b = cpus[0];
      opt_.same_core = true;
    } else {
      throw std::runtime_error("needs two CPUs (one for each side)");
    }
  }
  for (const int c : {opt_.cpu_a, opt_.cpu_b})
    if (!CPU_ISSET(c, &allowed))
      throw std::runtime_error("CPU " + std::to_string(c) + " is not available to this process");
  make_dirs(opt_.out_dir);
  char tmpl[] = "/tmp/shmbus-compare-XXXXXX";
  if (!::mkdtemp(tmpl)) throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
  work_dir_ = tmpl;
  runner_.set_scratch_dir(work_dir_);
  runner_.remove_on_interrupt(work_dir_ + "/roudi.toml");
  runner_.remove_on_interrupt(work_dir_ + "/roudi.log");

  build_systems();
  packages_ = package_versions({"libboost-dev", "libzmq3-dev", "iceoryx", "libiceoryx-posh-dev",
                                "libconcurrentqueue-dev", "python3-matplotlib"});
#ifdef SHMBUS_CMP_ZMQ
  packages_["libzmq (runtime)"] = zmq_version_string();
#endif
#ifdef SHMBUS_CMP_BOOST
  packages_["Boost (headers)"] = boost_version_string();
#endif
#ifdef SHMBUS_CMP_ICEORYX
  packages_["iceoryx (headers)"] = iceoryx_version();
#endif

  const MachineInfo m = machine_info();
  print_header(m);

  const std::uint64_t t0 = now_ns();
  load_start_ = load_average();
  bracket_start_ = bracket_round_trip();

  const Sections& sec = opt_.sections;
#ifdef SHMBUS_CMP_ICEORYX
  if (sys("iceoryx") && (sec.latency || sec.targets || sec.throughput)) {
    std::string err;
    const std::string pid_file = opt_.out_dir + "/.roudi.pid";
    std::fprintf(stderr, "  starting iox-roudi\n");
    std::vector<std::size_t> pools = opt_.sizes;
    pools.push_back(64);  // the target block's sizes
    pools.push_back(1 << 20);
    roudi_up_ = iceoryx_start_roudi(runner_, SHMBUS_IOX_ROUDI, work_dir_, pools, pid_file, err);
    if (roudi_up_) {
      std::ofstream(pid_file) << static_cast<int>(runner_.daemon()) << "\n";
    } else {
      md_.out("\nSkipped: iceoryx: RouDi did not start: %s\n", err.c_str());
      failures_.push_back("iceoryx: RouDi did not start: " + err);
      for (auto& c : comparators_)
        if (c.key == "iceoryx") {
          c.system.reset();
          c.skipped = "RouDi did not start: " + err;
        }
    }
  }
#endif

  if (sec.latency) latency_section();
  if (sec.targets) target_block();
  if (sec.ratio) ratio_section();
  if (sec.throughput) throughput_section();
#ifdef SHMBUS_CMP_ICEORYX
  if (roudi_up_) {
    std::fprintf(stderr, "  stopping iox-roudi\n");
    iceoryx_stop_roudi(runner_);
  }
#endif
  if (sec.blocking) blocking_section();

  bracket_end_ = bracket_round_trip();
  load_end_ = load_average();
  total_s_ = static_cast<double>(now_ns() - t0) / 1e9;

  if (sec.latency || sec.throughput) print_summary();
  if (opt_.targets) evaluate_targets();
  print_run_state();

  write_json(m);
  if (opt_.plot) draw_plot();
  if (!md_.save(path(".md")))
    std::fprintf(stderr, "shmbus-compare: cannot write %s: %s\n", path(".md").c_str(),
                 std::strerror(errno));
  md_.flush();
  ::unlink((work_dir_ + "/roudi.toml").c_str());
  ::unlink((work_dir_ + "/roudi.log").c_str());
  ::rmdir(work_dir_.c_str());
  return failures_.empty() ? 0 : 1;
}

}  // namespace shmbus_bench
