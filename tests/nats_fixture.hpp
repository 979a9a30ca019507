// Real nats-server processes for tests: JetStream on, loopback only, free
// ports, a temporary store. Header-only and independent of shmbus, so any
// test binary can use it; it speaks to the server only through the server's
// HTTP monitoring endpoint (a few lines over a raw socket), never a NATS
// client, so the tests' own client library stays the thing under test.
//
//   shmbus::test::NatsServer nats;
//   ASSERT_TRUE(nats.start()) << nats.log();
//   ... connect to nats.url() ...
//   nats.kill9();
//   ASSERT_TRUE(nats.restart()) << nats.log();  // same ports, same store
//
//   shmbus::test::NatsCluster cluster(3);
//   ASSERT_TRUE(cluster.start());  // healthy, with a JetStream meta leader
//   ... connect to cluster.urls() ...
//
// Every wait has a deadline; the servers die with the test (see spawn()).
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace shmbus::test {

namespace nats_fixture_detail {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// A TCP port nothing listens on right now. Another process may take it before
// the server binds it; start() notices the server's exit and picks again.
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

// Waits for `events` on `fd` until `deadline`; false on timeout or error.
inline bool wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000)));
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return false;
  }
}

// GET http://127.0.0.1:`port``path`; returns the status code (0: no answer by
// `deadline`) and the body. HTTP/1.0, so the server closes the connection
// after the body and "read to EOF" is the whole protocol. Non-blocking with a
// deadline throughout: a server that accepts but never answers (it is
// starting, or stopped with SIGSTOP) must not hang the test.
inline int http_get(int port, std::string_view path, Clock::time_point deadline,
                    std::string* body = nullptr) {
  // One slow answer may not use up a caller's whole wait: it polls again.
  deadline = std::min(deadline, Clock::now() + std::chrono::seconds(2));
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int code = 0;
  std::string in;
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  if (!ok && errno == EINPROGRESS && wait_fd(fd, POLLOUT, deadline)) {
    int err = 0;
    socklen_t len = sizeof err;
    ok = ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
  }
  if (ok) {
    const std::string req = "GET " + std::string(path) + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    std::size_t sent = 0;
    while (ok && sent < req.size()) {
      const ssize_t n = ::send(fd, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
      if (n > 0)
        sent += static_cast<std::size_t>(n);
      else if (n < 0 && (errno == EAGAIN || errno == EINTR))
        ok = wait_fd(fd, POLLOUT, deadline);
      else
        ok = false;
    }
    char buf[4096];
    while (ok) {
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n > 0)
        in.append(buf, static_cast<std::size_t>(n));
      else if (n == 0)
        break;  // EOF: the whole answer is in
      else if (errno == EAGAIN || errno == EINTR)
        ok = wait_fd(fd, POLLIN, deadline);
      else
        ok = false;
    }
    // "HTTP/1.x NNN ..."; a half-read answer (deadline passed) counts as none.
    if (ok && in.rfind("HTTP/", 0) == 0 && in.size() >= 12) code = std::atoi(in.c_str() + 9);
  }
  ::close(fd);
  if (body != nullptr) {
    const std::size_t at = in.find("\r\n\r\n");
    *body = code == 0 || at == std::string::npos ? std::string() : in.substr(at + 4);
  }
  return code;
}

// JSON without the whitespace outside strings, so the lookups below can
// match `"key":value` literally whatever the server's pretty-printing.
inline std::string compact_json(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  bool in_string = false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (in_string) {
      out += c;
      if (c == '\\' && i + 1 < s.size())
        out += s[++i];
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
      out += c;
    } else if (c != ' ' && c != '\n' && c != '\r' && c != '\t') {
      out += c;
    }
  }
  return out;
}

