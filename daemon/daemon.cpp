#include "daemon.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
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

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "os.hpp"
#include "protocol.hpp"
#include "region.hpp"
#include "shmbus/error.hpp"
#include "shmbus/topic.hpp"

namespace shmbus::daemon {

namespace proto = detail::proto;
using proto::Type;

namespace {

enum Right { kCreate = 0, kPublish = 1, kSubscribe = 2 };

constexpr std::size_t kMaxSeatsPerClient = 4096;

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

bool matches(const std::string& pattern, const std::string& name) {
  if (pattern == "*") return true;
  if (!pattern.empty() && pattern.back() == '*')
    return name.compare(0, pattern.size() - 1, pattern, 0, pattern.size() - 1) == 0;
  return pattern == name;
}

bool in(const Principals& p, uid_t uid, gid_t gid) {
  if (p.anyone) return true;
  for (uid_t u : p.uids)
    if (u == uid) return true;
  for (gid_t g : p.gids)
    if (g == gid) return true;
  return false;
}

std::vector<std::byte> error_frame(std::uint32_t id, ErrorCode code, const std::string& msg) {
  proto::Writer w(Type::Error, id);
  w.u8(static_cast<std::uint8_t>(code)).str(msg);
  return w.finish();
}

TopicStatus status_of(const std::string& name, const detail::Region& r) {
  TopicStatus t;
  t.name = name;
  t.options.slot_count = static_cast<std::uint32_t>(r.slot_count());
  t.options.slot_size = r.slot_size();
  t.options.policy = r.policy();
  t.options.single_producer = r.single_producer();
  t.options.max_producers = r.max_producers();
  t.options.max_groups = r.max_groups();
  t.options.max_members = r.max_members();
  // Relaxed loads below: a snapshot for reporting.
  t.tail = r.header().tail.load(std::memory_order_relaxed);
  for (std::uint32_t i = 0; i < r.max_producers(); ++i) {
    const detail::ProducerSeat& p = r.producer(i);
    if (p.state.load(std::memory_order_relaxed) == 0) continue;
    ++t.producers;
    ProducerStatus ps;
    ps.seat = i;
    ps.pid = p.pid.load(std::memory_order_relaxed);
    ps.session = p.session.load(std::memory_order_relaxed);
    ps.published = p.published.load(std::memory_order_relaxed);
    ps.published_bytes = p.published_bytes.load(std::memory_order_relaxed);
    t.published += ps.published;
    t.published_bytes += ps.published_bytes;
    t.producer_seats.push_back(ps);
  }
  for (std::uint32_t g = 0; g < r.max_groups(); ++g) {
    const detail::GroupEntry& e = r.group(g);
    if (e.state.load(std::memory_order_relaxed) !=
        static_cast<std::uint32_t>(detail::SeatState::Active))
      continue;
    GroupStatus gs;
    const std::uint32_t flags = e.flags.load(std::memory_order_relaxed);
    gs.name = (flags & detail::kGroupPrivate) != 0
                  ? std::string()
                  : std::string(e.name, ::strnlen(e.name, sizeof e.name));
    gs.members = e.members.load(std::memory_order_relaxed);
    gs.durable = (flags & detail::kGroupDurable) != 0;
    gs.position = e.cursor.load(std::memory_order_relaxed);
    gs.lag = t.tail > gs.position ? t.tail - gs.position : 0;
    gs.lost = e.lost.load(std::memory_order_relaxed);
    t.groups.push_back(std::move(gs));
  }
  return t;
}

}  // namespace

Daemon::Daemon(Config config) : config_(std::move(config)) {
  validate_name("bus", config_.bus);
  socket_path_ =
      config_.socket_path.empty() ? detail::default_socket_path(config_.bus) : config_.socket_path;
}

Daemon::~Daemon() {
  // The socket file goes first: a client that sees its connection drop checks
  // for it to tell a clean stop (no file: do not restart) from a crash.
  if (listen_fd_ >= 0) ::unlink(socket_path_.c_str());
  for (int fd : {listen_fd_, epoll_fd_, wake_fd_, timer_fd_, spare_fd_})
    if (fd >= 0) ::close(fd);
  for (auto& [fd, c] : clients_)
    ::close(fd);
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

void Daemon::start() {
  spdlog::set_level(spdlog::level::from_str(config_.log_level));
  sockaddr_un addr{};
  if (socket_path_.size() >= sizeof addr.sun_path)
    throw Error(ErrorCode::InvalidArgument, "socket path '" + socket_path_ + "' is longer than " +
                                                std::to_string(sizeof addr.sun_path - 1) +
                                                " bytes; pick a shorter --socket");
  const auto slash = socket_path_.rfind('/');
  if (slash != std::string::npos && slash > 0)
    detail::make_dirs(socket_path_.substr(0, slash), 0755);
  // One daemon per socket: an exclusive flock on "<socket>.lock", held for life.
  const std::string lock_path = socket_path_ + ".lock";
  lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0)
    throw Error(ErrorCode::SystemError,
                "cannot open " + lock_path + ": " + detail::errno_text(errno));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0)
    throw Error(ErrorCode::AlreadyExists,
                "another shmbusd already serves " + socket_path_ +
                    "; stop it first (shmbus daemon stop) or use another --socket");
  ::unlink(socket_path_.c_str());  // a stale socket from a daemon that died
  listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) throw Error(ErrorCode::SystemError, "socket: " + detail::errno_text(errno));
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, socket_path_.c_str(), socket_path_.size() + 1);
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    throw Error(ErrorCode::SystemError,
                "cannot bind " + socket_path_ + ": " + detail::errno_text(errno));
  // Anyone may connect; every request is checked against SO_PEERCRED and the rules.
  ::chmod(socket_path_.c_str(), 0666);
  if (::listen(listen_fd_, 64) != 0)
    throw Error(ErrorCode::SystemError, "listen: " + detail::errno_text(errno));
  // One descriptor per client and per topic: raise the soft limit to the hard
  // one, and keep a spare to refuse clients cleanly when even that runs out.
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &lim);
  }
  spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  timer_fd_ = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (epoll_fd_ < 0 || wake_fd_ < 0 || timer_fd_ < 0)
    throw Error(ErrorCode::SystemError, "epoll/eventfd/timerfd: " + detail::errno_text(errno));
  itimerspec its{};
  its.it_interval.tv_sec = config_.housekeeping_ms / 1000;
  its.it_interval.tv_nsec = (config_.housekeeping_ms % 1000) * 1'000'000L;
  its.it_value = its.it_interval;
  ::timerfd_settime(timer_fd_, 0, &its, nullptr);
  for (int fd : {listen_fd_, wake_fd_, timer_fd_}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
  }
  adopt_regions();
  spdlog::info("shmbusd serving bus '{}' on {} ({} topics adopted)", config_.bus, socket_path_,
               topics_.size());
}

