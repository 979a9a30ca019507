// The machine a run was taken on, written beside its figures: CPU, kernel,
// compiler and build, the versions of shmbus and of the packages compared,
// the load, and the host's near/far state as the bare line measures it.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace shmbus_bench {

constexpr double kNearThresholdNs = 200.0;  // bare-line round trip, see BASELINES.md

struct MachineInfo {
  std::string cpu_model, cpu_family, kernel, compiler, build, shmbus_version, date;
  long nproc = 0;
  bool hypervisor = false;
};

MachineInfo machine_info();

// "near" or "far", from a bare-line round trip.
const char* state_of(double round_trip_ns);

// The 1-minute load average (-1 if unknown): other processes compete for the
// cores, which the bracket (a placement check) does not see.
double load_average();

// The Debian versions of `packages` ("not installed" for a missing one).
std::map<std::string, std::string> package_versions(const std::vector<std::string>& packages);

}  // namespace shmbus_bench
