// The daemon's event loop and client bookkeeping: the socket, accepting
// clients, reading their frames, sending replies, dropping them. Requests are
// handled in requests.cpp, dead processes' seats in reaper.cpp.
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "daemon.hpp"
#include "os.hpp"
#include "region.hpp"
#include "shmbus/error.hpp"
#include "shmbus/topic.hpp"

namespace shmbus::daemon {

namespace {

[[noreturn]] void fail_errno(const std::string& what) {
  throw Error(ErrorCode::SystemError, what + ": " + detail::errno_text(errno));
}

// Empties a counter descriptor (eventfd, timerfd) that epoll reported readable.
void drain(int fd, const char* what) {
  std::uint64_t v = 0;
  if (::read(fd, &v, sizeof v) < 0 && errno != EAGAIN && errno != EINTR)
    spdlog::warn("reading the {}: {}", what, detail::errno_text(errno));
}

// The bus's lock file lives beside its regions, under a name no topic can
// take ('@' is not allowed in names): /dev/shm/shmbus.<bus>@daemon.
std::string bus_lock_path(const std::string& bus) {
  return "/dev/shm/shmbus." + bus + "@daemon";
}

}  // namespace

Daemon::Daemon(Config config) : config_(std::move(config)) {
  validate_name("bus", config_.bus);
  socket_path_ =
      config_.socket_path.empty() ? detail::default_socket_path(config_.bus) : config_.socket_path;
  keeper_.configure(keeper_path(socket_path_), config_.keeper_program);
}

Daemon::~Daemon() {
  // The movers stop first, while this daemon still holds the bus's locks: a
  // daemon started after them must never meet a mover of ours mid-move.
  for (auto& [name, t] : topics_)
    t.mover.reset();
  // File topics with a flush interval get their last flush now (a clean
  // stop), after the movers' last moves; the others are in the page cache,
  // which outlives us.
  if (flusher_) {
    flusher_.reset();
    for (auto& [name, t] : topics_)
      if (t.region->flush_interval().count() > 0 && !t.damaged && region_intact(*t.region))
        (void)guarded([&] { (void)t.region->flush(); });
  }
  // The socket file goes first: a client that sees its connection drop checks
  // for it to tell a clean stop (no file: do not restart) from a crash.
  if (listen_fd_ >= 0) ::unlink(socket_path_.c_str());
  for (int fd : {listen_fd_, epoll_fd_, wake_fd_, timer_fd_, spare_fd_})
    if (fd >= 0) ::close(fd);
  for (auto& [fd, c] : clients_)
    ::close(fd);
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
  // Removed while still locked (see take_bus_lock), then released.
  if (owns_bus_lock_) ::unlink(bus_lock_path(config_.bus).c_str());
  if (bus_lock_fd_ >= 0) ::close(bus_lock_fd_);
  // The data directory's lock last, with the bus's: nothing of ours touches
  // a file topic any more.
  if (data_fd_ >= 0) ::close(data_fd_);
  if (data_lock_fd_ >= 0) ::close(data_lock_fd_);  // releases the flock
}

void Daemon::take_bus_lock() {
  // One daemon per bus, whatever its socket: two would adopt the same regions
  // and free each other's clients' seats. /dev/shm is writable by everyone:
  // never follow a planted link, and hold only a file of our own. The file is
  // removed on a clean stop, so a lock won on a file that was removed in the
  // meantime is no lock: try again on the file the name now names.
  const std::string path = bus_lock_path(config_.bus);
  for (int attempt = 0;; ++attempt) {
    std::string why;
    const int fd = detail::open_own_file(path, O_RDWR | O_CREAT, 0644, why);
    if (const int err = errno; fd < 0)
      throw Error(
          err == ELOOP || err == EPERM ? ErrorCode::PermissionDenied : ErrorCode::SystemError,
          "the bus lock " + path + " " + why +
              (err == EPERM ? "; or bus '" + config_.bus + "' is another user's: use another --bus"
                            : std::string()));
    bus_lock_fd_ = fd;  // closed by the destructor whatever happens below
    struct stat st {};
    if (::fstat(fd, &st) != 0) fail_errno("fstat " + path);
    if (!detail::flock_soon(fd)) {
      // Who holds it wrote "pid socket" into it.
      char buf[512] = {};
      const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
      std::string holder = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
      while (!holder.empty() && (holder.back() == '\n' || holder.back() == '\0'))
        holder.pop_back();
      const auto space = holder.find(' ');
      const std::string who =
          space == std::string::npos
              ? std::string("another shmbusd")
              : "shmbusd pid " + holder.substr(0, space) + " on " + holder.substr(space + 1);
      throw Error(ErrorCode::AlreadyExists, who + " already serves bus '" + config_.bus +
                                                "'; stop it first (shmbus daemon stop --bus " +
                                                config_.bus + "), or use another --bus");
    }
    struct stat now {};
    if (::lstat(path.c_str(), &now) == 0 && now.st_dev == st.st_dev && now.st_ino == st.st_ino)
      break;  // the lock is on the file the name names
    ::close(fd);
    bus_lock_fd_ = -1;
    if (attempt == 10) throw Error(ErrorCode::SystemError, path + " keeps being replaced");
  }
  const std::string mine = std::to_string(::getpid()) + " " + socket_path_ + "\n";
  if (::ftruncate(bus_lock_fd_, 0) != 0 ||
      ::pwrite(bus_lock_fd_, mine.data(), mine.size(), 0) != static_cast<ssize_t>(mine.size()))
    spdlog::warn("cannot record pid and socket in {}: {}", path, detail::errno_text(errno));
  owns_bus_lock_ = true;
}

void Daemon::start() {
  spdlog::set_level(spdlog::level::from_str(config_.log_level));
  // Before any region is mapped: a client may truncate one (issue 14).
  install_sigbus_guard();
  sockaddr_un addr{};
  // The keeper's socket beside it must fit too (a longer one would be cut).
  const std::size_t longest = sizeof addr.sun_path - 1 - (keeper_path("").size());
  if (socket_path_.size() > longest)
    throw Error(ErrorCode::InvalidArgument, "socket path '" + socket_path_ + "' is longer than " +
                                                std::to_string(longest) +
                                                " bytes; pick a shorter --socket");
  const auto slash = socket_path_.rfind('/');
  if (slash != std::string::npos && slash > 0)
    detail::make_dirs(socket_path_.substr(0, slash), 0755);
  // The directory holds the socket, the lock and the log: only one no other
  // user controls (os.hpp, untrusted_dir).
  const std::string dir = detail::dir_of(socket_path_);
  if (const std::string why = detail::untrusted_dir(dir); !why.empty())
    throw Error(ErrorCode::PermissionDenied, "refusing the socket directory " + dir + ": " + why);
  // One daemon per socket: an exclusive flock on "<socket>.lock", held for
  // life; never through a link, and only a file of our own.
  const std::string lock_path = socket_path_ + ".lock";
  std::string why;
  lock_fd_ = detail::open_own_file(lock_path, O_RDWR | O_CREAT, 0600, why);
  if (const int err = errno; lock_fd_ < 0)
    throw Error(err == ELOOP || err == EPERM ? ErrorCode::PermissionDenied : ErrorCode::SystemError,
                "the socket lock " + lock_path + " " + why);
  if (!detail::flock_soon(lock_fd_))
    throw Error(ErrorCode::AlreadyExists,
                "another shmbusd already serves " + socket_path_ +
                    "; stop it first (shmbus daemon stop) or use another --socket");
  take_bus_lock();
  // A stale socket from a daemon that died (bind below fails if this did).
  if (::unlink(socket_path_.c_str()) != 0 && errno != ENOENT)
    spdlog::warn("cannot remove the stale socket {}: {}", socket_path_, detail::errno_text(errno));
  listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) fail_errno("socket");
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, socket_path_.c_str(), socket_path_.size() + 1);
  // Anyone may connect (every request is checked against SO_PEERCRED and the
  // rules): the socket file is created 0666 by bind itself, under a umask set
  // for it, rather than chmod-ed by path afterwards (a path another process
  // could have swapped in between). start() runs before any other thread.
  const mode_t old_mask = ::umask(0111);
  const int bound = ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  const int bind_errno = errno;
  ::umask(old_mask);
  if (bound != 0) {
    errno = bind_errno;
    fail_errno("cannot bind " + socket_path_);
  }
  if (::listen(listen_fd_, 64) != 0) fail_errno("listen");
  // One descriptor per client and per topic: raise the soft limit to the hard
  // one, and keep a spare to refuse clients cleanly when even that runs out.
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) {
    spdlog::warn("getrlimit(RLIMIT_NOFILE): {}", detail::errno_text(errno));
  } else if (lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &lim) != 0)
      spdlog::warn("raising RLIMIT_NOFILE to {}: {}", lim.rlim_max, detail::errno_text(errno));
  }
  spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (spare_fd_ < 0)
    spdlog::warn("no spare descriptor (/dev/null: {}): clients beyond the limit wait unanswered",
                 detail::errno_text(errno));
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) fail_errno("epoll_create1");
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) fail_errno("eventfd");
  timer_fd_ = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (timer_fd_ < 0) fail_errno("timerfd_create");
  itimerspec its{};
  its.it_interval.tv_sec = config_.housekeeping_ms / 1000;
  its.it_interval.tv_nsec = (config_.housekeeping_ms % 1000) * 1'000'000L;
  its.it_value = its.it_interval;
  if (::timerfd_settime(timer_fd_, 0, &its, nullptr) != 0)
    fail_errno("timerfd_settime (housekeeping every " + std::to_string(config_.housekeeping_ms) +
               " ms)");
  for (int fd : {listen_fd_, wake_fd_, timer_fd_})
    if (!watch(fd, EPOLLIN)) fail_errno("epoll_ctl(ADD)");
  adopt_regions();
  spdlog::info("shmbusd serving bus '{}' on {} ({} topics adopted)", config_.bus, socket_path_,
               topics_.size());
}

