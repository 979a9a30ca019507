#include "shmbus/bus.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

#include "os.hpp"
#include "protocol.hpp"
#include "region.hpp"

namespace shmbus {

namespace proto = detail::proto;
using proto::Type;

namespace detail {

struct SeatRecord {
  std::string topic;
  bool producer;
  std::uint32_t a, b;
};

namespace {

bool file_executable(const std::string& p) {
  return !p.empty() && ::access(p.c_str(), X_OK) == 0;
}

std::string self_dir() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return {};
  std::string p(buf, static_cast<std::size_t>(n));
  return p.substr(0, p.rfind('/'));
}

std::string find_daemon(const std::string& configured) {
  if (!configured.empty()) return configured;
  if (const char* e = std::getenv("SHMBUS_DAEMON"); e != nullptr && *e != '\0') return e;
  const std::string dir = self_dir();
  // Beside this program, or in the build tree (bin/, tests/, examples/ ... next to daemon/).
  for (const std::string& c : {dir + "/shmbusd", dir + "/../daemon/shmbusd",
                               dir + "/../../daemon/shmbusd", dir + "/../bin/shmbusd"})
    if (file_executable(c)) return c;
  return "shmbusd";  // PATH
}

// The executable `name` names (a path, or a command searched on PATH), or "".
std::string resolve_executable(const std::string& name) {
  if (name.find('/') != std::string::npos) return file_executable(name) ? name : std::string();
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= dirs.size()) {
    const std::size_t end = std::min(dirs.find(':', start), dirs.size());
    const std::string candidate = dirs.substr(start, end - start) + "/" + name;
    if (end > start && file_executable(candidate)) return candidate;
    start = end + 1;
  }
  return {};
}

}  // namespace