// The object that is the value of the first `"key":{...}` in compacted JSON
// (braces inside strings do not count); empty if there is none.
inline std::string json_object(std::string_view json, std::string_view key) {
  const std::string needle = "\"" + std::string(key) + "\":{";
  const std::size_t at = json.find(needle);
  if (at == std::string_view::npos) return {};
  const std::size_t begin = at + needle.size() - 1;
  int depth = 0;
  bool in_string = false;
  for (std::size_t i = begin; i < json.size(); ++i) {
    const char c = json[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{') {
      ++depth;
    } else if (c == '}' && --depth == 0) {
      return std::string(json.substr(begin, i - begin + 1));
    }
  }
  return {};
}

// The first `"key":"value"` in compacted JSON (server names need no unescaping).
inline std::string json_string(std::string_view json, std::string_view key) {
  const std::string needle = "\"" + std::string(key) + "\":\"";
  const std::size_t at = json.find(needle);
  if (at == std::string_view::npos) return {};
  const std::size_t begin = at + needle.size();
  const std::size_t end = json.find('"', begin);
  return end == std::string_view::npos ? std::string()
                                       : std::string(json.substr(begin, end - begin));
}

// The first `"key":N` in compacted JSON (-1: none).
inline long long json_int(std::string_view json, std::string_view key) {
  const std::string needle = "\"" + std::string(key) + "\":";
  const std::size_t at = json.find(needle);
  if (at == std::string_view::npos) return -1;
  return std::atoll(std::string(json.substr(at + needle.size(), 24)).c_str());
}

inline std::size_t count(std::string_view hay, std::string_view needle) {
  std::size_t n = 0;
  for (std::size_t at = hay.find(needle); at != std::string_view::npos;
       at = hay.find(needle, at + needle.size()))
    ++n;
  return n;
}

// Sleeps between two polls of a condition only a poll can see (an HTTP
// status, a child's exit), never past `deadline`.
inline void pause_until(Clock::time_point deadline, milliseconds step) {
  const auto now = Clock::now();
  if (now < deadline) std::this_thread::sleep_for(std::min<Clock::duration>(step, deadline - now));
}

// $NATS_SERVER (a path, or a name looked up on $PATH), else nats-server on
// $PATH; empty if there is no such executable. Resolved before fork() so the
// child only has to execv().
inline std::string find_binary() {
  const char* env = std::getenv("NATS_SERVER");
  const std::string want = env != nullptr && *env != '\0' ? env : "nats-server";
  if (want.find('/') != std::string::npos) return ::access(want.c_str(), X_OK) == 0 ? want : "";
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    const std::string candidate = (dir.empty() ? "." : dir) + "/" + want;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return {};
}

inline std::string make_temp_dir(const char* prefix) {
  std::string tmpl = std::string("/tmp/") + prefix + "-XXXXXX";
  return ::mkdtemp(tmpl.data()) != nullptr ? tmpl : std::string();
}

inline std::string describe(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "ended (wait status " + std::to_string(status) + ")";
}

// The child's exit status when execv() failed: not worth a retry.
inline constexpr int kExecFailed = 127;

}  // namespace nats_fixture_detail

class NatsCluster;

// One nats-server process, owned: started and stopped by the test, killed
// with it. Start it from a thread that outlives it (the test's own): the
// kernel's parent-death signal follows the thread that forked, not the
// process, so a server started from a short-lived helper thread dies with
// that thread.
class NatsServer {
 public:
  struct Options {
    std::string name = "n1";       // --server_name
    int port = 0;                  // client port; 0: pick a free one
    std::string store_dir;         // empty: a fresh directory, removed by the destructor
    std::string cluster_name;      // empty: not clustered
    int cluster_port = 0;          // when clustered; 0: pick a free one
    std::vector<int> route_ports;  // the other nodes' cluster ports
  };

  NatsServer() : NatsServer(Options{}) {}
  explicit NatsServer(Options options) : asked_(std::move(options)), opts_(asked_) {
    namespace d = nats_fixture_detail;
    log_dir_ = d::make_temp_dir("shmbus-nats-fixture");
    if (log_dir_.empty()) setup_error_ = "mkdtemp for the log directory failed";
    if (opts_.store_dir.empty()) {
      opts_.store_dir = d::make_temp_dir("shmbus-nats-fixture-store");
      owns_store_ = !opts_.store_dir.empty();
      if (!owns_store_) setup_error_ = "mkdtemp for the store directory failed";
    }
    pick_ports(/*first=*/true);
  }

  ~NatsServer() {
    stop();
    std::error_code ignored;
    if (!log_dir_.empty()) std::filesystem::remove_all(log_dir_, ignored);
    if (owns_store_) std::filesystem::remove_all(opts_.store_dir, ignored);
  }

  NatsServer(const NatsServer&) = delete;
  NatsServer& operator=(const NatsServer&) = delete;