void Daemon::stop() noexcept {
  stopping_.store(true, std::memory_order_relaxed);  // relaxed: the eventfd write wakes run()
  if (wake_fd_ >= 0) {
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto n = ::write(wake_fd_, &one, sizeof one);
  }
}

void Daemon::run() {
  epoll_event events[64];
  while (!stopping_.load(std::memory_order_relaxed)) {
    const int n = ::epoll_wait(epoll_fd_, events, 64, 1000);
    if (n < 0 && errno != EINTR)
      throw Error(ErrorCode::SystemError, "epoll_wait: " + detail::errno_text(errno));
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == listen_fd_) {
        accept_clients();
      } else if (fd == timer_fd_) {
        std::uint64_t ticks = 0;
        [[maybe_unused]] const auto r = ::read(timer_fd_, &ticks, sizeof ticks);
        housekeeping();
      } else if (fd == wake_fd_) {
        std::uint64_t v = 0;
        [[maybe_unused]] const auto r = ::read(wake_fd_, &v, sizeof v);
      } else if (auto it = clients_.find(fd); it != clients_.end()) {
        serve(it->second);
      }
    }
  }
  spdlog::info("shmbusd stopping");
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
    if (fd < 0) return;
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
      ::close(fd);
      continue;
    }
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.fd = fd;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
    clients_.emplace(fd, Client{fd, cred.pid, cred.uid, cred.gid, {}, {}});
    spdlog::debug("client pid {} uid {} connected", cred.pid, cred.uid);
  }
}

