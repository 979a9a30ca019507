#include "shmbus/bus.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>
#include <variant>

#include "connection.hpp"
#include "os.hpp"
#include "protocol.hpp"
#include "region.hpp"

namespace shmbus {

namespace proto = detail::proto;

namespace detail {

// A seat this process registered with the daemon: the request that did it.
using SeatRecord = std::variant<proto::AttachProducer, proto::AttachMember>;

namespace {

template <class Q>
std::vector<std::byte> frame_of(const Q& q, std::uint32_t id) {
  return proto::frame(q, id);
}
std::vector<std::byte> frame_of(const SeatRecord& s, std::uint32_t id) {
  return std::visit([&](const auto& m) { return proto::frame(m, id); }, s);
}

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
    if (const char* u = std::getenv("SHMBUS_DAEMON_UID"); u != nullptr && *u != '\0') {
      char* end = nullptr;
      errno = 0;
      const long uid = std::strtol(u, &end, 10);
      if (errno != 0 || end == u || *end != '\0' || uid < 0 || uid > INT_MAX)
        throw Error(ErrorCode::InvalidArgument,
                    std::string("SHMBUS_DAEMON_UID='") + u + "' is not a uid (a number >= 0)");
      options_.daemon_uid = uid;
    }
    if (options_.daemon_uid < -1 || options_.daemon_uid > INT_MAX)
      throw Error(ErrorCode::InvalidArgument,
                  "daemon_uid " + std::to_string(options_.daemon_uid) + " is not a uid (or -1)");
    wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_fd_ < 0)
      throw Error(ErrorCode::SystemError, std::string("eventfd: ") + errno_text(errno));
    std::lock_guard lock(mu_);
    const bool up = reconnect_locked(true);
    if (!up && refused_) throw Error(*refused_, spawn_error_);
    if (!up)
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
    // Unchecked on purpose: the only failure of an eventfd write is a full
    // counter (EAGAIN), which wakes the monitor as well.
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

  // Sends `q` and returns the daemon's reply, an M; an Error reply is thrown
  // as shmbus::Error. The region descriptors that come with a TopicReply are
  // handed to the caller through `fds` (closed when `fds` is null).
  template <class M, class Q>
  M request(const Q& q, Descriptors* fds = nullptr) {
    check_owner();
    std::lock_guard lock(mu_);
    return request_locked<M>(q, fds);
  }

  // Sends a component report and remembers it, the last one of each name, to
  // send it again after a reconnect (a restarted daemon has none). Remembered
  // too when the daemon could not be reached (delivered at the reconnect, up
  // to the daemon's per-connection limit); one the daemon refused changes
  // nothing here, as it changed nothing there.
  void report(const proto::Report& r) {
    check_owner();
    std::lock_guard lock(mu_);
    // One lock hold for the request and the record: concurrent reports of one
    // name leave the record equal to what the daemon has.
    const auto remember = [&] {
      auto it = std::find_if(reports_.begin(), reports_.end(),
                             [&](const proto::Report& x) { return x.name == r.name; });
      if (it != reports_.end())
        *it = r;
      else if (reports_.size() < kMaxReportsPerConnection)
        reports_.push_back(r);
    };
    try {
      (void)request_locked<proto::Ok>(r);
    } catch (const Error& e) {
      if (e.code() == ErrorCode::DaemonUnavailable) remember();
      throw;
    }
    remember();
  }

