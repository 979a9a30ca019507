// shmbusd as a library: the coordinator's control plane. `main` only parses
// flags and the configuration and runs a Daemon, so tests can run one in-process.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "guard.hpp"
#include "keeper.hpp"
#include "os.hpp"
#include "protocol.hpp"
#include "shmbus/error.hpp"
#include "shmbus/options.hpp"
#include "shmbus/report.hpp"

namespace shmbus::detail {
class Region;
class Mover;
}  // namespace shmbus::detail

namespace shmbus::daemon {

namespace proto = detail::proto;

// How long shmbusd waits for a topic's control lock before it gives up and
// tries again at the next housekeeping pass (Region::set_lock_patience):
// longer than the 200 ms after which a dead holder's lock is taken over, and
// short, because the lock is in the control segment that every subscriber
// may write, and the daemon serves every topic from one thread.
inline constexpr std::chrono::milliseconds kLockPatience{300};

// A topic's mover of due delayed messages (src/schedule.hpp) on a thread of
// its own, so that a full partition under `block` holds up that topic's
// schedule only, never the control plane. Destroying it stops and joins it.
struct MoverThread {
  MoverThread(const std::string& topic, std::shared_ptr<detail::Region> region);
  ~MoverThread();
  MoverThread(const MoverThread&) = delete;
  MoverThread& operator=(const MoverThread&) = delete;
  void rescan() noexcept;  // a producer died: look at every entry
  // The region was found damaged: the destructor then never touches it
  // (the mover's seat is left; nobody uses the region again).
  bool damaged = false;
  std::unique_ptr<detail::Mover> mover;
  std::thread thread;
};

// shmbusd's writer of file topics with a flush interval (docs/durability.md):
// one thread, msync of each topic every interval, off the event loop (a
// flush can take as long as the disk does). Destroying it stops and joins it.
class Flusher {
 public:
  Flusher();
  ~Flusher();
  Flusher(const Flusher&) = delete;
  Flusher& operator=(const Flusher&) = delete;
  // Flushes `region` every region->flush_interval() from now (none: ignored).
  void add(const std::string& topic, std::shared_ptr<detail::Region> region);
  void remove(const detail::Region* region);