void Daemon::serve(Client& c) {
  std::byte buf[8192];
  for (;;) {
    const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
    if (n > 0) {
      c.inbuf.insert(c.inbuf.end(), buf, buf + n);
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n < 0 && errno == EINTR) continue;
    drop(c.fd);  // closed or failed: the process is gone (or gave up its bus)
    return;
  }
  // Whole frames only; a bad length prefix ends the connection (the stream
  // cannot be resynchronised), anything inside a frame gets an error reply.
  std::size_t used = 0;
  while (c.inbuf.size() - used >= 4) {
    std::uint32_t len = 0;
    std::memcpy(&len, c.inbuf.data() + used, 4);
    if (len > proto::kMaxFrame) {
      spdlog::warn("pid {}: frame of {} bytes over the {} limit; closing", c.pid, len,
                   proto::kMaxFrame);
      const auto f = error_frame(0, ErrorCode::InvalidArgument,
                                 "frame of " + std::to_string(len) + " bytes is over the limit");
      // Best effort: the connection is dropped whether or not the peer reads it.
      if (!detail::send_frame(c.fd, f, -1, /*may_wait=*/false))
        spdlog::debug("pid {}: error reply not sent: {}", c.pid, detail::errno_text(errno));
      drop(c.fd);
      return;
    }
    if (c.inbuf.size() - used - 4 < len) break;
    handle(c, std::span(c.inbuf.data() + used + 4, len));
    used += 4 + len;
    if (c.broken) {
      drop(c.fd);
      return;
    }
  }
  c.inbuf.erase(c.inbuf.begin(), c.inbuf.begin() + static_cast<std::ptrdiff_t>(used));
}

void Daemon::drop(int fd) {
  auto it = clients_.find(fd);
  if (it == clients_.end()) return;
  Client& c = it->second;
  // The process is gone (or closed its bus): free what it held, at once.
  for (const Seat& s : c.seats) {
    // The region the seat was attached in (kept alive by the seat), even if
    // the topic was deleted or re-created since; indices were checked then.
    detail::Region& r = *s.region;
    if (detail::process_alive(c.pid))
      break;  // closed its bus but lives: its objects free their own seats
    try {
      if (s.producer)
        r.free_producer(s.a, static_cast<std::uint32_t>(c.pid));
      else
        r.free_member(s.a, s.b, static_cast<std::uint32_t>(c.pid));
    } catch (const std::exception& e) {
      spdlog::warn("freeing seats of pid {}: {}", c.pid, e.what());
    }
  }
  spdlog::debug("client pid {} disconnected ({} seats)", c.pid, c.seats.size());
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  ::close(fd);
  clients_.erase(it);
}

bool Daemon::allowed(const Client& c, const std::string& topic, int what) const {
  if (c.uid == 0 || c.uid == ::geteuid()) return true;
  for (const TopicRule& r : config_.rules) {
    if (!matches(r.pattern, topic)) continue;
    const Principals& p = what == kCreate ? r.create : what == kPublish ? r.publish : r.subscribe;
    return in(p, c.uid, c.gid);  // the first rule that names the topic decides
  }
  return false;
}

