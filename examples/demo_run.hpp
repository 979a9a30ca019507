// One run of the demo: a topic of its own, consumer processes in groups
// "audit" (one member) and "workers" (two competing members), one producer
// process, fork()ed; every receive is checked off in a per-group bitmap in
// shared memory so the caller can tell "exactly once per group" for certain.
#pragma once

#include <cstdint>
#include <shmbus/shmbus.hpp>
#include <string>

namespace demo {

inline constexpr int kConsumers = 3;  // audit, workers, workers
inline constexpr int kGroups = 2;
inline constexpr const char* kGroupName[kGroups] = {"audit", "workers"};
inline constexpr int kGroupOf[kConsumers] = {0, 1, 1};

struct RunConfig {
  shmbus::BusOptions bus;
  std::string topic;
  std::uint64_t messages = 0;
  std::uint32_t size = 64;
  double rate = 0;  // messages/s; 0: flat out
};

struct MemberResult {
  std::uint64_t received = 0;
  std::uint64_t bad_payload = 0;            // payload's sequence differs from the message's
  std::uint64_t last_ns = 0;                // CLOCK_MONOTONIC of its last receive
  std::uint64_t p50 = 0, p99 = 0, max = 0;  // publish -> receive, ns
};

struct GroupResult {
  std::uint64_t distinct = 0;    // messages of the run the group received at least once
  std::uint64_t duplicates = 0;  // receives of a message the group already had
};

struct RunResult {
  std::string error;           // empty when every process did its part in time
  std::uint64_t start_ns = 0;  // CLOCK_MONOTONIC when the producer began
  MemberResult member[kConsumers];
  GroupResult group[kGroups];
};

// Creates cfg.topic, runs the processes, deletes the topic. Every wait is
// bounded (joining, receiving, publishing); a process that fails or runs out
// of time is reported in `error`, never waited on forever.
RunResult run(const RunConfig& cfg);

std::uint64_t now_ns();

}  // namespace demo
