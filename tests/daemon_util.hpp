// A real shmbusd process for tests: started with fork/exec on a private socket
// and bus name, waited for on its socket (never a blind sleep), stopped with
// SIGTERM (or SIGKILL) and reaped with a timeout.
#pragma once

#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cstdlib>
#include <fstream>
#include <vector>

#include "keeper.hpp"
#include "os.hpp"
#include "protocol.hpp"
#include "region.hpp"
#include "test_util.hpp"

namespace shmbus::test {

// True once `pid` has exited (a zombie counts: it will never run again).
inline bool process_gone(pid_t pid) {
  if (::kill(pid, 0) != 0) return true;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  const auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() &&
         (line[close + 2] == 'Z' || line[close + 2] == 'X');
}

inline bool can_connect(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/shmbus-test-XXXXXX";
    path = ::mkdtemp(tmpl);
    ::chmod(path.c_str(), 0755);  // other uids (access tests) must reach the socket
  }
  ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
};

class DaemonProcess {
 public:
  DaemonProcess(std::string bus, std::string socket, std::string config = {})
      : bus_(std::move(bus)), socket_(std::move(socket)), config_(std::move(config)) {}
  ~DaemonProcess() { stop(); }

  // Starts shmbusd and waits (up to 30 s: a sanitizer build on a loaded
  // machine starts slowly) until it accepts connections.
  bool start() {
    pid_ = ::fork();
    if (pid_ == 0) {
      std::vector<const char*> argv = {SHMBUSD_PATH,    "--bus",       bus_.c_str(), "--socket",
                                       socket_.c_str(), "--log-level", "warn"};
      if (!config_.empty()) {
        argv.push_back("--config");
        argv.push_back(config_.c_str());
      }
      if (!data_dir.empty()) {
        argv.push_back("--data-dir");
        argv.push_back(data_dir.c_str());
      }
      if (file_size_limit != 0) {
        const rlimit lim{file_size_limit, file_size_limit};
        if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) ::_exit(126);
      }
      argv.push_back(nullptr);
      ::execv(SHMBUSD_PATH, const_cast<char* const*>(argv.data()));
      ::_exit(127);
    }
    return wait_until([&] { return can_connect(socket_) || exited(); }, std::chrono::seconds(30)) &&
           !exited();
  }
  // Returns the exit status, or -1 if it had to be killed.
  int stop(int sig = SIGTERM) {
    if (pid_ <= 0) return status_;
    ::kill(pid_, sig);
    status_ = wait_child(pid_, std::chrono::seconds(30));
    pid_ = -1;
    return status_;
  }
  void kill9() { stop(SIGKILL); }
  // Runs a daemon that is expected to refuse to start; returns its exit status.
  int run_expecting_exit() {
    pid_ = ::fork();
    if (pid_ == 0) {
      ::execl(SHMBUSD_PATH, SHMBUSD_PATH, "--bus", bus_.c_str(), "--socket", socket_.c_str(),
              "--log-level", "error", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    status_ = wait_child(pid_, std::chrono::seconds(30));
    pid_ = -1;
    return status_;
  }
  [[nodiscard]] pid_t pid() const { return pid_; }
  // True (and reaps it) if the daemon has exited by itself.
  bool exited() {
    if (pid_ <= 0) return true;
    int st = 0;
    if (::waitpid(pid_, &st, WNOHANG) == pid_) {
      status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      pid_ = -1;
      return true;
    }
    return false;
  }
  [[nodiscard]] int status() const { return status_; }
  // File topics' directory (--data-dir); empty: the daemon's default.
  std::string data_dir;
  // RLIMIT_FSIZE of the daemon in bytes (0: unchanged): a full disk for
  // its file topics, without a mount.
  rlim_t file_size_limit = 0;

 private:
  std::string bus_, socket_, config_;
  pid_t pid_ = -1;
  int status_ = -1;
};

// The descriptors the daemon at `socket` hands this process for `topic`,
// through the protocol itself (empty when it refuses).
inline detail::Descriptors topic_fds(const std::string& socket, const std::string& topic) {
  namespace proto = detail::proto;
  const int fd = detail::connect_unix(socket);
  if (fd < 0) return {};
  detail::Received r;
  if (detail::send_frame(fd, proto::frame(proto::OpenTopic{topic}, 1)))
    r = detail::recv_frame(fd, std::chrono::seconds(10));
  ::close(fd);
  if (!proto::decode_reply<proto::TopicReply>(r.body).message) return {};
  return std::move(r.fds);
}

// A daemon's topic region mapped as a client maps it (the descriptors are
// closed again; the mapping stays).
inline std::shared_ptr<detail::Region> region_of(const std::string& socket, const std::string& bus,
                                                 const std::string& topic) {
  const detail::Descriptors fds = topic_fds(socket, topic);
  if (fds.size() != 2) throw Error(ErrorCode::NotFound, "no descriptors for " + topic);
  return detail::Region::from_fd(fds[0], fds[1], region_name(bus, topic));
}

// A bus name and socket of its own for each test.
struct BusFixture {
  TempDir dir;
  std::string bus = unique_name("b");
  std::string socket = dir.path + "/bus.sock";
  BusOptions options() const {
    BusOptions o;
    o.bus = bus;
    o.socket_path = socket;
    o.autospawn = false;
    return o;
  }
  ~BusFixture() {
    // The keeper of this bus's daemon, with the topics it holds (it would
    // also exit within a second of the directory's removal).
    daemon::dismiss_keeper(daemon::keeper_path(socket));
    // Regions of this bus that a test left behind.
    std::system(("rm -f /dev/shm/shmbus." + bus + ".*").c_str());
  }
};

}  // namespace shmbus::test