void Daemon::handle(Client& c, std::span<const std::byte> body) {
  proto::Request q;
  const bool parsed = proto::parse_request(body, q);
  const std::uint32_t id = q.id;
  const auto reply = [&](const std::vector<std::byte>& f, int fd = -1) {
    // Never wait for a client: one that does not read its replies (its socket
    // buffer is full) is dropped instead of stalling everyone else.
    if (!detail::send_frame(c.fd, f, fd, /*may_wait=*/false)) {
      spdlog::warn("pid {}: reply not sent (client not reading?); dropping it", c.pid);
      c.broken = true;
    }
  };
  const auto fail = [&](ErrorCode code, const std::string& msg) {
    spdlog::debug("pid {}: {}", c.pid, msg);
    reply(error_frame(id, code, msg));
  };
  if (!parsed) return fail(q.error_code, q.error);
  const std::string& name = q.name;
  TopicEntry* const t = [&]() -> TopicEntry* {
    auto it = topics_.find(name);
    return it == topics_.end() ? nullptr : &it->second;
  }();
  const auto not_found = [&] {
    fail(ErrorCode::NotFound, "no topic '" + name + "' on bus '" + config_.bus +
                                  "'; create it first (shmbus topic create " + name + ")");
  };
  const auto denied = [&](const std::string& what) {
    fail(ErrorCode::PermissionDenied, "uid " + std::to_string(c.uid) + " may not " + what +
                                          " topic '" + name + "'; ask the bus owner for a rule");
  };
  const auto topic_reply = [&](const detail::Region& region) {
    proto::Writer w(Type::TopicReply, id);
    proto::encode(w, proto::TopicSpec{name, status_of(name, region).options});
    reply(w.finish(), region.fd());
  };
  try {
    switch (q.type) {
      case Type::Hello: {
        proto::Writer w(Type::HelloReply, id);
        w.str(config_.bus).u32(static_cast<std::uint32_t>(::getpid()));
        return reply(w.finish());
      }
      case Type::CreateTopic: {
        if (!allowed(c, name, kCreate)) return denied("create");
        TopicOptions o = q.spec.options;
        const TopicOptions& d = config_.defaults;
        if (o.slot_count == 0) o.slot_count = d.slot_count;
        if (o.slot_size == 0) o.slot_size = d.slot_size;
        if (o.max_producers == 0) o.max_producers = d.max_producers;
        if (o.max_groups == 0) o.max_groups = d.max_groups;
        if (o.max_members == 0) o.max_members = d.max_members;
        o.mode = 0600;  // only shmbusd maps by name; clients get a descriptor
        auto region = detail::Region::create(region_name(config_.bus, name), name, o);
        topics_[name] = TopicEntry{region, {}};
        spdlog::info("pid {} uid {} created topic '{}' ({} x {} B, policy {})", c.pid, c.uid, name,
                     o.slot_count, o.slot_size, static_cast<int>(o.policy));
        return topic_reply(*region);
      }
      case Type::OpenTopic:
        if (t == nullptr) return not_found();
        if (!allowed(c, name, kPublish) && !allowed(c, name, kSubscribe))
          return denied("open (neither publish to nor subscribe to)");
        return topic_reply(*t->region);
      case Type::DeleteTopic:
        if (!allowed(c, name, kCreate)) return denied("delete");
        if (t == nullptr) {
          // A region file the daemon did not adopt (stale layout, foreign owner):
          // deleting it is how one gets rid of it.
          if (detail::Region::remove(region_name(config_.bus, name))) {
            spdlog::info("pid {} deleted the unadopted region of '{}'", c.pid, name);
            return reply(proto::Writer(Type::Ok, id).finish());
          }
          return not_found();
        }
        detail::Region::remove(region_name(config_.bus, name));
        topics_.erase(name);
        spdlog::info("pid {} deleted topic '{}'", c.pid, name);
        return reply(proto::Writer(Type::Ok, id).finish());
      case Type::Describe: {
        if (t == nullptr) return not_found();
        if (!allowed(c, name, kPublish) && !allowed(c, name, kSubscribe) &&
            !allowed(c, name, kCreate))
          return denied("describe");
        proto::Writer w(Type::Description, id);
        proto::encode(w, status_of(name, *t->region));
        return reply(w.finish());
      }
      case Type::ListTopics: {
        // Only the topics this client may use.
        std::vector<const std::string*> visible;
        for (auto& [n, e] : topics_)
          if (allowed(c, n, kPublish) || allowed(c, n, kSubscribe) || allowed(c, n, kCreate))
            visible.push_back(&n);
        proto::Writer w(Type::TopicList, id);
        w.u32(static_cast<std::uint32_t>(visible.size()));
        for (const std::string* n : visible)
          proto::encode(w, status_of(*n, *topics_[*n].region));
        return reply(w.finish());
      }
      case Type::AttachProducer:
      case Type::AttachMember: {
        if (t == nullptr) return not_found();
        if (!allowed(c, name, q.producer ? kPublish : kSubscribe))
          return denied(q.producer ? "publish to" : "subscribe to");
        detail::Region& reg = *t->region;
        const bool in_range = q.producer ? q.a < reg.max_producers()
                                         : q.a < reg.max_groups() && q.b < reg.max_members();
        if (!in_range) return fail(ErrorCode::InvalidArgument, "seat index out of range");
        // Relaxed: we only compare the seat's owner with the peer.
        const std::uint32_t owner = q.producer
                                        ? reg.producer(q.a).pid.load(std::memory_order_relaxed)
                                        : reg.member(q.a, q.b).pid.load(std::memory_order_relaxed);
        if (owner != static_cast<std::uint32_t>(c.pid))
          return fail(ErrorCode::PermissionDenied, "that seat belongs to another process");
        const bool known = std::any_of(c.seats.begin(), c.seats.end(), [&](const Seat& x) {
          return x.region == t->region && x.producer == q.producer && x.a == q.a && x.b == q.b;
        });
        if (!known) {
          if (c.seats.size() >= kMaxSeatsPerClient)
            return fail(ErrorCode::ResourceExhausted,
                        "this connection registered " + std::to_string(kMaxSeatsPerClient) +
                            " seats already; close publishers and subscribers you no longer use");
          c.seats.push_back(Seat{name, t->region, q.producer, q.a, q.b});
        }
        return reply(proto::Writer(Type::Ok, id).finish());
      }
      case Type::Detach:
        std::erase_if(c.seats, [&](const Seat& s) {
          return s.topic == name && s.producer == q.producer && s.a == q.a && s.b == q.b;
        });
        return reply(proto::Writer(Type::Ok, id).finish());
      case Type::Shutdown:
        if (c.uid != 0 && c.uid != ::geteuid())
          return fail(ErrorCode::PermissionDenied, "only root or the daemon's user may stop it");
        reply(proto::Writer(Type::Ok, id).finish());
        stop();
        return;
      default:
        return fail(ErrorCode::InvalidArgument, "not a request");
    }
  } catch (const Error& e) {
    return fail(e.code(), e.what());
  } catch (const std::exception& e) {
    return fail(ErrorCode::SystemError, e.what());
  }
}

