// shmbusd as a library in a thread of the test process, over its real
// socket: for tests that drive the daemon's requests directly.
#pragma once

#include <functional>
#include <thread>

#include "daemon.hpp"
#include "daemon_util.hpp"

namespace shmbus::test {

inline ErrorCode code_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.code();
  }
  return static_cast<ErrorCode>(255);
}

// The daemon as a library, in a thread of the test process.
struct InProcessDaemon {
  daemon::Daemon d;
  std::thread t;
  explicit InProcessDaemon(daemon::Config c) : d(std::move(c)) {
    d.start();
    t = std::thread([this] { d.run(); });
  }
  ~InProcessDaemon() {
    d.stop();
    t.join();
  }
};

inline daemon::Config config_for(const BusFixture& f) {
  daemon::Config c;
  c.bus = f.bus;
  c.socket_path = f.socket;
  c.log_level = "warn";
  return c;
}

}  // namespace shmbus::test
