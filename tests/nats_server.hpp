// Real nats-server processes for the bridge's tests and benchmark: JetStream
// on, loopback only, free ports, a temporary store, the child killed with its
// parent (PR_SET_PDEATHSIG) so a crashed test leaves no server behind. Ready
// means its monitoring endpoint answers /healthz with 200 (JetStream
// included); every wait has a deadline.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "wait_child.hpp"

namespace shmbus::test {

// A TCP port nothing listens on now (bound to 127.0.0.1:0, then closed).
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
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

// GET `path` from 127.0.0.1:`port`; the status line's code (0: no answer).
inline int http_get(int port, const std::string& path, std::string* body = nullptr) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int code = 0;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    const std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (::write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
      std::string in;
      char buf[4096];
      ssize_t n;
      while ((n = ::read(fd, buf, sizeof buf)) > 0)
        in.append(buf, static_cast<std::size_t>(n));
      if (in.rfind("HTTP/", 0) == 0 && in.size() > 12) code = std::atoi(in.c_str() + 9);
      if (body != nullptr) {
        const std::size_t at = in.find("\r\n\r\n");
        *body = at == std::string::npos ? std::string() : in.substr(at + 4);
      }
    }
  }
  ::close(fd);
  return code;
}

class NatsServer {
 public:
  struct Options {
    std::string name = "n1";
    std::string cluster_name;      // empty: not clustered
    int cluster_port = 0;          // 0: a free one (when clustered)
    std::vector<int> route_ports;  // the other nodes' cluster ports
    int port = 0;                  // 0: a free one
  };

  NatsServer() : NatsServer(Options{}) {}
  explicit NatsServer(Options o) : o_(std::move(o)) {
    char tmpl[] = "/tmp/shmbus-nats-XXXXXX";
    dir_ = ::mkdtemp(tmpl) != nullptr ? tmpl : "/tmp";
    if (o_.port == 0) o_.port = free_port();
    if (!o_.cluster_name.empty() && o_.cluster_port == 0) o_.cluster_port = free_port();
    monitor_ = free_port();
  }
  ~NatsServer() {
    stop();
    std::error_code ec;
    if (dir_ != "/tmp") std::filesystem::remove_all(dir_, ec);
  }
  NatsServer(const NatsServer&) = delete;
  NatsServer& operator=(const NatsServer&) = delete;

  // Starts it and waits until it is healthy (false, with log(), if not).
  bool start(std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    for (int attempt = 0; attempt < 5; ++attempt) {
      launch();
      if (wait_healthy(timeout)) return true;
      if (running()) return false;  // up but never healthy: a real failure
      monitor_ = free_port();
      // A lone server's port is nobody's business yet; a cluster node's
      // ports are known to its peers and kept.
      if (o_.cluster_name.empty() && !started_once_) o_.port = free_port();
    }
    return false;
  }
  // Starts the process without waiting (a cluster node is healthy only once
  // its peers run too).
  void launch() { spawn(); }
  // Waits until /healthz answers 200; false if it exited or the time passed.
  bool wait_healthy(std::chrono::milliseconds timeout) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
      if (!running()) return false;  // exited: a port taken meanwhile, say
      if (http_get(monitor_, "/healthz") == 200) {
        started_once_ = true;
        return true;
      }
      // Polling the server's health endpoint: it has no other way to say so.
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }
  // Same ports, same store.
  bool restart(std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    stop();
    return start(timeout);
  }
  void kill9() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  // SIGTERM, and SIGKILL if it has not exited within 10 s.
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    (void)wait_child(pid_, std::chrono::seconds(10));
    pid_ = -1;
  }
  [[nodiscard]] bool running() {
    if (pid_ <= 0) return false;
    if (::waitpid(pid_, nullptr, WNOHANG) == pid_) pid_ = -1;
    return pid_ > 0;
  }
  [[nodiscard]] std::string url() const { return "nats://127.0.0.1:" + std::to_string(o_.port); }
  [[nodiscard]] int port() const { return o_.port; }
  [[nodiscard]] int cluster_port() const { return o_.cluster_port; }
  [[nodiscard]] int monitor_port() const { return monitor_; }
  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] std::string log() const {
    std::ifstream f(dir_ + "/server.log");
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
  }

 private:
  void spawn() {
    std::vector<std::string> args = {"nats-server",
                                     "-js",
                                     "-a",
                                     "127.0.0.1",
                                     "-p",
                                     std::to_string(o_.port),
                                     "-sd",
                                     dir_ + "/store",
                                     "--server_name",
                                     o_.name,
                                     "-m",
                                     std::to_string(monitor_)};
    if (!o_.cluster_name.empty()) {
      args.insert(args.end(), {"--cluster_name", o_.cluster_name, "--cluster",
                               "nats://127.0.0.1:" + std::to_string(o_.cluster_port)});
      std::string routes;
      for (const int p : o_.route_ports)
        routes += (routes.empty() ? "" : ",") + ("nats://127.0.0.1:" + std::to_string(p));
      if (!routes.empty()) args.insert(args.end(), {"--routes", routes});
    }
    const char* bin = std::getenv("NATS_SERVER");
    const std::string binary = bin != nullptr && *bin != '\0' ? bin : "nats-server";
    const std::string logfile = dir_ + "/server.log";
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(1);  // the parent died already
      ::setpgid(0, 0);
      const int fd = ::open(logfile.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      std::vector<char*> argv;
      for (std::string& a : args)
        argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execvp(binary.c_str(), argv.data());
      ::_exit(127);
    }
  }

  Options o_;
  std::string dir_;
  int monitor_ = 0;
  pid_t pid_ = -1;
  bool started_once_ = false;  // restarts keep the port clients know
};

// Nodes on loopback, routed to each other, one JetStream domain.
class NatsCluster {
 public:
  explicit NatsCluster(int nodes = 3) {
    std::vector<int> cports;
    for (int i = 0; i < nodes; ++i)
      cports.push_back(free_port());
    for (int i = 0; i < nodes; ++i) {
      NatsServer::Options o;
      o.name = "n" + std::to_string(i);
      o.cluster_name = "shmbus-test";
      o.cluster_port = cports[static_cast<std::size_t>(i)];
      for (int j = 0; j < nodes; ++j)
        if (j != i) o.route_ports.push_back(cports[static_cast<std::size_t>(j)]);
      nodes_.push_back(std::make_unique<NatsServer>(o));
    }
  }
  // Starts every node, then waits until each is healthy and the JetStream
  // meta group has a leader (/jsz names it on every node).
  bool start(std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
    for (auto& n : nodes_)
      n->launch();
    for (auto& n : nodes_)
      if (!n->wait_healthy(timeout)) return false;
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
      bool all = true;
      for (auto& n : nodes_) {
        std::string body;
        if (http_get(n->monitor_port(), "/jsz", &body) != 200 ||
            body.find("\"leader\"") == std::string::npos) {
          all = false;
          break;
        }
      }
      if (all) return true;
      // Polling the monitoring endpoints: the election has no other signal.
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }
  NatsServer& node(int i) { return *nodes_[static_cast<std::size_t>(i)]; }
  [[nodiscard]] std::vector<std::string> url_list() const {
    std::vector<std::string> v;
    for (const auto& n : nodes_)
      v.push_back(n->url());
    return v;
  }

 private:
  std::vector<std::unique_ptr<NatsServer>> nodes_;
};

}  // namespace shmbus::test