  // Starts the server and waits until /healthz answers 200 (for a JetStream
  // server that means JetStream is up and, in a cluster, current with a meta
  // leader). False, with the reason in log(), if that does not happen within
  // `timeout`; the process is then gone. Already running: waits for health.
  bool start(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    namespace d = nats_fixture_detail;
    const auto deadline = d::Clock::now() + timeout;
    if (running()) return wait_healthy(deadline) == Wait::kReady;
    for (int attempt = 1; attempt <= kAttempts; ++attempt) {
      if (!spawn(attempt)) return false;
      switch (wait_healthy(deadline)) {
        case Wait::kReady:
          established_ = true;
          return true;
        case Wait::kTimedOut:
          note("not healthy within the timeout; killed");
          kill9();
          return false;
        case Wait::kExited:
          // Most likely a port taken between free_port() and the bind.
          note("the server " + d::describe(last_status_) + " before it was healthy");
          if (WIFEXITED(last_status_) && WEXITSTATUS(last_status_) == d::kExecFailed) return false;
          pick_ports(/*first=*/false);
          break;
      }
    }
    note("gave up after " + std::to_string(kAttempts) + " attempts");
    return false;
  }

  // SIGKILL, as a crash would: no flush, no goodbye to peers or clients.
  void kill9() {
    if (pid_ <= 0) return;
    signal_group(SIGKILL);
    if (!reap(nats_fixture_detail::Clock::now() + std::chrono::seconds(10)))
      note("still not reaped 10 s after SIGKILL");
  }

  // Stops it (if running) and starts it again with the same ports and the
  // same store, so clients and peers find it where it was.
  bool restart(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    if (running()) stop();
    return start(timeout);
  }

  // SIGTERM (a clean shutdown), SIGKILL if it takes more than 10 s.
  void stop() {
    if (pid_ <= 0) return;
    signal_group(SIGTERM);
    if (!reap(nats_fixture_detail::Clock::now() + std::chrono::seconds(10))) {
      note("did not stop within 10 s of SIGTERM; SIGKILL");
      kill9();
    }
  }

