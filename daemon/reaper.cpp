// What dead processes leave behind, and a dead daemon: adopting the regions
// found at start, freeing the seats of processes that died (at once when their
// connection drops, and by a periodic scan), and repairing sequences that a
// producer claimed and never published.
#include <dirent.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <utility>

#include "daemon.hpp"
#include "os.hpp"
#include "region.hpp"
#include "shmbus/error.hpp"
#include "shmbus/topic.hpp"

namespace shmbus::daemon {

namespace {

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

constexpr auto kFree = static_cast<std::uint32_t>(detail::SeatState::Free);
// How often a housekeeping failure that repeats every pass is logged again.
constexpr std::int64_t kRepeatWarningMs = 60'000;

}  // namespace

bool Daemon::seat_held(const Seat& s, pid_t pid) {
  const detail::Region& r = *s.region;
  bool held = false;
  // Relaxed: a check of who holds the seat now; free_* re-checks under the
  // region's control lock before it changes anything.
  const bool intact = touch(s, [&] {
    if (s.producer) {
      const detail::ProducerSeat& p = r.producer(s.a);
      held = p.state.load(std::memory_order_relaxed) != kFree &&
             p.pid.load(std::memory_order_relaxed) == static_cast<std::uint32_t>(pid);
    } else {
      const detail::MemberSeat& m = r.member(s.a, s.b);
      held = m.state.load(std::memory_order_relaxed) != kFree &&
             m.pid.load(std::memory_order_relaxed) == static_cast<std::uint32_t>(pid);
    }
  });
  return intact && held;
}

void Daemon::free_seats_of(const Client& c) {
  // A client that closed its bus but lives: its objects free their own seats.
  if (detail::process_alive(c.pid)) return;
  // The process is gone: free what it held, at once.
  for (const Seat& s : c.seats) {
    // The region the seat was attached in (kept alive by the seat), even if
    // the topic was deleted or re-created since; indices were checked then.
    // A damaged region is left as it is: nobody can use it any more.
    detail::Region& r = *s.region;
    try {
      const bool intact = touch(s, [&] {
        if (s.producer) {
          r.free_producer(s.a, static_cast<std::uint32_t>(c.pid));
          const auto it = topics_.find(s.topic);
          free_dead_writer(
              it != topics_.end() && it->second.region == s.region ? &it->second : nullptr, r,
              static_cast<std::uint32_t>(c.pid));
        } else
          r.free_member(s.a, s.b, static_cast<std::uint32_t>(c.pid));
      });
      if (!intact) spdlog::debug("seat of pid {} in the damaged topic '{}' left", c.pid, s.topic);
    } catch (const std::exception& e) {
      spdlog::warn("freeing seats of pid {}: {}", c.pid, e.what());
    }
  }
}

void Daemon::serve_adopted(const std::string& name, std::shared_ptr<detail::Region> region,
                           const char* how, bool previous_boot) {
  region->set_lock_patience(kLockPatience);
  TopicEntry& t = topics_[name] = TopicEntry{std::move(region)};
  std::uint64_t tail = 0;
  // Relaxed: a number for the log line. The rules may have changed since
  // the topic was created.
  if (touch(name, t, [&] {
        mark_sharing(name, *t.region);
        tail = t.region->header().tail.load(std::memory_order_relaxed);
      }))
    spdlog::info("{} topic '{}' (tail {})", how, name, tail);
  if (previous_boot) {
    // What the last mover left first, then every seat (its own among them),
    // then a mover of ours in a seat of its own.
    recover_schedule(name, t, /*previous_boot=*/true);
    forget_boot(name, t);
    start_mover(name, t, false);
  } else {
    // Before housekeeping frees the dead daemon's seats (schedule.hpp).
    start_mover(name, t, true);
  }
  if (t.region->flush_interval().count() > 0 && !t.damaged) {
    flusher().add(name, t.region);
  }
}

void Daemon::adopt_kept(std::vector<std::pair<int, int>> kept) {
  for (auto& [data, control] : kept) {
    // Our own keeper's (it checked our uid, we checked its), so our own
    // regions; checked all the same, as anything read from elsewhere is.
    // One not taken back is dropped from the keeper too (or it would hold
    // it, and its memory, for ever).
    std::shared_ptr<detail::Region> region;
    struct stat ds {};
    const std::uint64_t ino = ::fstat(data, &ds) == 0 ? ds.st_ino : 0;
    const auto forget = [&] {
      if (ino != 0) keeper_.drop_inode(ino);
    };
    try {
      struct stat st {};
      for (const int fd : {data, control})
        if (::fstat(fd, &st) != 0 || st.st_uid != ::geteuid() || (st.st_mode & 077) != 0)
          throw Error(ErrorCode::PermissionDenied, "not a segment of this daemon's user");
      // Owns both descriptors from here, also when it throws.
      region = detail::Region::adopt(std::exchange(data, -1), std::exchange(control, -1));
      const std::string name = region->topic_name();
      validate_name("topic", name);
      if (region->shm_name() != region_name(config_.bus, name))
        throw Error(ErrorCode::Corrupt, "it is named " + region->shm_name() + ", not " +
                                            region_name(config_.bus, name));
      // Sealed: it cannot have shrunk, so reading its header cannot fault.
      if (detail::deleted(region->ring())) {
        spdlog::info("forgetting the deleted topic '{}' the keeper still held", name);
        forget();
        continue;
      }
      if (topics_.contains(name)) {
        spdlog::warn("the keeper held topic '{}' twice; keeping the first", name);
        forget();
        continue;
      }
      serve_adopted(name, std::move(region), "took back");
    } catch (const std::exception& ex) {
      for (const int fd : {data, control})
        if (fd >= 0) ::close(fd);
      forget();
      spdlog::warn("not taking back a region from the keeper: {}", ex.what());
    }
  }
}

std::vector<std::pair<int, int>> Daemon::kept_fds() const {
  std::vector<std::pair<int, int>> all;
  for (const auto& [name, t] : topics_)
    if (t.region->sealed()) all.emplace_back(t.region->data_fd(), t.region->control_fd());
  return all;
}

void Daemon::unwatch_keeper() {
  // Only while the descriptor is still the keeper's: one closed by a failed
  // deposit left epoll by itself, and its number may be a client's now.
  if (watched_keeper_fd_ >= 0 && watched_keeper_fd_ == keeper_.fd())
    (void)::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, watched_keeper_fd_, nullptr);
  watched_keeper_fd_ = -1;
}