// One connection to shmbusd, shared by a Bus and everything opened through it
// (each mapped region keeps it alive). A background thread notices when the
// daemon goes away, reconnects (starting one if allowed) and re-registers
// this process's seats.
class Connection {
 public:
  explicit Connection(const BusOptions& o) : options_(o) {
    validate_name("bus", options_.bus);
    path_ = options_.socket_path.empty() ? default_socket_path(options_.bus) : options_.socket_path;
    const char* no = std::getenv("SHMBUS_NO_AUTOSPAWN");
    if (no != nullptr && std::strcmp(no, "1") == 0) options_.autospawn = false;
    wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_fd_ < 0)
      throw Error(ErrorCode::SystemError, std::string("eventfd: ") + errno_text(errno));
    std::lock_guard lock(mu_);
    if (!reconnect_locked(true))
      throw Error(ErrorCode::DaemonUnavailable,
                  "no shmbusd answers on " + path_ +
                      (options_.autospawn
                           ? " and starting one failed (" + spawn_error_ +
                                 "); start it yourself: shmbusd --bus " + options_.bus
                           : "; start it (shmbusd --bus " + options_.bus + ") or allow autospawn"));
    monitor_ = std::thread([this] { monitor(); });
  }

  ~Connection() {
    if (::getpid() != owner_pid_) {
      // A copy inherited through fork: the monitor thread does not exist here
      // and the descriptors are shared with the parent. Close our copies only.
      // Leak the thread handle: joining or detaching a thread that does not
      // exist in this process is undefined; an unowned handle is inert.
      (void)new std::thread(std::move(monitor_));
      if (fd_ >= 0) ::close(fd_);
      ::close(wake_fd_);
      return;
    }
    stop_.store(true, std::memory_order_relaxed);  // relaxed: the eventfd write wakes the thread
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto n = ::write(wake_fd_, &one, sizeof one);
    if (monitor_.joinable()) monitor_.join();
    if (fd_ >= 0) ::close(fd_);
    ::close(wake_fd_);
  }

  // After a deliberate shutdown the monitor must not start a new daemon.
  void daemon_stopped() {
    std::lock_guard lock(mu_);
    no_respawn_ = true;
  }

  struct Reply {
    std::vector<std::byte> body;
    int fd = -1;
  };

  // Sends a request and returns its reply; an Error reply is thrown.
  Reply request(const proto::Writer& w, Type expected) {
    if (::getpid() != owner_pid_)
      throw Error(ErrorCode::InvalidArgument,
                  "this Bus was connected by process " + std::to_string(owner_pid_) +
                      " before a fork; call Bus::connect() again in this process");
    std::lock_guard lock(mu_);
    for (int attempt = 0;; ++attempt) {
      if (fd_ < 0 && !reconnect_locked(true))
        throw Error(ErrorCode::DaemonUnavailable,
                    "shmbusd on " + path_ + " is gone and could not be restarted");
      auto frame = w.finish();
      const std::uint32_t id = next_id_++;
      std::memcpy(frame.data() + 8, &id, 4);  // length(4) version(2) type(2) | request id
      Received r;
      if (send_frame(fd_, frame))
        r = recv_frame(fd_, options_.timeout);
      else
        r.closed = true, r.error = "shmbusd closed the connection";
      if (r.error.empty()) {
        proto::Reader rd(r.body);
        // A descriptor comes only with a topic reply; close any other.
        if (r.fd >= 0 && (expected != Type::TopicReply ||
                          rd.type() != static_cast<std::uint16_t>(Type::TopicReply))) {
          ::close(r.fd);
          r.fd = -1;
        }
        if (rd.ok() && rd.request_id() != id) {
          // Out of step with the daemon: start over on a fresh connection.
          drop_connection_locked();
          throw Error(ErrorCode::SystemError, "shmbusd answered another request; reconnecting");
        }
        if (rd.type() == static_cast<std::uint16_t>(Type::Error)) {
          const std::uint8_t code = rd.u8();
          const std::string msg = rd.str();
          throw Error(code <= static_cast<std::uint8_t>(ErrorCode::DaemonUnavailable)
                          ? static_cast<ErrorCode>(code)
                          : ErrorCode::SystemError,
                      msg);
        }
        if (!rd.ok() || rd.type() != static_cast<std::uint16_t>(expected)) {
          if (r.fd >= 0) ::close(r.fd);
          throw Error(ErrorCode::SystemError, "shmbusd sent an unexpected reply");
        }
        return Reply{std::move(r.body), r.fd};
      }
      drop_connection_locked();
      if (!r.closed || attempt > 0)
        throw Error(ErrorCode::DaemonUnavailable, r.error + " (socket " + path_ + ")");
    }
  }

  // Ends the current connection. shutdown() first, so that the monitor thread
  // polling this descriptor wakes up (a close alone would leave it waiting).
  void drop_connection_locked() {
    if (fd_ < 0) return;
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    fd_ = -1;
    ++generation_;
  }

  void remember(SeatRecord s) {
    std::lock_guard lock(mu_);
    // A seat index is reused once freed: keep one record per seat.
    std::erase_if(seats_, [&](const SeatRecord& x) {
      return x.topic == s.topic && x.producer == s.producer && x.a == s.a && x.b == s.b;
    });
    seats_.push_back(std::move(s));
  }

  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  [[nodiscard]] const std::string& bus() const noexcept { return options_.bus; }
  [[nodiscard]] int daemon_pid() const noexcept {
    // Relaxed: an informational value; nothing else is read through it.
    return daemon_pid_.load(std::memory_order_relaxed);
  }

 private:
  // Connects (starting a daemon if allowed and needed), says hello, and
  // re-registers the seats this process holds. Holds mu_.
  bool reconnect_locked(bool spawn) {
    ++generation_;
    fd_ = connect_unix(path_);
    if (fd_ < 0 && spawn && options_.autospawn && spawn_daemon()) {
      const auto until = std::chrono::steady_clock::now() + options_.timeout;
      while (fd_ < 0 && std::chrono::steady_clock::now() < until) {
        // The daemon binds its socket within milliseconds of starting.
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        fd_ = connect_unix(path_);
      }
    }
    if (fd_ < 0) return false;
    proto::Writer hello(Type::Hello, next_id_++);
    hello.str("shmbus-client");
    Received r;
    if (send_frame(fd_, hello.finish()))
      r = recv_frame(fd_, options_.timeout);
    else
      r.error = "send failed";
    if (r.fd >= 0) ::close(r.fd);  // a hello reply carries no descriptor
    proto::Reader rd(r.body);
    if (!r.error.empty() || rd.type() != static_cast<std::uint16_t>(Type::HelloReply)) {
      if (rd.type() == static_cast<std::uint16_t>(Type::Error)) {
        rd.u8();
        spawn_error_ = rd.str();
      }
      drop_connection_locked();
      return false;
    }
    rd.str();
    // Relaxed: see daemon_pid().
    daemon_pid_.store(static_cast<int>(rd.u32()), std::memory_order_relaxed);
    // Re-register seats (a restarted daemon knows nothing of them). Seats this
    // process has since freed are refused by the daemon and forgotten here.
    std::vector<SeatRecord> kept;
    for (const SeatRecord& s : seats_) {
      proto::Writer w(s.producer ? Type::AttachProducer : Type::AttachMember, next_id_++);
      w.str(s.topic).u32(s.a);
      if (!s.producer) w.u32(s.b);
      Received a;
      if (send_frame(fd_, w.finish())) a = recv_frame(fd_, options_.timeout);
      if (a.fd >= 0) ::close(a.fd);
      if (a.error.empty() && proto::Reader(a.body).type() == static_cast<std::uint16_t>(Type::Ok))
        kept.push_back(s);
    }
    seats_ = std::move(kept);
    return true;
  }

  bool spawn_daemon() {
    const std::string bin = resolve_executable(find_daemon(options_.daemon_path));
    if (bin.empty()) {
      spawn_error_ = "no shmbusd executable found (looked at " + find_daemon(options_.daemon_path) +
                     "); set SHMBUS_DAEMON or BusOptions::daemon_path, or put shmbusd on PATH";
      return false;
    }
    const std::string log = path_ + ".log";
    const auto slash = path_.rfind('/');
    if (slash != std::string::npos && slash > 0) {
      // The daemon creates the directory too; we need it for the log file.
      try {
        make_dirs(path_.substr(0, slash), 0755);
      } catch (const Error& e) {
        spawn_error_ = e.what();
        return false;
      }
    }
    const pid_t child = ::fork();
    if (child < 0) {
      spawn_error_ = std::string("fork: ") + errno_text(errno);
      return false;
    }
    if (child == 0) {
      // Detach twice so the daemon is nobody's child here and outlives us.
      ::setsid();
      if (::fork() != 0) ::_exit(0);
      const int null = ::open("/dev/null", O_RDONLY);
      const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (null >= 0) ::dup2(null, 0);
      if (out >= 0) {
        ::dup2(out, 1);
        ::dup2(out, 2);
      }
      // The daemon must not hold the application's descriptors (pipes, sockets).
      ::close_range(3, ~0U, 0);
      ::execlp(bin.c_str(), "shmbusd", "--bus", options_.bus.c_str(), "--socket", path_.c_str(),
               static_cast<char*>(nullptr));
      ::_exit(127);
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    spawn_error_ = "started " + bin + ", see " + log;
    return true;
  }

  // Waits up to `ms` for the destructor's wake-up; true if woken.
  bool sleep_or_wake(int ms) {
    pollfd p{wake_fd_, POLLIN, 0};
    return ::poll(&p, 1, ms) > 0;
  }

  void monitor() {
    bool respawn = true;
    // Relaxed: pairs with nothing; the eventfd write that follows the store
    // wakes this loop, which then sees the flag.
    while (!stop_.load(std::memory_order_relaxed)) {
      int fd;
      std::uint64_t gen;
      {
        std::lock_guard lock(mu_);
        if (fd_ < 0) reconnect_locked(respawn);
        fd = fd_;
        gen = generation_;
      }
      if (fd < 0) {
        sleep_or_wake(50);  // retry pace
        continue;
      }
      // events = 0 on the socket: only hang-up and errors are reported;
      // replies are read by request(). The eventfd ends the wait on destruction.
      pollfd p[2] = {{fd, 0, 0}, {wake_fd_, POLLIN, 0}};
      if (::poll(p, 2, -1) <= 0 || (p[0].revents & (POLLHUP | POLLERR | POLLNVAL)) == 0) continue;
      std::lock_guard lock(mu_);
      if (generation_ != gen) continue;  // request() already replaced that connection
      drop_connection_locked();
      // A daemon that was stopped on purpose removed its socket: do not start
      // another behind the user's back (the next explicit request may). One that
      // crashed left the socket file: start a new one if allowed.
      struct stat st {};
      respawn = !no_respawn_ && ::stat(path_.c_str(), &st) == 0;
      reconnect_locked(respawn);
    }
  }

  BusOptions options_;
  std::string path_;
  std::mutex mu_;
  int fd_ = -1;
  std::uint32_t next_id_ = 1;
  std::vector<SeatRecord> seats_;
  std::string spawn_error_ = "autospawn disabled";
  std::atomic<int> daemon_pid_{0};
  std::atomic<bool> stop_{false};
  int wake_fd_ = -1;
  std::uint64_t generation_ = 0;  // bumped whenever the connection is replaced (under mu_)
  pid_t owner_pid_ = ::getpid();  // a Bus does not survive fork
  bool no_respawn_ = false;       // shutdown_daemon() was called (under mu_)
  std::thread monitor_;
};

}  // namespace detail