  // Not const: a process that exited is reaped here.
  [[nodiscard]] bool running() {
    if (pid_ <= 0) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      last_status_ = status;
      pid_ = -1;
    }
    return pid_ > 0;
  }

  [[nodiscard]] std::string url() const { return "nats://127.0.0.1:" + std::to_string(opts_.port); }
  [[nodiscard]] int port() const { return opts_.port; }
  [[nodiscard]] int cluster_port() const { return opts_.cluster_port; }
  [[nodiscard]] int monitor_port() const { return monitor_port_; }
  [[nodiscard]] pid_t pid() const { return pid_; }

  // The server's output across all its starts, with the fixture's own notes
  // (each command line, why a start failed): for failure messages.
  [[nodiscard]] std::string log() const {
    std::stringstream s;
    if (!setup_error_.empty()) s << "[fixture] " << setup_error_ << "\n";
    if (std::ifstream f(log_path()); !log_dir_.empty() && f) s << f.rdbuf();
    return s.str();
  }

 private:
  friend class NatsCluster;
  enum class Wait { kReady, kExited, kTimedOut };
  static constexpr int kAttempts = 5;

  [[nodiscard]] std::string log_path() const { return log_dir_ + "/nats-server.log"; }

  // Appends a line of the fixture's own to the log, between the server's.
  void note(const std::string& line) const {
    if (log_dir_.empty()) return;
    std::ofstream(log_path(), std::ios::app) << "[fixture] " << line << "\n";
  }

  // Ports the caller left at 0 are the fixture's to choose, but only until
  // the server has been up once: after that, clients and peers know them and
  // a restart must keep them. The monitoring port is the fixture's alone
  // (only it polls there), so it is always picked afresh after a failure.
  void pick_ports(bool first) {
    namespace d = nats_fixture_detail;
    if (first || !established_) {
      if (asked_.port == 0) opts_.port = d::free_port();
      if (!opts_.cluster_name.empty() && asked_.cluster_port == 0)
        opts_.cluster_port = d::free_port();
    }
    monitor_port_ = d::free_port();
  }

  // Forks and execs the server; false (with a note) if it cannot even begin.
  bool spawn(int attempt) {
    namespace d = nats_fixture_detail;
    if (!setup_error_.empty()) return false;
    const std::string binary = d::find_binary();
    if (binary.empty()) {
      note("no nats-server executable ($NATS_SERVER, else nats-server on $PATH)");
      return false;
    }
    std::vector<std::string> args = {binary,
                                     "-js",
                                     "-a",
                                     "127.0.0.1",
                                     "-p",
                                     std::to_string(opts_.port),
                                     "-sd",
                                     opts_.store_dir,
                                     "--server_name",
                                     opts_.name,
                                     "-m",
                                     std::to_string(monitor_port_)};
    if (!opts_.cluster_name.empty()) {
      args.insert(args.end(), {"--cluster_name", opts_.cluster_name, "--cluster",
                               "nats://127.0.0.1:" + std::to_string(opts_.cluster_port)});
      std::string routes;
      for (const int p : opts_.route_ports)
        routes += (routes.empty() ? "" : ",") + ("nats://127.0.0.1:" + std::to_string(p));
      if (!routes.empty()) args.insert(args.end(), {"--routes", routes});
    }
    std::string line = "attempt " + std::to_string(attempt) + ":";
    for (const std::string& a : args)
      line += " " + a;
    note(line);

    // Everything the child needs is made here: after fork() in a threaded
    // process (gtest, the NATS client's threads) only async-signal-safe calls
    // are allowed, so no allocation, no PATH search.
    std::vector<char*> argv;
    for (std::string& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    const int out = ::open(log_path().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (out < 0 || null < 0) {
      if (out >= 0) ::close(out);
      if (null >= 0) ::close(null);
      note("cannot open the log file or /dev/null");
      return false;
    }
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid == 0) {
      // Killed when the thread that forked it dies (for a test: the process),
      // so a crashed or SIGKILLed test leaves no server behind. Checked
      // against the parent after the prctl, in case it died before.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(d::kExecFailed);
      // Its own process group: the terminal's Ctrl-C goes to the test alone,
      // and signals reach the server through the group.
      ::setpgid(0, 0);
      ::dup2(null, STDIN_FILENO);
      ::dup2(out, STDOUT_FILENO);
      ::dup2(out, STDERR_FILENO);
      // Not every descriptor of the test is close-on-exec (the NATS client's
      // sockets, say); one inherited by the server would keep that connection
      // open after the test closed it.
#ifdef SYS_close_range
      ::syscall(SYS_close_range, 3U, ~0U, 0U);
#endif
      ::execv(argv[0], argv.data());
      ::_exit(d::kExecFailed);
    }
    ::close(out);
    ::close(null);
    if (pid < 0) {
      note("fork failed");
      return false;
    }
    // Also from this side, so the group exists before any signal is sent to it.
    ::setpgid(pid, pid);
    pid_ = pid;
    return true;
  }

  // Polls /healthz until 200, the process's exit, or the deadline: the server
  // has no other way to say it is ready.
  Wait wait_healthy(nats_fixture_detail::Clock::time_point deadline) {
    namespace d = nats_fixture_detail;
    for (;;) {
      if (!running()) return Wait::kExited;
      if (d::http_get(monitor_port_, "/healthz", deadline) == 200) return Wait::kReady;
      if (d::Clock::now() >= deadline) return running() ? Wait::kTimedOut : Wait::kExited;
      d::pause_until(deadline, std::chrono::milliseconds(5));
    }
  }

  void signal_group(int sig) const {
    if (::kill(-pid_, sig) != 0) ::kill(pid_, sig);  // the group may not exist yet
  }

  // Waits for the child's exit: waitpid() has no timeout, hence the polling.
  bool reap(nats_fixture_detail::Clock::time_point deadline) {
    for (;;) {
      if (!running()) return true;
      if (nats_fixture_detail::Clock::now() >= deadline) return false;
      nats_fixture_detail::pause_until(deadline, std::chrono::milliseconds(2));
    }
  }

  Options asked_;  // as given: which ports were left to the fixture
  Options opts_;   // as used: every port chosen, the store directory made
  std::string log_dir_;
  std::string setup_error_;
  bool owns_store_ = false;
  bool established_ = false;  // healthy once: its client and cluster ports are known
  int monitor_port_ = 0;
  pid_t pid_ = -1;
  int last_status_ = 0;
};

// Nodes on loopback, each routed to all the others: one JetStream cluster
// ("shmbus-test"), node i named "n<i>".
class NatsCluster {
 public:
  explicit NatsCluster(int nodes = 3) {
    for (int i = 0; i < nodes; ++i) {
      NatsServer::Options o;
      o.name = "n" + std::to_string(i);
      o.cluster_name = "shmbus-test";
      nodes_.push_back(std::make_unique<NatsServer>(o));
    }
  }