 private:
  using Clock = std::chrono::steady_clock;
  struct Entry {
    std::string topic;
    std::shared_ptr<detail::Region> region;
    Clock::time_point due;
    std::chrono::milliseconds every;
    std::uint64_t failures;
    std::uint64_t mark;  // change_mark at the last flush (storage.cpp)
  };
  void run();
  std::mutex mutex_;
  std::condition_variable wake_;
  std::map<const detail::Region*, Entry> topics_;
  bool stop_ = false;
  std::thread thread_;  // last: started once the rest is built
};

// Who may do something with a topic. Root and the daemon's own uid always may.
struct Principals {
  std::vector<uid_t> uids;
  std::vector<gid_t> gids;
  bool anyone = false;
};

struct TopicRule {
  std::string pattern;  // exact name, or a prefix ending in '*', or "*"
  Principals create, publish, subscribe;
};

struct Config {
  std::string bus = "default";
  std::string socket_path;  // empty: the default for the bus
  // Where file topics live (docs/durability.md). Empty: $SHMBUS_DATA_DIR,
  // else detail::default_data_dir(bus). Created 0700 when the first file
  // topic is; it must be this user's with mode 0700.
  std::string data_dir;
  TopicOptions defaults;  // for create requests that leave a field 0
  std::vector<TopicRule> rules;
  std::string log_level = "info";
  int housekeeping_ms = 250;  // dead-process and stuck-sequence scan period
  int stuck_ms = 1000;        // a claimed, unpublished sequence this old is repaired
  // Connections one uid may hold at once: a flood of connections (each with a
  // half-sent frame of up to 64 KiB buffered) from one user cannot take the
  // daemon's descriptors and memory from the others.
  std::uint32_t max_connections_per_uid = 256;
  // The shmbusd binary to run as the keeper of this daemon's regions
  // (keeper.hpp), so that topics outlive a daemon crash; main sets it to
  // itself. Empty (a daemon in a test's thread): no keeper, the topics die
  // with the daemon.
  std::string keeper_program;
};

// Reply topics (Bus::request, src/os.hpp): only their pid may create one
// (and it may create and subscribe to it whatever the rules say; at most
// kMaxReplyTopics each, with the geometry Bus::request gives them);
// shmbusd removes them once the pid is gone.
using detail::reply_topic_pid;
inline constexpr std::size_t kMaxReplyTopics = 16;

// Reads a TOML configuration; throws shmbus::Error(InvalidArgument) saying
// which key is wrong.
Config load_config(const std::string& path);
Config parse_config(const std::string& toml_text, const std::string& origin);

class Daemon {
 public:
  explicit Daemon(Config config);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Binds the socket (refusing when another daemon serves it, removing a
  // stale one), adopts existing regions. Throws shmbus::Error.
  void start();
  // Serves until stop(). start() must have succeeded.
  void run();
  // Async-signal-safe and thread-safe.
  void stop() noexcept;
  [[nodiscard]] const std::string& socket_path() const noexcept { return socket_path_; }
  // Housekeeping rounds completed (dead seats freed, stuck sequences repaired)
  // since start: lets a caller wait for the daemon to have looked, not guess.
  [[nodiscard]] std::uint64_t housekeeping_rounds() const noexcept {
    // Acquire: pairs with the release increment after each round, so the
    // round's repairs in shared memory are visible to whoever sees the count.
    return housekeeping_rounds_.load(std::memory_order_acquire);
  }

 private:
  struct Seat {
    std::string topic;
    std::shared_ptr<detail::Region> region;  // where it was attached (outlives a delete)
    bool producer;
    std::uint32_t a, b;  // producer seat, or group + member
  };
  struct Client {
    int fd;
    pid_t pid;
    uid_t uid;
    gid_t gid;
    proto::FrameBuffer inbox;  // the same splitter the fuzz target runs
    std::vector<Seat> seats;
    bool broken = false;  // a reply could not be sent: drop after this request
    // Component reports (Report requests), one per name, in the order first
    // made; they go with the connection (drop).
    std::vector<ComponentReport> reports{};
  };
  std::map<uid_t, std::uint32_t> connections_of_;  // live clients per uid
  struct TopicEntry {
    std::shared_ptr<detail::Region> region;
    // Stuck-sequence detector: per group, the cursor last seen waiting and since when.
    std::map<std::uint32_t, std::pair<std::uint64_t, std::int64_t>> stuck{};
    // Quarantined: its file no longer has the size mapped (a client truncated
    // it) or an access faulted. Never touched again; only deleting it helps.
    bool damaged = false;
    std::string damage{};  // what was found, for the log and the Corrupt replies
    // Housekeeping passes that failed in a row (housekeeping's rate-limited warning).
    std::int64_t failing_since_ms = 0, last_warned_ms = 0;
    std::uint64_t failed_passes = 0;
    // A topic with delay_slots: its mover (daemon/mover.cpp). Stopped on
    // quarantine and delete.
    std::unique_ptr<MoverThread> mover{};
    // File topics: messages found torn (checksum mismatch) at adoption.
    std::uint64_t torn = 0;
  };
  // A reply frame, and the region descriptors that go with it (none, or a
  // topic's data and control segments).
  struct Outgoing {
    std::vector<std::byte> frame;
    detail::Descriptors fds{};  // an initializer: replies without descriptors leave it out
  };
  // The descriptors of `t` for client c: the data segment read-only unless c
  // may publish to `topic` (the kernel then refuses any write of its own).
  detail::Descriptors region_fds(const Client& c, const std::string& topic,
                                 const detail::Region& r) const;
  enum class Right { Create, Publish, Subscribe };

  // daemon.cpp: the event loop and client bookkeeping.
  [[nodiscard]] bool watch(int fd, std::uint32_t events);
  void accept_clients();
  void serve(Client& c);
  void drop(int fd);
  void send(Client& c, const Outgoing& out);

  // requests.cpp: one handler per request; a refusal is thrown as shmbus::Error.
  void handle(Client& c, std::span<const std::byte> body);
  Outgoing on(Client& c, std::uint32_t id, const proto::Hello& m);
  Outgoing on(Client& c, std::uint32_t id, const proto::CreateTopic& m);
  Outgoing on(Client& c, std::uint32_t id, const proto::OpenTopic& m);
  Outgoing on(Client& c, std::uint32_t id, const proto::DeleteTopic& m);
  Outgoing on(Client& c, std::uint32_t id, const proto::ListTopics& m);
  Outgoing on(Client& c, std::uint32_t id, const proto::Describe& m);
  Outgoing on(Client& c, std::uint32_t id, const proto::AttachProducer& m);
  Outgoing on(Client& c, std::uint32_t id, const proto::AttachMember& m);
  Outgoing on(Client& c, std::uint32_t id, const proto::Shutdown& m);
  Outgoing on(Client& c, std::uint32_t id, const proto::DeleteGroup& m);
  Outgoing on(Client& c, std::uint32_t id, const proto::ResetGroup& m);
  Outgoing on(Client& c, std::uint32_t id, const proto::Report& m);
  Outgoing on(Client& c, std::uint32_t id, const proto::ListReports& m);
  Outgoing attach(Client& c, std::uint32_t id, const std::string& name, bool producer,
                  std::uint32_t a, std::uint32_t b);
  TopicEntry& find(const std::string& name);
  // The Corrupt error for a quarantined topic, saying how to get rid of it.
  [[nodiscard]] Error damaged_error(const std::string& name, const TopicEntry& t) const;
  // t's status, or for a quarantined topic its name and options only
  // (generation 0, which no intact region has).
  [[nodiscard]] TopicStatus status_or_damaged(const std::string& name, TopicEntry& t);
  [[nodiscard]] bool allowed(const Client& c, const std::string& topic, Right what) const;
  // Whether the rules let a uid other than ours and root publish to or
  // subscribe to `topic`: it can then write the topic's control segment, so
  // producers must not trust the gate scan's proof (TopicHeader::shared_control).
  [[nodiscard]] bool shared_with_others(const std::string& topic) const;
  // Records shared_with_others in the region's header (create, adoption).
  void mark_sharing(const std::string& topic, detail::Region& r) const;
  void require(const Client& c, const std::string& topic, std::initializer_list<Right> any_of,
               const std::string& what) const;

  // reaper.cpp: what dead processes (and a dead daemon) leave behind.
  void adopt_regions();
  // The regions a previous daemon left with the keeper; returns their names.
  void adopt_kept(std::vector<std::pair<int, int>> kept);
  // Serves a region found at start (kept or named) as topic `name`; `how`
  // says which for the log.
  // `previous_boot`: a file topic last served before a reboot (its seats
  // are all freed, storage.cpp).
  void serve_adopted(const std::string& name, std::shared_ptr<detail::Region> region,
                     const char* how, bool previous_boot = false);
  // storage.cpp: file topics. The data directory (config, $SHMBUS_DATA_DIR
  // or the default), opened (and created) on first use; Error when it is
  // not safe to use.
  [[nodiscard]] std::string data_dir_path() const;
  int data_dir_fd();
  // The file topics in the data directory, served again (at start).
  void adopt_files();
  // A file topic from a previous boot: every seat freed (no process of that
  // boot runs now, whatever the pids say).
  void forget_boot(const std::string& name, TopicEntry& t);
  // What a dead mover left, before its seat is freed (start_mover);
  // `previous_boot`: every pid in the schedule is dead.
  void recover_schedule(const std::string& name, TopicEntry& t, bool previous_boot = false);
  // Every topic's two descriptors, for a new keeper.
  [[nodiscard]] std::vector<std::pair<int, int>> kept_fds() const;
  // Starts a keeper when the one we had is gone, and deposits every topic.
  void replace_keeper();
  // Takes the keeper's descriptor out of epoll, if it is still registered.
  void unwatch_keeper();
  void housekeeping();
  void free_seats_of(const Client& c);
  void free_dead_seats(TopicEntry& t);
  // mover.cpp: delayed messages. The schedule entries a dead producer left
  // half-written are freed, and the mover looks at every entry (its Ready
  // entry may lack its bit); `t` null: the topic was deleted since.
  void free_dead_writer(TopicEntry* t, detail::Region& r, std::uint32_t pid);
  // What a dead mover left (before its seat is freed), then a mover of ours.
  void start_mover(const std::string& name, TopicEntry& t, bool recover);
  void repair_stuck(const std::string& name, TopicEntry& t);
  // Deletes reply topics whose requester is gone (reply_topic_pid).
  void remove_orphan_replies();
  // What a delete does once it is allowed: waits end, the name goes, the
  // keeper lets go. Returns whether the region was adopted (and erases it).
  void remove_topic(std::map<std::string, TopicEntry>::iterator it);
  // False too when the seat's region is damaged: such a seat is forgotten.
  [[nodiscard]] bool seat_held(const Seat& s, pid_t pid);

  // Issue 14: the daemon never dies of a region it maps. touch() runs f, an
  // access to t's region, only if the region is intact, and under guarded();
  // false (and the topic quarantined) when it is not, before or during f.
  template <class F>
  bool touch(const std::string& name, TopicEntry& t, F&& f);
  // The same for the region a seat was attached in, which may be the region
  // of a deleted (or deleted and re-created) topic.
  template <class F>
  bool touch(const Seat& s, F&& f);
  void quarantine(const std::string& name, TopicEntry& t, std::string why);
  void take_bus_lock();

  Config config_;
  std::string socket_path_;
  int listen_fd_ = -1;
  int lock_fd_ = -1;      // flock of "<socket>.lock": one daemon per socket
  int bus_lock_fd_ = -1;  // flock of bus_lock_path(): one daemon per bus
  bool owns_bus_lock_ = false;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;  // eventfd: stop()
  int timer_fd_ = -1;
  int spare_fd_ = -1;  // given up to refuse a client when descriptors run out
  KeeperLink keeper_;
  // keeper_.fd() as registered with epoll; stale (and not ours to touch)
  // once keeper_.fd() differs: a failed deposit closes the channel.
  int watched_keeper_fd_ = -1;                            // keeper_.fd() as registered with epoll
  std::chrono::steady_clock::time_point keeper_retry_{};  // the next attempt without one
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint64_t> housekeeping_rounds_{0};
  std::map<int, Client> clients_;
  // The reports all clients hold together: how many (at most kMaxReports)
  // and their encoded size (at most kMaxReportBytes).
  std::size_t reports_held_ = 0, report_bytes_ = 0;
  std::map<std::string, TopicEntry> topics_;
  std::string data_dir_;              // data_dir_path(), resolved at start
  int data_fd_ = -1;                  // data_dir_fd(), once opened
  int data_lock_fd_ = -1;             // flock of <data dir>/@lock: one daemon per directory
  std::unique_ptr<Flusher> flusher_;  // once a topic has a flush interval
  // The flusher, started on first use (storage.cpp).
  Flusher& flusher();
};

template <class F>
bool Daemon::touch(const std::string& name, TopicEntry& t, F&& f) {
  if (t.damaged) return false;
  std::string why;
  if (!region_intact(*t.region, why)) {
    quarantine(name, t, std::move(why));
    return false;
  }
  if (guarded(std::forward<F>(f))) return true;
  // A SIGBUS in f: the file shrank after the check (or the fault has another
  // cause the size does not show). If f held the region's control lock, it
  // stays held: nobody uses a quarantined region again.
  quarantine(name, t, region_intact(*t.region, why) ? "faulted (SIGBUS) at its size" : why);
  return false;
}

template <class F>
bool Daemon::touch(const Seat& s, F&& f) {
  if (auto it = topics_.find(s.topic); it != topics_.end() && it->second.region == s.region)
    return touch(s.topic, it->second, std::forward<F>(f));
  // The topic was deleted since the seat was attached: only the seat maps it.
  return region_intact(*s.region) && guarded(std::forward<F>(f));
}

}  // namespace shmbus::daemon