void Daemon::adopt_regions() {
  const std::string prefix = "shmbus." + config_.bus + ".";
  DIR* d = ::opendir("/dev/shm");
  if (d == nullptr) return;
  while (dirent* e = ::readdir(d)) {
    const std::string file = e->d_name;
    if (file.rfind(prefix, 0) != 0) continue;
    const std::string name = file.substr(prefix.size());
    try {
      validate_name("topic", name);
      auto region = detail::Region::open(file);
      struct stat st {};
      if (::fstat(region->fd(), &st) != 0 || st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) {
        spdlog::warn(
            "not adopting /dev/shm/{}: owned by uid {} with mode {:o}, not created by "
            "this daemon's user; delete it (shmbus topic delete {})",
            file, st.st_uid, st.st_mode & 0777, name);
        continue;
      }
      topics_[name] = TopicEntry{std::move(region), {}};
      spdlog::info("adopted topic '{}' (tail {})", name,
                   topics_[name].region->header().tail.load(std::memory_order_relaxed));
    } catch (const std::exception& ex) {
      spdlog::warn("not adopting /dev/shm/{}: {}", file, ex.what());
    }
  }
  ::closedir(d);
  housekeeping();  // processes may have died while no daemon ran
}

void Daemon::free_dead_seats(TopicEntry& t) {
  detail::Region& r = *t.region;
  // Relaxed loads: a scan for owners that no longer exist; free_* re-checks
  // under the region's control lock.
  for (std::uint32_t i = 0; i < r.max_producers(); ++i) {
    const detail::ProducerSeat& p = r.producer(i);
    if (p.state.load(std::memory_order_acquire) == 0) continue;
    const auto pid = static_cast<pid_t>(p.pid.load(std::memory_order_relaxed));
    if (!detail::process_alive(pid)) {
      spdlog::info("producer seat {} of pid {} (dead) freed", i, pid);
      r.free_producer(i, static_cast<std::uint32_t>(pid));
    }
  }
  for (std::uint32_t g = 0; g < r.max_groups(); ++g) {
    if (r.group(g).state.load(std::memory_order_acquire) == 0) continue;
    for (std::uint32_t m = 0; m < r.max_members(); ++m) {
      const detail::MemberSeat& s = r.member(g, m);
      if (s.state.load(std::memory_order_acquire) == 0) continue;
      const auto pid = static_cast<pid_t>(s.pid.load(std::memory_order_relaxed));
      if (!detail::process_alive(pid)) {
        spdlog::info("member seat {}/{} of pid {} (dead) freed", g, m, pid);
        r.free_member(g, m, static_cast<std::uint32_t>(pid));
      }
    }
  }
}