  // Starts every node and waits until each is healthy and JetStream has a
  // meta leader that every node names and that sees every other node as
  // current (so a stream with one replica per node can be placed at once).
  // A node that exits early (a port taken) means new ports for all and
  // another try, up to 5; false, with the nodes' log()s, otherwise.
  bool start(std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
    namespace d = nats_fixture_detail;
    const auto deadline = d::Clock::now() + timeout;
    for (int attempt = 1; attempt <= NatsServer::kAttempts; ++attempt) {
      // Every port is known before any node starts: each node's routes name
      // the others' cluster ports.
      if (!established_) assign_ports();
      for (auto& n : nodes_)
        if (!n->running() && !n->spawn(attempt)) return stop_all(false);
      switch (wait_ready(deadline)) {
        case NatsServer::Wait::kReady:
          established_ = true;
          for (auto& n : nodes_)
            n->established_ = true;
          return true;
        case NatsServer::Wait::kTimedOut:
          for (auto& n : nodes_)
            n->note("the cluster had no meta leader within the timeout");
          return stop_all(false);
        case NatsServer::Wait::kExited:
          for (auto& n : nodes_)
            if (!n->running()) n->note("exited early: " + d::describe(n->last_status_));
          stop_all(false);
          if (established_) return false;  // its ports are known; not ours to change
          break;
      }
    }
    return false;
  }

  NatsServer& node(int i) { return *nodes_.at(static_cast<std::size_t>(i)); }

  // "nats://127.0.0.1:P0,nats://127.0.0.1:P1,..." (natsConnection_ConnectTo's form).
  [[nodiscard]] std::string urls() const {
    std::string s;
    for (const auto& n : nodes_)
      s += (s.empty() ? "" : ",") + n->url();
    return s;
  }

  [[nodiscard]] std::vector<std::string> url_list() const {
    std::vector<std::string> v;
    for (const auto& n : nodes_)
      v.push_back(n->url());
    return v;
  }

 private:
  void assign_ports() {
    namespace d = nats_fixture_detail;
    std::vector<int> cports;
    for (auto& n : nodes_) {
      // Given as if by the caller, so a node's own retries and restarts never
      // move them away from its peers' routes.
      n->asked_.port = n->opts_.port = d::free_port();
      n->asked_.cluster_port = n->opts_.cluster_port = d::free_port();
      n->monitor_port_ = d::free_port();
      cports.push_back(n->opts_.cluster_port);
    }
    for (std::size_t i = 0; i < nodes_.size(); ++i) {
      std::vector<int> routes;
      for (std::size_t j = 0; j < nodes_.size(); ++j)
        if (j != i) routes.push_back(cports[j]);
      nodes_[i]->asked_.route_ports = nodes_[i]->opts_.route_ports = routes;
    }
  }

  bool stop_all(bool result) {
    for (auto& n : nodes_)
      n->kill9();
    return result;
  }

  // Polls until every node is healthy and the meta leader is settled, a node
  // exits, or the deadline passes.
  NatsServer::Wait wait_ready(nats_fixture_detail::Clock::time_point deadline) {
    namespace d = nats_fixture_detail;
    for (;;) {
      for (auto& n : nodes_)
        if (!n->running()) return NatsServer::Wait::kExited;
      if (ready(deadline)) return NatsServer::Wait::kReady;
      if (d::Clock::now() >= deadline) return NatsServer::Wait::kTimedOut;
      d::pause_until(deadline, std::chrono::milliseconds(20));
    }
  }

  // The meta leader, judged by the nodes' /jsz: a node's "meta_cluster" has
  // a "leader" once it knows one, but after the leader dies the others keep
  // naming it for seconds. So all must name the same one, of the full size,
  // and that one must itself answer and list all the others as "replicas"
  // that are "current" (only the leader's /jsz lists them).
  bool ready(nats_fixture_detail::Clock::time_point deadline) {
    namespace d = nats_fixture_detail;
    std::string leader;
    bool leader_confirmed = false;
    for (auto& n : nodes_) {
      std::string body;
      if (d::http_get(n->monitor_port_, "/healthz", deadline) != 200 ||
          d::http_get(n->monitor_port_, "/jsz", deadline, &body) != 200)
        return false;
      const std::string meta = d::json_object(d::compact_json(body), "meta_cluster");
      const std::string named = d::json_string(meta, "leader");
      if (named.empty() || (!leader.empty() && named != leader) ||
          d::json_int(meta, "cluster_size") != static_cast<long long>(nodes_.size()))
        return false;
      leader = named;
      if (named == n->opts_.name) {
        if (d::count(meta, "\"current\":true") != nodes_.size() - 1 ||
            d::count(meta, "\"current\":false") != 0)
          return false;
        leader_confirmed = true;
      }
    }
    return leader_confirmed;
  }

  std::vector<std::unique_ptr<NatsServer>> nodes_;
  bool established_ = false;
};

}  // namespace shmbus::test