Bus Bus::connect(const BusOptions& options) {
  return Bus(std::make_shared<detail::Connection>(options));
}

Topic Bus::make_topic(int fd, std::string_view name) {
  if (fd < 0) throw Error(ErrorCode::SystemError, "shmbusd sent no region descriptor");
  std::shared_ptr<detail::Region> region;
  try {
    region = detail::Region::from_fd(fd, region_name(conn_->bus(), name));
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  region->set_owner(conn_);  // the connection lives as long as anything mapped through it
  return Topic(std::string(name), std::move(region));
}

Topic Bus::create_topic(std::string_view name, const TopicOptions& options) {
  validate_name("topic", name);
  proto::Writer w(Type::CreateTopic, 0);
  proto::encode(w, proto::TopicSpec{std::string(name), options});
  return make_topic(conn_->request(w, Type::TopicReply).fd, name);
}

Topic Bus::open_topic(std::string_view name) {
  validate_name("topic", name);
  proto::Writer w(Type::OpenTopic, 0);
  w.str(name);
  return make_topic(conn_->request(w, Type::TopicReply).fd, name);
}

void Bus::delete_topic(std::string_view name) {
  validate_name("topic", name);
  proto::Writer w(Type::DeleteTopic, 0);
  w.str(name);
  (void)conn_->request(w, Type::Ok);
}

std::vector<TopicStatus> Bus::topics() {
  proto::Writer w(Type::ListTopics, 0);
  auto r = conn_->request(w, Type::TopicList);
  proto::Reader rd(r.body);
  const std::uint32_t n = rd.u32();
  std::vector<TopicStatus> out;
  for (std::uint32_t i = 0; i < n && rd.ok() && i < 100000; ++i) {
    TopicStatus t;
    if (!proto::decode(rd, t)) break;
    out.push_back(std::move(t));
  }
  if (!rd.done()) throw Error(ErrorCode::SystemError, "shmbusd sent a malformed topic list");
  return out;
}

TopicStatus Bus::describe(std::string_view name) {
  validate_name("topic", name);
  proto::Writer w(Type::Describe, 0);
  w.str(name);
  auto r = conn_->request(w, Type::Description);
  proto::Reader rd(r.body);
  TopicStatus t;
  if (!proto::decode(rd, t) || !rd.done())
    throw Error(ErrorCode::SystemError, "shmbusd sent a malformed description");
  return t;
}

Publisher Bus::publisher(const Topic& topic, const PublisherOptions& options) {
  Publisher p = topic.publisher(options);
  proto::Writer w(Type::AttachProducer, 0);
  w.str(topic.name()).u32(p.id());
  (void)conn_->request(w, Type::Ok);  // throws PermissionDenied if the rules say no
  conn_->remember({topic.name(), true, p.id(), 0});
  return p;
}

std::unique_ptr<Subscriber> Bus::subscriber(const Topic& topic, const SubscriberOptions& options) {
  auto s = topic.subscriber(options);
  proto::Writer w(Type::AttachMember, 0);
  w.str(topic.name()).u32(s->group_index()).u32(s->member_index());
  (void)conn_->request(w, Type::Ok);
  conn_->remember({topic.name(), false, s->group_index(), s->member_index()});
  return s;
}

Publisher Bus::publisher(std::string_view topic, const PublisherOptions& options) {
  return publisher(open_topic(topic), options);
}

std::unique_ptr<Subscriber> Bus::subscriber(std::string_view topic,
                                            const SubscriberOptions& options) {
  return subscriber(open_topic(topic), options);
}

void Bus::shutdown_daemon() {
  conn_->daemon_stopped();  // before the request: the hang-up may come at once
  proto::Writer w(Type::Shutdown, 0);
  (void)conn_->request(w, Type::Ok);
}

const std::string& Bus::socket_path() const noexcept {
  return conn_->path();
}
int Bus::daemon_pid() const noexcept {
  return conn_->daemon_pid();
}

}  // namespace shmbus