  // Registers a seat this process took, so that the daemon frees it if the
  // process dies, and remembers it to register it again after a reconnect.
  // With the daemon down (DaemonUnavailable), the seat is kept and only
  // remembered: the data path needs no daemon (a partitioned group's members
  // rebalance through the region), and the next daemon hears of the seat at
  // the reconnect, or frees it by pid if this process is gone by then.
  void attach(const SeatRecord& s) {
    try {
      (void)request<proto::Ok>(s);  // throws PermissionDenied if the rules say no
    } catch (const Error& e) {
      if (e.code() != ErrorCode::DaemonUnavailable) throw;
    }
    std::lock_guard lock(mu_);
    // A seat index is reused once freed: keep one record per seat.
    std::erase(seats_, s);
    seats_.push_back(s);
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

  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  [[nodiscard]] const std::string& bus() const noexcept { return options_.bus; }
  [[nodiscard]] int daemon_pid() const noexcept {
    // Relaxed: an informational value; nothing else is read through it.
    return daemon_pid_.load(std::memory_order_relaxed);
  }

 private:
  void check_owner() const {
    if (::getpid() != owner_pid_)
      throw Error(ErrorCode::InvalidArgument,
                  "this Bus was connected by process " + std::to_string(owner_pid_) +
                      " before a fork; call Bus::connect() again in this process");
  }

  // request() with mu_ held.
  template <class M, class Q>
  M request_locked(const Q& q, Descriptors* fds = nullptr) {
    for (int attempt = 0;; ++attempt) {
      if (fd_ < 0 && !reconnect_locked(true))
        throw Error(ErrorCode::DaemonUnavailable,
                    "shmbusd on " + path_ + " is gone and could not be restarted");
      const std::uint32_t id = next_id_++;
      Received r = exchange_locked(frame_of(q, id));
      if (r.error.empty()) return accept_locked<M>(r, id, fds);
      drop_connection_locked();
      if (!r.closed || attempt > 0)
        throw Error(ErrorCode::DaemonUnavailable, r.error + " (socket " + path_ + ")");
    }
  }

  // Connects (starting a daemon if allowed and needed), says hello, and
  // re-registers the seats this process holds. Holds mu_.
  bool reconnect_locked(bool spawn) {
    ++generation_;
    refused_.reset();
    // A socket in a directory another user controls may be theirs: refuse it
    // (once the directory exists: a missing one is created for the daemon).
    if (::access(dir_of(path_).c_str(), F_OK) == 0) {
      if (const std::string why = untrusted_dir(dir_of(path_)); !why.empty()) {
        spawn_error_ = "the socket directory " + dir_of(path_) + " is not safe: " + why;
        refused_ = ErrorCode::PermissionDenied;
        return false;
      }
    }
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
    // Only a daemon of this user or of root may serve us: anyone else's could
    // read every message we publish (a squatted bus).
    if (const long uid = peer_uid(fd_);
        uid != static_cast<long>(::geteuid()) && uid != 0 && uid != options_.daemon_uid) {
      spawn_error_ = uid < 0 ? "SO_PEERCRED: " + errno_text(errno)
                             : "the socket is served by a process of uid " + std::to_string(uid) +
                                   ", neither this user (uid " + std::to_string(::geteuid()) +
                                   ") nor root: another user may be squatting bus '" +
                                   options_.bus + "'; remove " + path_ +
                                   " if it is not yours, or use another --socket (a bus "
                                   "shared through a service account: daemon_uid, "
                                   "SHMBUS_DAEMON_UID)";
      refused_ = ErrorCode::DaemonUnavailable;
      drop_connection_locked();
      return false;
    }
    Received r = exchange_locked(frame_of(proto::Hello{"shmbus-client"}, next_id_++));
    const auto hello = proto::decode_reply<proto::HelloReply>(r.body);
    if (!r.error.empty() || !hello.message) {
      // Why this daemon will not talk to us (another protocol version, say).
      if (r.error.empty()) spawn_error_ = hello.problem.message;
      drop_connection_locked();
      return false;
    }
    // Relaxed: see daemon_pid().
    daemon_pid_.store(static_cast<int>(hello.message->pid), std::memory_order_relaxed);
    // Re-register seats (a restarted daemon knows nothing of them). Seats this
    // process has since freed are refused by the daemon and forgotten here.
    std::vector<SeatRecord> kept;
    for (const SeatRecord& s : seats_) {
      Received a = exchange_locked(frame_of(s, next_id_++));
      if (a.error.empty() && proto::decode_reply<proto::Ok>(a.body).message) kept.push_back(s);
    }
    seats_ = std::move(kept);
    // Send the component reports again, as they were last made. One the new
    // daemon refuses (its limits are full) stays remembered, for the next
    // reconnect; the program's next report() of that name says why.
    for (const proto::Report& rep : reports_)
      (void)exchange_locked(frame_of(rep, next_id_++));
    return true;
  }

  // One frame out, one frame back, on the current connection. Holds mu_.
  Received exchange_locked(const std::vector<std::byte>& frame) {
    if (send_frame(fd_, frame)) return recv_frame(fd_, options_.timeout);
    Received r;
    r.closed = true;
    r.error = "shmbusd closed the connection";
    return r;
  }

  // The reply `r` to request `id` as an M, or thrown. Holds mu_.
  template <class M>
  M accept_locked(Received& r, std::uint32_t id, Descriptors* fds) {
    auto reply = proto::decode_reply<M>(r.body);
    // Descriptors come only with a topic reply; any others close with r.
    if (reply.header_ok && reply.id != id) {
      // Out of step with the daemon: start over on a fresh connection.
      drop_connection_locked();
      throw Error(ErrorCode::SystemError, "shmbusd answered another request; reconnecting");
    }
    if (!reply.message) throw Error(reply.problem.code, reply.problem.message);
    if (fds != nullptr) *fds = std::move(r.fds);
    return std::move(*reply.message);
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
    if (const std::string why = untrusted_dir(dir_of(path_)); !why.empty()) {
      spawn_error_ = "not starting a daemon in " + dir_of(path_) + ": " + why;
      return false;
    }
    // Opened here, not in the child, so that a refusal can be reported: never
    // through a link another user planted, and only a file of our own.
    std::string why;
    const int out = open_own_file(log, O_WRONLY | O_CREAT | O_APPEND, 0600, why);
    if (out < 0) {
      spawn_error_ = "the daemon's log " + log + " " + why;
      return false;
    }
    const pid_t child = ::fork();
    if (child < 0) {
      spawn_error_ = std::string("fork: ") + errno_text(errno);
      ::close(out);
      return false;
    }
    if (child == 0) {
      // Detach twice so the daemon is nobody's child here and outlives us.
      // Between fork and exec only async-signal-safe calls: a failure ends
      // the child, and the parent reports that no daemon answered.
      if (::setsid() < 0) ::_exit(126);
      const pid_t daemon = ::fork();
      if (daemon < 0) ::_exit(126);
      if (daemon != 0) ::_exit(0);
      const int null = ::open("/dev/null", O_RDONLY);
      if (null >= 0 && ::dup2(null, 0) < 0) ::_exit(126);
      if (out >= 0 && (::dup2(out, 1) < 0 || ::dup2(out, 2) < 0)) ::_exit(126);
      // The daemon must not hold the application's descriptors (pipes, sockets).
      // Unchecked: it fails only on kernels without it (< 5.9), and then the
      // daemon merely holds a few descriptors it never uses.
      ::close_range(3, ~0U, 0);
      ::execlp(bin.c_str(), "shmbusd", "--bus", options_.bus.c_str(), "--socket", path_.c_str(),
               static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(out);  // the daemon has its own copy (stdout, stderr)
    // Reap the intermediate child (it exits at once); the daemon is its child.
    int status = 0;
    pid_t reaped;
    do {
      reaped = ::waitpid(child, &status, 0);
    } while (reaped < 0 && errno == EINTR);
    // ECHILD: SIGCHLD is ignored here, so the child was reaped for us.
    if (reaped < 0 && errno != ECHILD) {
      spawn_error_ = std::string("waitpid: ") + errno_text(errno);
      return false;
    }
    if (reaped == child && WIFEXITED(status) && WEXITSTATUS(status) == 126) {
      spawn_error_ = "could not detach a daemon process (setsid or fork failed)";
      return false;
    }
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
  std::vector<proto::Report> reports_;  // the last report of each name (report())
  std::string spawn_error_ = "autospawn disabled";
  // Set when the socket was refused (its directory, or the daemon's uid):
  // the error to throw instead of "no daemon answers", with spawn_error_.
  std::optional<ErrorCode> refused_;
  std::atomic<int> daemon_pid_{0};
  std::atomic<bool> stop_{false};
  int wake_fd_ = -1;
  std::uint64_t generation_ = 0;  // bumped whenever the connection is replaced (under mu_)
  pid_t owner_pid_ = ::getpid();  // a Bus does not survive fork
  bool no_respawn_ = false;       // shutdown_daemon() was called (under mu_)
  std::thread monitor_;
};

void register_producer(Connection& c, const std::string& topic, std::uint32_t seat) {
  c.attach(proto::AttachProducer{topic, seat});
}

void register_member(Connection& c, const std::string& topic, std::uint32_t group,
                     std::uint32_t member) {
  c.attach(proto::AttachMember{topic, group, member});
}

}  // namespace detail

Bus::Bus(std::shared_ptr<detail::Connection> c)
    : conn_(std::move(c)), requester_(detail::make_requester_slot()) {}

Bus Bus::connect(const BusOptions& options) {
  return Bus(std::make_shared<detail::Connection>(options));
}

Topic Bus::make_topic(const detail::Descriptors& fds, std::string_view name,
                      const TopicOptions& options) {
  // The create right alone: the daemon sends no region (see Topic).
  if (fds.size() == 0) return Topic(std::string(name), options, conn_);
  if (fds.size() != 2)
    throw Error(ErrorCode::SystemError, "shmbusd sent " + std::to_string(fds.size()) +
                                            " region descriptors where a topic has 2; is it "
                                            "another shmbus version?");
  auto region = detail::Region::from_fd(fds[0], fds[1], region_name(conn_->bus(), name));
  region->set_owner(conn_);  // the connection lives as long as anything mapped through it
  return Topic(std::string(name), std::move(region), conn_);
}

Topic Bus::create_topic(std::string_view name, const TopicOptions& options, bool if_not_exists) {
  validate_name("topic", name);
  // With if_not_exists, a topic deleted between our create and our open is
  // created again; a few rounds settle any such race with another process.
  for (int round = 0;; ++round) {
    try {
      detail::Descriptors fds;
      const auto reply =
          conn_->request<proto::TopicReply>(proto::CreateTopic{std::string(name), options}, &fds);
      return make_topic(fds, name, reply.options);
    } catch (const Error& e) {
      if (!if_not_exists || e.code() != ErrorCode::AlreadyExists) throw;
    }
    try {
      return open_topic(name);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::NotFound || round == 2) throw;
    }
  }
}

Topic Bus::open_topic(std::string_view name) {
  validate_name("topic", name);
  detail::Descriptors fds;
  const auto reply = conn_->request<proto::TopicReply>(proto::OpenTopic{std::string(name)}, &fds);
  return make_topic(fds, name, reply.options);
}

void Bus::flush(std::string_view topic) {
  open_topic(topic).flush();
}

void Bus::delete_topic(std::string_view name, bool if_unused) {
  validate_name("topic", name);
  (void)conn_->request<proto::Ok>(proto::DeleteTopic{std::string(name), if_unused});
}

std::vector<TopicStatus> Bus::topics() {
  return conn_->request<proto::TopicList>(proto::ListTopics{}).topics;
}

TopicStatus Bus::describe(std::string_view name) {
  validate_name("topic", name);
  return conn_->request<proto::Description>(proto::Describe{std::string(name)}).status;
}

Publisher Bus::publisher(std::string_view topic, const PublisherOptions& options) {
  return open_topic(topic).publisher(options);
}

std::unique_ptr<Subscriber> Bus::subscriber(std::string_view topic,
                                            const SubscriberOptions& options) {
  return open_topic(topic).subscriber(options);
}

GroupStatus Bus::describe_group(std::string_view topic, std::string_view group) {
  validate_name("group", group);
  TopicStatus t = describe(topic);
  for (GroupStatus& g : t.groups)
    if (g.name == group) return std::move(g);
  throw Error(ErrorCode::NotFound, "topic '" + std::string(topic) + "' has no group '" +
                                       std::string(group) +
                                       "' (shmbus group list shows its groups)");
}

void Bus::delete_group(std::string_view topic, std::string_view group) {
  validate_name("topic", topic);
  validate_name("group", group);
  (void)conn_->request<proto::Ok>(proto::DeleteGroup{std::string(topic), std::string(group)});
}

void Bus::reset_group(std::string_view topic, std::string_view group, StartPosition to) {
  validate_name("topic", topic);
  validate_name("group", group);
  (void)conn_->request<proto::Ok>(proto::ResetGroup{std::string(topic), std::string(group), to});
}

void Bus::shutdown_daemon() {
  conn_->daemon_stopped();  // before the request: the hang-up may come at once
  (void)conn_->request<proto::Ok>(proto::Shutdown{});
}

void Bus::report(std::string_view name, std::string_view kind,
                 std::span<const ReportCounter> counters) {
  validate_report(name, kind, counters);  // before anything is sent
  conn_->report(proto::Report{std::string(name), std::string(kind),
                              std::vector<ReportCounter>(counters.begin(), counters.end())});
}

std::vector<ComponentReport> Bus::reports() {
  return conn_->request<proto::ReportList>(proto::ListReports{}).reports;
}

const std::string& Bus::socket_path() const noexcept {
  return conn_->path();
}
int Bus::daemon_pid() const noexcept {
  return conn_->daemon_pid();
}

}  // namespace shmbus