void Daemon::stop() noexcept {
  stopping_.store(true, std::memory_order_relaxed);  // relaxed: the eventfd write wakes run()
  if (wake_fd_ >= 0) {
    const std::uint64_t one = 1;
    // Async-signal-safe: no logging here. A full counter (EAGAIN) already wakes run().
    [[maybe_unused]] const auto n = ::write(wake_fd_, &one, sizeof one);
  }
}

void Daemon::run() {
  epoll_event events[64];
  while (!stopping_.load(std::memory_order_relaxed)) {
    const int n = ::epoll_wait(epoll_fd_, events, 64, 1000);
    if (n < 0 && errno != EINTR) fail_errno("epoll_wait");
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == listen_fd_) {
        accept_clients();
      } else if (fd == timer_fd_) {
        drain(timer_fd_, "housekeeping timer");
        housekeeping();
      } else if (fd == wake_fd_) {
        drain(wake_fd_, "wake-up eventfd");
      } else if (fd == watched_keeper_fd_ && fd == keeper_.fd()) {
        // The keeper sends nothing after the hand-over: this is its end.
        // Another is started by housekeeping (at most one every 5 s: a
        // keeper that dies at once must not become a fork loop).
        spdlog::warn("the keeper of bus '{}' went away; starting another", config_.bus);
        unwatch_keeper();
        keeper_.detach();
      } else if (auto it = clients_.find(fd); it != clients_.end()) {
        serve(it->second);
      }
    }
  }
  spdlog::info("shmbusd stopping");
}