// A group waiting on a sequence that was claimed but is not being published
// (its producer died between claim and recording the claim) would wait for
// ever: after stuck_ms with no live producer claiming it, mark it abandoned.
void Daemon::repair_stuck(const std::string& name, TopicEntry& t) {
  detail::Region& r = *t.region;
  // Acquire loads (tail, states, cursors, stamps): enough to suspect a stuck
  // sequence. A stale view only delays a repair; a live producer's claim is
  // protected by its in_flight record and the stuck_ms wait, and
  // abandon_unpublished() acts by CAS on the stamp it read.
  const std::uint64_t tail = r.header().tail.load(std::memory_order_acquire);
  const std::int64_t now = now_ms();
  for (std::uint32_t g = 0; g < r.max_groups(); ++g) {
    const detail::GroupEntry& e = r.group(g);
    if (e.state.load(std::memory_order_acquire) == 0) {
      t.stuck.erase(g);
      continue;
    }
    const std::uint64_t c = e.cursor.load(std::memory_order_acquire);
    const bool waiting =
        c < tail && r.slot(c).stamp.load(std::memory_order_acquire) < detail::stamp_published(c);
    if (!waiting) {
      t.stuck.erase(g);
      continue;
    }
    auto [it, fresh] = t.stuck.try_emplace(g, c, now);
    if (fresh || it->second.first != c) {
      it->second = {c, now};
      continue;
    }
    if (now - it->second.second < config_.stuck_ms) continue;
    bool claimed_by_live = false;
    for (std::uint32_t i = 0; i < r.max_producers(); ++i) {
      const detail::ProducerSeat& p = r.producer(i);
      if (p.state.load(std::memory_order_acquire) == 0 ||
          !detail::process_alive(static_cast<pid_t>(p.pid.load(std::memory_order_relaxed))))
        continue;
      for (const auto& f : p.in_flight)
        if (f.load(std::memory_order_relaxed) == c) claimed_by_live = true;
    }
    if (!claimed_by_live && r.abandon_unpublished(c))
      spdlog::warn("topic '{}': sequence {} was claimed and never published; marked abandoned",
                   name, c);
    t.stuck.erase(g);
  }
}

void Daemon::housekeeping() {
  for (auto& [name, t] : topics_) {
    try {
      free_dead_seats(t);
      repair_stuck(name, t);
    } catch (const std::exception& e) {
      spdlog::warn("housekeeping of '{}': {}", name, e.what());
    }
  }
  // Release: see housekeeping_rounds(). Only this thread writes the count.
  housekeeping_rounds_.fetch_add(1, std::memory_order_release);
}

}  // namespace shmbus::daemon
