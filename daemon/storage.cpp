// File topics (docs/durability.md): the bus's data directory, the topics
// found there at start (after a restart of everything, or a reboot), the
// torn messages a power cut may have left, and the flusher that writes
// topics with a flush interval back to disk.
#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <set>

#include "daemon.hpp"
#include "guard.hpp"
#include "os.hpp"
#include "region.hpp"
#include "schedule.hpp"
#include "shmbus/detail/ring.hpp"
#include "shmbus/topic.hpp"

namespace shmbus::daemon {

namespace {

constexpr const char* kDataLock = "@lock";
constexpr auto kFree = static_cast<std::uint32_t>(detail::SeatState::Free);
constexpr auto kOrphan = static_cast<std::uint32_t>(detail::SeatState::Orphan);

// Every seat of a region that comes back after a reboot belongs to a process
// of the previous boot: none of them runs any more, whatever their pids are
// now (a pid may have been given to another process). Frees them all, as
// the reaper frees a dead process's (claims abandoned, at-least-once members
// with records left as orphans), and clears what sleeping and locking left.
// Nobody else maps the region: no process of this boot has had it from
// shmbusd yet. A power cut also writes the two files back in no particular
// order, so a cursor may be ahead of its partition's tail on disk: it is
// brought back to the tail (the group then waits there, as it should).
void forget_previous_boot(detail::Region& r) {
  // Relaxed stores throughout: no other process maps the region now, and
  // the clients that will are handed it over the socket after this.
  for (std::uint32_t p = 0; p < r.partitions(); ++p) {
    detail::ControlHeader& c = r.control(p);
    c.control_lock.store(0, std::memory_order_relaxed);
    c.data_event.waiters.store(0, std::memory_order_relaxed);
    c.space_event.waiters.store(0, std::memory_order_relaxed);
    const std::uint64_t tail = r.header(p).tail.load(std::memory_order_relaxed);
    for (std::uint32_t g = 0; g < r.max_groups(); ++g) {
      std::atomic<std::uint64_t>& cursor = r.group(g, p).cursor;
      if (cursor.load(std::memory_order_relaxed) > tail)
        cursor.store(tail, std::memory_order_relaxed);
    }
  }
  if (const detail::Schedule& sc = r.schedule(); sc.header != nullptr) {
    sc.header->event.waiters.store(0, std::memory_order_relaxed);
    sc.header->space.waiters.store(0, std::memory_order_relaxed);
    std::set<std::uint32_t> writers;
    for (std::uint32_t i = 0; i < sc.capacity; ++i) {
      const std::uint64_t w = sc.entry(i).state.load(std::memory_order_relaxed);
      if (detail::entry_state(w) == detail::EntryState::Writing)
        writers.insert(detail::entry_pid(w));
    }
    for (const std::uint32_t pid : writers)
      (void)detail::free_writers_of(r, pid);
  }
  // Acquire (state): pairs with the release that took the seat, as the
  // reaper's scan; free_* re-checks under the control lock.
  for (std::uint32_t i = 0; i < r.max_producers(); ++i) {
    const detail::ProducerSeat& s = r.producer(i);
    if (s.state.load(std::memory_order_acquire) != kFree)
      r.free_producer(i, s.pid.load(std::memory_order_relaxed));
  }
  for (std::uint32_t g = 0; g < r.max_groups(); ++g)
    for (std::uint32_t m = 0; m < r.max_members(); ++m) {
      const detail::MemberSeat& s = r.member(g, m);
      const std::uint32_t state = s.state.load(std::memory_order_acquire);
      if (state != kFree && state != kOrphan)
        r.free_member(g, m, s.pid.load(std::memory_order_relaxed));
    }
  r.header().boot = detail::boot_id_hash();
}

// Published messages whose checksum does not match (torn by a power cut):
// readers skip them as lost; counted here for the log and describe. Only
// for a region from another boot: nobody else maps it yet (after a restart
// in the same boot producers may be writing, and the page cache tears
// nothing that a reader could not see whole anyway).
std::uint64_t count_torn(const detail::Region& r) {
  std::uint64_t torn = 0;
  for (std::uint32_t p = 0; p < r.partitions(); ++p) {
    const detail::Ring& ring = r.ring(p);
    // Relaxed: nobody else maps the region yet.
    const std::uint64_t tail = ring.header->tail.load(std::memory_order_relaxed);
    for (std::uint64_t s = ring.oldest(tail); s < tail; ++s) {
      detail::SlotHeader& slot = ring.slot(s);
      if (slot.stamp.load(std::memory_order_relaxed) == detail::stamp_published(s) &&
          detail::well_formed(slot, ring.slot_size) && !detail::intact(ring, slot, s))
        ++torn;
    }
  }
  return torn;
}

}  // namespace

// ---- the flusher --------------------------------------------------------------

Flusher::Flusher() : thread_([this] { run(); }) {}

Flusher::~Flusher() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void Flusher::add(const std::string& topic, std::shared_ptr<detail::Region> region) {
  const auto every = region->flush_interval();
  if (every.count() <= 0) return;
  {
    std::lock_guard lock(mutex_);
    const detail::Region* key = region.get();  // before the move below
    // No mark yet: the first flush happens whatever the region holds.
    topics_[key] =
        Entry{topic, std::move(region), Clock::now() + every, every, 0, ~std::uint64_t{0}};
  }
  wake_.notify_all();
}

void Flusher::remove(const detail::Region* region) {
  std::lock_guard lock(mutex_);
  topics_.erase(region);
}

// What a flush would write, in one number: every partition's tail and every
// group's cursor in it. Unchanged since the last flush: nothing was
// published or consumed, and the flusher leaves the disk alone (an idle
// topic costs no write per interval; a flush would dirty a page itself, by
// recording flushed_ns). Acknowledgements alone (an at-least-once member's
// records) do not move it: they reach the disk with the next flush, and a
// power cut before it delivers those messages again, which at least once
// allows. Relaxed loads: a hint.
std::uint64_t change_mark(const detail::Region& r) noexcept {
  std::uint64_t mark = 0;
  for (std::uint32_t p = 0; p < r.partitions(); ++p) {
    mark = mark * 0x100000001b3ULL + r.header(p).tail.load(std::memory_order_relaxed);
    for (std::uint32_t g = 0; g < r.max_groups(); ++g)
      mark = mark * 0x100000001b3ULL + r.group(g, p).cursor.load(std::memory_order_relaxed);
  }
  return mark;
}

void Flusher::run() {
  std::unique_lock lock(mutex_);
  while (!stop_) {
    auto next = Clock::now() + std::chrono::seconds(1);
    for (const auto& [key, e] : topics_)
      next = std::min(next, e.due);
    wake_.wait_until(lock, next);
    if (stop_) break;
    const auto now = Clock::now();
    const auto due = std::find_if(topics_.begin(), topics_.end(),
                                  [&](const auto& kv) { return kv.second.due <= now; });
    if (due == topics_.end()) continue;
    // Copies: the map may change (a delete) while the lock is dropped.
    const std::shared_ptr<detail::Region> region = due->second.region;
    const std::string topic = due->second.topic;
    const std::uint64_t last_mark = due->second.mark;
    lock.unlock();
    int err = 0;
    std::uint64_t mark = last_mark;
    // Guarded as every access of the daemon's (issue 14): msync of a file
    // another process truncated fails (ENOMEM) rather than faulting, but the
    // loads above and the store of flushed_ns would fault.
    const bool intact = region_intact(*region) && guarded([&] {
                          mark = change_mark(*region);
                          if (mark != last_mark) err = region->flush();
                        });
    lock.lock();
    const auto it = topics_.find(region.get());
    if (it == topics_.end()) continue;  // deleted meanwhile
    // Not a catch-up burst after a long flush: the next one is an interval
    // after this one ends.
    it->second.due = Clock::now() + it->second.every;
    if (!intact || err != 0) {
      if (it->second.failures++ % 60 == 0)
        spdlog::warn("topic '{}': cannot write it to disk: {}", topic,
                     intact ? detail::errno_text(err) : std::string("the region is damaged"));
    } else {
      it->second.failures = 0;
      it->second.mark = mark;
    }
  }
}

Flusher& Daemon::flusher() {
  if (!flusher_) flusher_ = std::make_unique<Flusher>();
  return *flusher_;
}

// ---- the data directory ----------------------------------------------------------

std::string Daemon::data_dir_path() const {
  if (!config_.data_dir.empty()) return config_.data_dir;
  if (const char* env = std::getenv("SHMBUS_DATA_DIR"); env != nullptr && env[0] != '\0')
    return env;
  return detail::default_data_dir(config_.bus);
}

int Daemon::data_dir_fd() {
  if (data_fd_ >= 0) return data_fd_;
  std::string why;
  const int dir = detail::open_data_dir(data_dir_, why);
  if (dir < 0)
    throw Error(ErrorCode::PermissionDenied,
                "cannot use the data directory for file topics: " + why);
  // One daemon per data directory, whichever its bus: two would serve the
  // same files (two movers on one schedule; one's delete under the other).
  // "@lock" is no topic's name ('@' is not allowed in names).
  const int lock = ::openat(dir, kDataLock, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (lock < 0 || !detail::flock_soon(lock)) {
    const int err = errno;
    if (lock >= 0) ::close(lock);
    ::close(dir);
    throw Error(
        err == EWOULDBLOCK ? ErrorCode::InUse : ErrorCode::SystemError,
        "cannot use the data directory " + data_dir_ + " for file topics: " +
            (err == EWOULDBLOCK
                 ? std::string("another shmbusd serves it (it holds ") + data_dir_ + "/" +
                       kDataLock + "); give each bus its own --data-dir"
                 : "cannot lock " + data_dir_ + "/" + kDataLock + ": " + detail::errno_text(err)));
  }
  data_lock_fd_ = lock;
  data_fd_ = dir;
  return data_fd_;
}

void Daemon::adopt_files() {
  data_dir_ = data_dir_path();
  struct stat st {};
  // No directory yet: no file topic was ever made here (it is created with
  // the first one).
  if (::lstat(data_dir_.c_str(), &st) != 0 && errno == ENOENT) return;
  int dir = -1;
  try {
    dir = data_dir_fd();
  } catch (const std::exception& e) {
    spdlog::warn("not adopting file topics: {}", e.what());
    return;
  }
  const int scan = ::fcntl(dir, F_DUPFD_CLOEXEC, 0);
  DIR* d = scan < 0 ? nullptr : ::fdopendir(scan);
  if (d == nullptr) {
    if (scan >= 0) ::close(scan);
    spdlog::warn("cannot scan {} for file topics: {}", data_dir_, detail::errno_text(errno));
    return;
  }
  // 0: unknown (no /proc): then no region is taken for another boot's.
  const std::uint64_t boot = detail::boot_id_hash();
  while (dirent* e = ::readdir(d)) {
    const std::string file = e->d_name;
    if (file == "." || file == ".." || file == kDataLock) continue;
    if (std::string_view(file).ends_with(detail::kControlSuffix)) continue;
    try {
      validate_name("topic", file);
      if (topics_.contains(file)) {
        spdlog::warn("not adopting {}/{}: a memory topic '{}' came back from the keeper", data_dir_,
                     file, file);
        continue;
      }
      auto region = detail::Region::open_file(dir, data_dir_, file);
      if (region->topic_name() != file)
        throw Error(ErrorCode::Corrupt, "it holds topic '" + region->topic_name() + "'");
      if (region->storage() != Storage::File)
        throw Error(ErrorCode::Corrupt, "its header says it is no file topic");
      // Not under touch(): the topic is not served yet. Guarded all the
      // same, as the daemon never dies of a region it maps.
      bool rebooted = false;
      std::uint64_t torn = 0;
      if (!region_intact(*region) || !guarded([&] {
            const std::uint64_t was = region->header().boot;
            rebooted = boot != 0 && was != 0 && was != boot;
            if (rebooted) torn = count_torn(*region);
            // Made where the boot id was unknown: this boot's from now on.
            if (was == 0) region->header().boot = boot;
          }))
        throw Error(ErrorCode::Corrupt, "its files do not have the size its header says");
      if (torn != 0)
        spdlog::warn(
            "topic '{}': {} message(s) torn (their checksum does not match: a power cut before "
            "they reached the disk); readers skip them, counted as lost",
            file, torn);
      serve_adopted(file, std::move(region), rebooted ? "adopted (after a reboot)" : "adopted",
                    rebooted);
      if (auto it = topics_.find(file); it != topics_.end()) it->second.torn = torn;
    } catch (const std::exception& ex) {
      spdlog::warn("not adopting {}/{}: {}", data_dir_, file, ex.what());
    }
  }
  ::closedir(d);
}

void Daemon::forget_boot(const std::string& name, TopicEntry& t) {
  if (touch(name, t, [&] { forget_previous_boot(*t.region); }))
    spdlog::info("topic '{}' comes from a previous boot: every seat freed", name);
}

}  // namespace shmbus::daemon