bool Daemon::watch(int fd, std::uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  return ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) == 0;
}

void Daemon::accept_clients() {
  for (;;) {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0 && (errno == EMFILE || errno == ENFILE) && spare_fd_ >= 0) {
      // Out of descriptors: refuse this client (accept and close it with the
      // spare descriptor) rather than leave it pending and spin on it.
      ::close(spare_fd_);
      const int refused = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (refused >= 0) ::close(refused);
      spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      spdlog::warn("out of file descriptors ({} clients, {} topics): refused a client",
                   clients_.size(), topics_.size());
      continue;
    }
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        spdlog::warn("accept: {}", detail::errno_text(errno));
      return;
    }
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
      spdlog::warn("SO_PEERCRED of a new client: {}; closing it", detail::errno_text(errno));
      ::close(fd);
      continue;
    }
    std::uint32_t& held = connections_of_[cred.uid];
    if (held >= config_.max_connections_per_uid) {
      // Told why, then closed (best effort: the reply fits the empty socket buffer).
      const proto::ErrorReply e{ErrorCode::ResourceExhausted,
                                "uid " + std::to_string(cred.uid) + " holds " +
                                    std::to_string(held) +
                                    " connections to shmbusd, the most one user may "
                                    "(max_connections_per_uid); close some"};
      (void)detail::send_frame(fd, proto::frame(e, 0), {}, /*may_wait=*/false);
      spdlog::warn("refused a connection of pid {}: uid {} holds {} connections (the limit)",
                   cred.pid, cred.uid, held);
      ::close(fd);
      continue;
    }
    if (!watch(fd, EPOLLIN | EPOLLRDHUP)) {
      spdlog::warn("epoll_ctl(ADD) for client pid {}: {}; closing it", cred.pid,
                   detail::errno_text(errno));
      ::close(fd);
      continue;
    }
    clients_.emplace(fd, Client{fd, cred.pid, cred.uid, cred.gid, {}, {}});
    ++held;
    spdlog::debug("client pid {} uid {} connected", cred.pid, cred.uid);
  }
}

