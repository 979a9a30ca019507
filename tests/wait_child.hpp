// Waiting for a child process with a deadline, without gtest: the tests
// (test_util.hpp) and the benchmarks' fixtures (nats_server.hpp) share it.
#pragma once

#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <thread>

namespace shmbus::test {

// Waits for a child up to `timeout`; kills it and returns -1 if it is late.
// Else its exit code, or 128 + the signal that ended it.
inline int wait_child(pid_t pid, std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  for (;;) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0) return -1;  // not our child (or reaped already)
    if (std::chrono::steady_clock::now() > until) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    // Polling a child's exit: waitpid has no timeout of its own.
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace shmbus::test