void Daemon::replace_keeper() {
  unwatch_keeper();
  keeper_.restart(kept_fds());
  if (keeper_.fd() >= 0 && watch(keeper_.fd(), EPOLLIN | EPOLLRDHUP))
    watched_keeper_fd_ = keeper_.fd();
  // Without one, another try in a while (housekeeping).
  keeper_retry_ = std::chrono::steady_clock::now() + std::chrono::seconds(5);
}

void Daemon::adopt_regions() {
  // Sealed regions (shmbusd's) from the keeper, then named ones (made
  // without a daemon, or by a daemon before issue 14) from /dev/shm.
  adopt_kept(keeper_.start());
  // Deposited again: a keeper started afresh holds none of them yet (one that
  // holds them already ignores the copies).
  for (const auto& [data, control] : kept_fds())
    keeper_.put(data, control, /*may_wait=*/true);
  if (keeper_.fd() >= 0 && watch(keeper_.fd(), EPOLLIN | EPOLLRDHUP))
    watched_keeper_fd_ = keeper_.fd();
  adopt_files();
  const std::string prefix = "shmbus." + config_.bus + ".";
  DIR* d = ::opendir("/dev/shm");
  if (d == nullptr) {
    spdlog::warn("cannot scan /dev/shm for topics to adopt: {}", detail::errno_text(errno));
    return;
  }
  while (dirent* e = ::readdir(d)) {
    const std::string file = e->d_name;
    if (file.rfind(prefix, 0) != 0) continue;
    const std::string name = file.substr(prefix.size());
    // A control segment is adopted with its data segment.
    if (std::string_view(name).ends_with(detail::kControlSuffix)) continue;
    if (topics_.contains(name)) {
      spdlog::warn(
          "not adopting /dev/shm/{}: topic '{}' came back from the keeper; delete the "
          "topic to remove both",
          file, name);
      continue;
    }
    const auto ours = [](const struct stat& st) {
      return S_ISREG(st.st_mode) && st.st_uid == ::geteuid() && (st.st_mode & 077) == 0;
    };
    const auto refuse = [&](const struct stat& st) {
      spdlog::warn(
          "not adopting /dev/shm/{}: owned by uid {} with mode {:o}, not created by "
          "this daemon's user; delete it (shmbus topic delete {})",
          file, st.st_uid, st.st_mode & 0777, name);
    };
    try {
      validate_name("topic", name);
      // The owner first, by name (no descriptor, no mapping): a file someone
      // else planted is never mapped, so they cannot stall the start on its
      // magic or truncate it under our reads. Nobody else can replace a file
      // of ours in sticky /dev/shm before the open below.
      struct stat st {};
      if (::lstat(("/dev/shm/" + file).c_str(), &st) != 0) continue;  // gone since readdir
      if (!ours(st)) {
        refuse(st);
        continue;
      }
      auto region = detail::Region::open(file);
      // Both segments, on the descriptors (open has checked that the control
      // segment's owner is the data segment's).
      bool both = true;
      for (const int fd : {region->data_fd(), region->control_fd()})
        both = both && ::fstat(fd, &st) == 0 && ours(st);
      if (!both) {
        refuse(st);
        continue;
      }
      if (region->read_only()) {
        // Mode 0400 or the like: the repairs and the delete write the data
        // segment, which would fault through a read-only mapping.
        spdlog::warn(
            "not adopting /dev/shm/{}: its mode lets this daemon only read it; chmod "
            "it 0600 or delete it",
            file);
        continue;
      }
      serve_adopted(name, std::move(region), "adopted");
    } catch (const std::exception& ex) {
      spdlog::warn("not adopting /dev/shm/{}: {}", file, ex.what());
    }
  }
  ::closedir(d);
  housekeeping();  // processes may have died while no daemon ran
}