void Daemon::serve(Client& c) {
  std::byte buf[8192];
  for (;;) {
    const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0) {
      drop(c.fd);  // closed or failed: the process is gone (or gave up its bus)
      return;
    }
    // Whole frames only, handled as they arrive (so a flood buffers one read's
    // worth). A bad length prefix ends the connection (the stream cannot be
    // resynchronised); anything inside a frame gets an error reply.
    c.inbox.feed(buf, static_cast<std::size_t>(n));
    while (auto body = c.inbox.next()) {
      handle(c, *body);
      if (c.broken) {
        drop(c.fd);
        return;
      }
    }
    if (c.inbox.bad()) {
      const std::uint32_t len = c.inbox.bad_length();
      spdlog::warn("pid {}: frame of {} bytes over the {} limit; closing", c.pid, len,
                   proto::kMaxFrame);
      const proto::ErrorReply e{ErrorCode::InvalidArgument,
                                "frame of " + std::to_string(len) + " bytes is over the limit"};
      // Best effort: the connection is dropped whether or not the peer reads it.
      if (!detail::send_frame(c.fd, proto::frame(e, 0), {}, /*may_wait=*/false))
        spdlog::debug("pid {}: error reply not sent: {}", c.pid, detail::errno_text(errno));
      drop(c.fd);
      return;
    }
  }
}

void Daemon::send(Client& c, const Outgoing& out) {
  // Never wait for a client: one that does not read its replies (its socket
  // buffer is full) is dropped instead of stalling everyone else.
  if (!detail::send_frame(c.fd, out.frame, out.fds.view(), /*may_wait=*/false)) {
    spdlog::warn("pid {}: reply not sent ({}; client not reading?); dropping it", c.pid,
                 detail::errno_text(errno));
    c.broken = true;
  }
}

void Daemon::drop(int fd) {
  auto it = clients_.find(fd);
  if (it == clients_.end()) return;
  const Client& c = it->second;
  free_seats_of(c);
  // Its reports go with it: a killed program leaves none behind.
  reports_held_ -= c.reports.size();
  for (const ComponentReport& r : c.reports)
    report_bytes_ -= proto::encoded_size(r);
  spdlog::debug("client pid {} disconnected ({} seats, {} reports)", c.pid, c.seats.size(),
                c.reports.size());
  if (auto n = connections_of_.find(c.uid); n != connections_of_.end() && --n->second == 0)
    connections_of_.erase(n);
  // Closing removes it from the epoll set too; a failure here only means that
  // (or an already-closed descriptor), worth a line in the log.
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr) != 0)
    spdlog::debug("epoll_ctl(DEL) for pid {}: {}", c.pid, detail::errno_text(errno));
  ::close(fd);
  clients_.erase(it);
}

}  // namespace shmbus::daemon
