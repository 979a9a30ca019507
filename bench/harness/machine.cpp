#include "machine.hpp"

#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <fstream>

#include "shmbus/version.hpp"

#ifndef SHMBUS_BENCH_BUILD
#define SHMBUS_BENCH_BUILD "unknown build"
#endif

namespace shmbus_bench {
namespace {

// The output of a shell command, trailing blanks removed ("" if it fails).
std::string run_command(const std::string& cmd) {
  std::string out;
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    char buf[256];
    while (std::fgets(buf, sizeof buf, p))
      out += buf;
    (void)::pclose(p);  // its status says nothing more than an empty output does
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == ' '))
    out.pop_back();
  return out;
}

}  // namespace

MachineInfo machine_info() {
  MachineInfo m;
  m.nproc = ::sysconf(_SC_NPROCESSORS_ONLN);
  std::ifstream f("/proc/cpuinfo");
  std::string line, family, model;
  while (std::getline(f, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) {
      if (!m.cpu_model.empty()) break;  // first processor only
      continue;
    }
    std::string key = line.substr(0, colon);
    while (!key.empty() && (key.back() == ' ' || key.back() == '\t'))
      key.pop_back();
    std::string v = line.substr(colon + 1);
    if (!v.empty() && v[0] == ' ') v.erase(0, 1);
    if (key == "model name")
      m.cpu_model = v;
    else if (key == "cpu family")
      family = v;
    else if (key == "model")
      model = v;
    else if (key == "flags")
      m.hypervisor = (" " + v + " ").find(" hypervisor ") != std::string::npos;
  }
  if (!family.empty()) m.cpu_family = "family " + family + " model " + model;
  utsname u{};
  if (::uname(&u) == 0) m.kernel = std::string(u.sysname) + " " + u.release + " " + u.machine;
#if defined(__clang__)
  m.compiler = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  m.compiler = std::string("g++ ") + __VERSION__;
#else
  m.compiler = "unknown";
#endif
  m.build = SHMBUS_BENCH_BUILD;
  m.shmbus_version = shmbus::version();
  char buf[64];
  const std::time_t t = std::time(nullptr);
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S %Z", std::localtime(&t));
  m.date = buf;
  return m;
}

const char* state_of(double round_trip_ns) {
  return round_trip_ns < kNearThresholdNs ? "near" : "far";
}

double load_average() {
  double l = -1;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &l) != 1) l = -1;
    std::fclose(f);
  }
  return l;
}

std::map<std::string, std::string> package_versions(const std::vector<std::string>& packages) {
  std::map<std::string, std::string> out;
  for (const auto& pkg : packages) {
    const std::string v = run_command("dpkg-query -W -f='${Version}' " + pkg + " 2>/dev/null");
    out[pkg] = v.empty() ? "not installed" : v;
  }
  return out;
}

}  // namespace shmbus_bench