void Daemon::free_dead_seats(TopicEntry& t) {
  detail::Region& r = *t.region;
  // Acquire loads of state (pair with the seat's release store when it was
  // taken: its pid is then the taker's), relaxed of pid; a scan for owners
  // that no longer exist, and free_* re-checks under the region's control lock.
  for (std::uint32_t i = 0; i < r.max_producers(); ++i) {
    const detail::ProducerSeat& p = r.producer(i);
    if (p.state.load(std::memory_order_acquire) == kFree) continue;
    const auto pid = static_cast<pid_t>(p.pid.load(std::memory_order_relaxed));
    if (!detail::process_alive(pid)) {
      spdlog::info("producer seat {} of pid {} (dead) freed", i, pid);
      r.free_producer(i, static_cast<std::uint32_t>(pid));
      free_dead_writer(&t, r, static_cast<std::uint32_t>(pid));
    }
  }
  for (std::uint32_t g = 0; g < r.max_groups(); ++g) {
    if (r.group(g).state.load(std::memory_order_acquire) == kFree) continue;
    for (std::uint32_t m = 0; m < r.max_members(); ++m) {
      const detail::MemberSeat& s = r.member(g, m);
      const std::uint32_t st = s.state.load(std::memory_order_acquire);
      // An orphan (at least once) is dead already: its adopters free it.
      if (st == kFree || st == static_cast<std::uint32_t>(detail::SeatState::Orphan)) continue;
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
  const std::int64_t now = now_ms();
  for (std::uint32_t p = 0; p < r.partitions(); ++p) {
    const std::uint64_t tail = r.header(p).tail.load(std::memory_order_acquire);
    for (std::uint32_t g = 0; g < r.max_groups(); ++g) {
      // One watch per group and partition (groups and partitions are at most 1024).
      const std::uint32_t key = g * detail::kMaxPartitions + p;
      const detail::GroupEntry& e = r.group(g, p);
      if (e.state.load(std::memory_order_acquire) == 0) {
        t.stuck.erase(key);
        continue;
      }
      const std::uint64_t c = e.cursor.load(std::memory_order_acquire);
      const bool waiting = c < tail && r.slot(c, p).stamp.load(std::memory_order_acquire) <
                                           detail::stamp_published(c);
      if (!waiting) {
        t.stuck.erase(key);
        continue;
      }
      auto [it, fresh] = t.stuck.try_emplace(key, c, now);
      if (fresh || it->second.first != c) {
        it->second = {c, now};
        continue;
      }
      if (now - it->second.second < config_.stuck_ms) continue;
      bool claimed_by_live = false;
      for (std::uint32_t i = 0; i < r.max_producers(); ++i) {
        const detail::ProducerSeat& seat = r.producer(i, p);
        if (seat.state.load(std::memory_order_acquire) == 0 ||
            !detail::process_alive(static_cast<pid_t>(seat.pid.load(std::memory_order_relaxed))))
          continue;
        for (const auto& f : seat.in_flight)
          if (f.load(std::memory_order_relaxed) == c) claimed_by_live = true;
      }
      if (!claimed_by_live && r.abandon_unpublished(c, p))
        spdlog::warn(
            "topic '{}': sequence {} of partition {} was claimed and never published; marked "
            "abandoned",
            name, c, p);
      t.stuck.erase(key);
    }
  }
}

void Daemon::remove_orphan_replies() {
  for (auto it = topics_.begin(); it != topics_.end();) {
    const auto next = std::next(it);
    if (const pid_t pid = reply_topic_pid(it->first); pid != 0 && !detail::process_alive(pid)) {
      spdlog::info("removed reply topic '{}': its requester (pid {}) is gone", it->first, pid);
      remove_topic(it);
    }
    it = next;
  }
}

void Daemon::housekeeping() {
  keeper_.reap();
  remove_orphan_replies();
  if (keeper_.configured() && !keeper_.enabled() &&
      std::chrono::steady_clock::now() >= keeper_retry_)
    replace_keeper();
  // Each topic checked and guarded on its own: a damaged one is quarantined
  // (and skipped from then on), the others are served as ever.
  for (auto it = topics_.begin(); it != topics_.end(); ++it) {
    const std::string& name = it->first;
    TopicEntry& t = it->second;
    try {
      (void)touch(name, t, [&] {
        free_dead_seats(t);
        repair_stuck(name, t);
      });
      if (t.failing_since_ms != 0)
        spdlog::info("housekeeping of '{}' works again, after {} failed passes", name,
                     t.failed_passes);
      t.failing_since_ms = 0;
    } catch (const std::exception& e) {
      // The same failure every pass (a control lock held hostage, say) is
      // logged when it starts and then once a minute, not four times a second.
      const std::int64_t now = now_ms();
      ++t.failed_passes;
      if (t.failing_since_ms == 0 || now - t.last_warned_ms >= kRepeatWarningMs) {
        if (t.failing_since_ms == 0) {
          t.failing_since_ms = now;
          t.failed_passes = 1;
        }
        spdlog::warn("housekeeping of '{}': {}{}", name, e.what(),
                     t.failed_passes > 1
                         ? fmt::format(" ({} passes failed in {} s)", t.failed_passes,
                                       (now - t.failing_since_ms) / 1000)
                         : std::string());
        t.last_warned_ms = now;
      }
    }
  }
  // Release: see housekeeping_rounds(). Only this thread writes the count.
  housekeeping_rounds_.fetch_add(1, std::memory_order_release);
}

void Daemon::quarantine(const std::string& name, TopicEntry& t, std::string why) {
  if (t.damaged) return;
  t.damaged = true;
  t.damage = "its region " + t.region->where() + " " + why;
  t.stuck.clear();
  if (t.mover) t.mover->damaged = true;
  t.mover.reset();
  if (flusher_) flusher_->remove(t.region.get());  // never touched again
  spdlog::warn("topic '{}': {}; quarantined (delete it: shmbus topic delete {})", name, t.damage,
               name);
}

}  // namespace shmbus::daemon
