// Helpers shared by the tests: unique topic names, clean-up, child processes
// waited on with a timeout (a bug fails the test instead of hanging CI).
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <shmbus/shmbus.hpp>
#include <stdexcept>
#include <string>
#include <thread>

#include "wait_child.hpp"

namespace shmbus::test {

inline std::string unique_name(const std::string& base) {
  static std::atomic<int> counter{0};
  return base + "-" + std::to_string(::getpid()) + "-" +
         std::to_string(counter.fetch_add(1, std::memory_order_relaxed));
}

// Topic options for tests: a small ring of small slots.
inline TopicOptions ring_options(std::uint32_t slots = 8, std::uint32_t size = 64,
                                 Policy policy = Policy::Block) {
  TopicOptions o;
  o.slot_count = slots;
  o.slot_size = size;
  o.policy = policy;
  return o;
}

// Creates a topic and removes its name when the test ends.
struct ScopedTopic {
  std::string name;
  Topic topic;
  ScopedTopic(const std::string& base, const TopicOptions& o)
      : name(unique_name(base)), topic(Topic::create(name, o)) {}
  ~ScopedTopic() { Topic::remove(name); }
};

inline std::span<const std::byte> bytes_of(const std::string& s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}
inline std::string string_of(std::span<const std::byte> d) {
  return std::string(reinterpret_cast<const char*>(d.data()), d.size());
}

// Forks a child that runs `body` and exits with its return value (0 = success).
inline pid_t spawn(const std::function<int()>& body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    int rc = 99;
    try {
      rc = body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child %d: %s\n", ::getpid(), e.what());
    }
    ::_exit(rc);
  }
  return pid;
}

// A process-shared counter in an anonymous shared mapping, for handshakes
// between forked processes (wait on a condition, never sleep blindly).
struct SharedCounters {
  std::atomic<std::uint64_t> value[16];
};
inline SharedCounters* make_shared_counters() {
  void* p = ::mmap(nullptr, sizeof(SharedCounters), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::runtime_error("mmap failed");
  return new (p) SharedCounters{};
}

inline bool wait_until(const std::function<bool()>& cond, std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > until) return cond();
    std::this_thread::yield();
  }
  return true;
}

}  // namespace shmbus::test
