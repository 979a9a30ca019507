// A mapped topic region (internal to the library, the daemon and the tests):
// the mappings of its two segments (data and control, layout.hpp), the accessors that turn the
// header's validated offsets into pointers, seat release and the control lock. Created or opened by
// src/region.cpp, which checks every field read from the file before any
// accessor is used. The data path works on the region's Ring (detail/ring.hpp).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <sys/stat.h>

#include "shmbus/detail/layout.hpp"
#include "shmbus/detail/ring.hpp"
#include "shmbus/options.hpp"

namespace shmbus {
struct TopicStatus;
}  // namespace shmbus

namespace shmbus::detail {

class Region;
// A region's options and its status report (src/topic.cpp): what
// Topic::options/status return and what shmbusd reports.
[[nodiscard]] TopicOptions options_of(const Region& r);
[[nodiscard]] TopicStatus status_of(const std::string& name, const Region& r);
// Region::flush, or Error(SystemError) naming the topic (Topic and Publisher).
void flush_region(Region& r, const std::string& topic);

// Gives a seat taken under the control lock a session none of its earlier
// holders had (ProducerStatus::session tells a re-used seat apart): the
// monotonic clock in ns, and always above the seat's previous session.
void start_session(std::atomic<std::uint64_t>& session) noexcept;

// Layout arithmetic shared by create (to size the region) and open (to check it).
// size is the data segment's; groups_offset and control_size the control segment's.
// Offsets are within one partition's block; size and control_size are of the
// whole segments (partitions blocks each).
struct Layout {
  std::uint64_t stride, group_stride, producers_offset, groups_offset, slots_offset, size,
      control_size, partition_size, partition_control_size;
  // The schedule area (delay_slots > 0; else all 0): its offset in the data
  // segment, bytes per entry, and its bitmap's and entries' offsets in it.
  std::uint64_t schedule_offset, delay_stride, bitmap_offset, entries_offset;
  // The ack area (layout.hpp) in the control segment, after the last block.
  std::uint64_t acks_offset;
};

// A topic's schedule area as mapped (src/schedule.cpp works on it); all null
// and 0 when the topic has no delay_slots.
struct Schedule {
  ScheduleHeader* header = nullptr;
  std::atomic<std::uint64_t>* bitmap = nullptr;  // (capacity + 63) / 64 words
  std::byte* entries = nullptr;
  std::uint32_t capacity = 0;
  std::uint64_t stride = 0;
  [[nodiscard]] ScheduleEntry& entry(std::uint32_t i) const noexcept {
    return *reinterpret_cast<ScheduleEntry*>(entries + i * stride);
  }
  // The message an entry holds, laid out as a slot.
  [[nodiscard]] SlotHeader& message(std::uint32_t i) const noexcept {
    return *reinterpret_cast<SlotHeader*>(entries + i * stride + kEntryHeaderSize);
  }
};
// The name of a region's control segment: "<shm_name>@control" ('@' is not
// allowed in topic names, so it is no topic's data segment).
inline constexpr std::string_view kControlSuffix = "@control";
[[nodiscard]] std::string control_name(const std::string& shm_name);
[[nodiscard]] Layout compute_layout(const TopicOptions& o) noexcept;

class Region {
 public:
  // Creates the named region (fails with AlreadyExists) or opens and validates
  // it: the files /dev/shm/<shm_name> (data) and /dev/shm/<shm_name>@control.
  // open maps the data segment read-only when the caller may only read it.
  static std::shared_ptr<Region> create(const std::string& shm_name, std::string_view topic,
                                        const TopicOptions& options);
  static std::shared_ptr<Region> open(const std::string& shm_name);
  // Creates the region as two sealed memfds (shmbusd's topics): no name in
  // /dev/shm, mode 0600, and F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL, so no
  // holder of a descriptor, however writable, can resize either segment (a
  // shrunk segment would SIGBUS every process that maps it). The memfds are
  // named shm_name and control_name(shm_name) for /proc and the messages.
  static std::shared_ptr<Region> create_sealed(const std::string& shm_name, std::string_view topic,
                                               const TopicOptions& options);
  // A file topic (Storage::File): the files `file` and `file`@control in the
  // data directory `dir_fd` (os.hpp's open_data_dir; `dir` its path, for
  // messages and where()), created exclusively, never through a link, mode
  // 0600, their blocks allocated up front (a full disk is an error here,
  // never a SIGBUS later). Not sealed: a writable descriptor of a regular
  // file can truncate it, so shmbusd serves them to its own uid and root.
  static std::shared_ptr<Region> create_file(int dir_fd, const std::string& dir,
                                             const std::string& file, std::string_view topic,
                                             const TopicOptions& options);
  // Opens and validates a file topic's two files (shmbusd, at start): each a
  // regular file of this user, mode 0600, never through a link.
  static std::shared_ptr<Region> open_file(int dir_fd, const std::string& dir,
                                           const std::string& file);
  // Unlinks a file topic's two files; mappings stay valid.
  static bool remove_file(int dir_fd, const std::string& file);
  // Writes a file topic's mapped segments to disk (msync MS_SYNC) and
  // records when in ControlHeader::flushed_ns: returns once everything
  // published before the call is on disk. 0, or the errno of msync; a
  // memory topic has nothing to write (0).
  [[nodiscard]] int flush() noexcept;
  [[nodiscard]] Storage storage() const noexcept { return options_.storage; }
  [[nodiscard]] std::chrono::milliseconds flush_interval() const noexcept {
    return options_.flush_interval;
  }
  // A file topic opened or created by its files (shmbusd): their directory;
  // else empty (a client maps a file topic from descriptors).
  [[nodiscard]] const std::string& dir() const noexcept { return dir_; }
  // Maps and validates a region passed as descriptors and takes ownership of
  // them (closed with the region, or at once if it is refused): shmbusd
  // taking its regions back from its keeper. The name is the memfd's.
  static std::shared_ptr<Region> adopt(int data_fd, int control_fd);
  // Maps and validates a region passed as descriptors (from shmbusd over its
  // socket); the caller keeps ownership of both and may close them afterwards.
  // A data descriptor opened read-only gives a read_only() region.
  static std::shared_ptr<Region> from_fd(int data_fd, int control_fd, const std::string& shm_name);
  // The descriptors of a region opened by name (to pass to a client), or -1.
  [[nodiscard]] int data_fd() const noexcept;
  [[nodiscard]] int control_fd() const noexcept;
  // A new read-only descriptor of the data segment (the caller closes it):
  // what shmbusd hands a client that may subscribe but not publish.
  [[nodiscard]] int reopen_data_read_only() const;
  // The data segment is mapped read-only: this process may subscribe only
  // (Publisher refuses with PermissionDenied; the kernel refuses any write).
  [[nodiscard]] bool read_only() const noexcept { return read_only_; }
  // Both segments are sealed against shrinking and growing (create_sealed):
  // nothing that holds them can make them fault.
  [[nodiscard]] bool sealed() const noexcept { return sealed_; }
  // Where the region lives, for messages: "/dev/shm/<name>", "memfd:<name>"
  // or a file topic's "<data dir>/<name>".
  [[nodiscard]] std::string where() const;
  // Keeps `owner` alive as long as this mapping (a client's daemon connection).
  void set_owner(std::shared_ptr<void> owner) { owner_ = std::move(owner); }
  // Unlinks the region's name; processes that mapped it keep their mapping.
  static bool remove(const std::string& shm_name);

  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;
  ~Region();

  // Partition p's ring and headers (p < partitions()); block 0's speak for
  // the topic (layout.hpp).
  [[nodiscard]] const Ring& ring(std::uint32_t p = 0) const noexcept { return rings_[p]; }
  [[nodiscard]] TopicHeader& header(std::uint32_t p = 0) const noexcept {
    return *rings_[p].header;
  }
  [[nodiscard]] ControlHeader& control(std::uint32_t p = 0) const noexcept {
    return *rings_[p].control;
  }
  // The rings of the topic: its partitions, or its priority lanes.
  [[nodiscard]] std::uint32_t partitions() const noexcept {
    return static_cast<std::uint32_t>(rings_.size());
  }
  // True when the rings are priority lanes (ring p holds priority p).
  [[nodiscard]] bool lanes() const noexcept { return options_.priorities != 0; }
  [[nodiscard]] std::uint64_t slot_count() const noexcept { return options_.slot_count; }
  [[nodiscard]] std::uint32_t slot_size() const noexcept { return options_.slot_size; }
  [[nodiscard]] Policy policy() const noexcept { return options_.policy; }
  [[nodiscard]] bool single_producer() const noexcept { return single_producer_; }
  [[nodiscard]] std::uint32_t max_producers() const noexcept { return max_producers_; }
  [[nodiscard]] std::uint32_t max_groups() const noexcept { return options_.max_groups; }
  [[nodiscard]] std::uint32_t max_members() const noexcept { return options_.max_members; }
  [[nodiscard]] const std::string& shm_name() const noexcept { return shm_name_; }
  // The topic's name as stored in the header (bounded: the field may lack a NUL).
  [[nodiscard]] std::string topic_name() const {
    const TopicHeader& h = header();
    return std::string(h.name, ::strnlen(h.name, sizeof h.name));
  }

  // The topic's schedule area (Schedule::header null: delay_slots 0).
  [[nodiscard]] const Schedule& schedule() const noexcept { return schedule_; }

  [[nodiscard]] SlotHeader& slot(std::uint64_t seq, std::uint32_t p = 0) const noexcept {
    return rings_[p].slot(seq);
  }
  [[nodiscard]] ProducerSeat& producer(std::uint32_t i, std::uint32_t p = 0) const noexcept {
    return producers_[p][i];
  }
  [[nodiscard]] GroupEntry& group(std::uint32_t g, std::uint32_t p = 0) const noexcept {
    return rings_[p].group(g);
  }
  [[nodiscard]] MemberSeat& member(std::uint32_t g, std::uint32_t m,
                                   std::uint32_t p = 0) const noexcept {
    return rings_[p].member(g, m);
  }
  // Member seat m of group g's kAckRecords ack records (at-least-once groups).
  [[nodiscard]] AckRecord* acks(std::uint32_t g, std::uint32_t m) const noexcept {
    return acks_ + (std::size_t{g} * options_.max_members + m) * kAckRecords;
  }
  // Group g is at-least-once (block 0's flags).
  [[nodiscard]] bool at_least_once(std::uint32_t g) const noexcept {
    // Relaxed: flags are written before the group is published (release of
    // its state) and never change while it lives.
    return (group(g).flags.load(std::memory_order_relaxed) & kGroupAtLeastOnce) != 0;
  }

  // Marks the topic deleted (shmbusd, before it unlinks the name) and wakes
  // every sleeper: publishers get Status::TopicDeleted, subscribers once they
  // have drained what was published.
  void mark_deleted() noexcept;

  // Group administration (src/region_groups.cpp), for shmbusd: a named group
  // without live members is deleted, or its position set (Earliest, Latest,
  // or an offset at most the tail; returns it). Error(InUse) while it has
  // members, NotFound when there is no such named group.
  void delete_group(const std::string& name);
  std::uint64_t reset_group(const std::string& name, StartPosition to);

  // ---- freeing seats: by their owner on close, by shmbusd when the owner died --
  // Each does nothing unless the seat is still held by `pid` (checked under the
  // control lock: it may have been freed, and reused, meanwhile), so a seat is
  // never freed twice.
  // Frees a producer seat; sequences it claimed and never published are marked
  // abandoned so consumers skip them.
  void free_producer(std::uint32_t seat, std::uint32_t pid);
  // Frees a member seat: its hazard no longer gates; wakes blocked producers.
  // A member of an at-least-once group that still has ack records becomes
  // an Orphan instead: its hazards keep gating and a live member adopts its
  // records (Subscriber); see docs/acknowledgements.md.
  void free_member(std::uint32_t group, std::uint32_t member, std::uint32_t pid);
  // Unacknowledged samples left by dead members of group g (orphan records).
  [[nodiscard]] std::uint64_t orphan_records(std::uint32_t g) const noexcept;
  // Marks claimed-but-unpublished sequence s of partition p abandoned. False
  // if it was published (or abandoned) meanwhile, or s's slot was never
  // claimed for s.
  bool abandon_unpublished(std::uint64_t s, std::uint32_t p = 0) noexcept;

  // A partitioned group's assignment (src/region_groups.cpp), control lock
  // held: gives every partition a target among the group's live members,
  // sticky (a partition keeps its target while that member lives and has no
  // more than its share), clears the ownership of members that are gone, and
  // bumps the group's assignment word so that every member looks.
  void assign_partitions_locked(std::uint32_t group) noexcept;
  // The pid of the member that owns partition p of group g now, or 0.
  [[nodiscard]] std::uint32_t owner_pid(std::uint32_t g, std::uint32_t p) const noexcept;

  // Control-plane lock over seat and group allocation (never the data path).
  // A holder that died is detected by pid and the lock is taken over. Throws
  // SystemError once it waited `patience` (set_lock_patience; 10 s unless set).
  void lock_control() const;
  void unlock_control() const noexcept;
  // One attempt, never waiting (and never taking over a dead holder's lock:
  // lock_control does that): true when the lock is now ours.
  [[nodiscard]] bool try_lock_control() const noexcept;
  // The lock is in the control segment, which every subscriber may write: a
  // hostile one can mark it held by a live process for ever. shmbusd, which
  // serves every topic from one thread, waits only briefly and retries later.
  void set_lock_patience(std::chrono::milliseconds patience) noexcept { lock_patience_ = patience; }

 private:
  // The index of the named group `name` (control lock held), refused with InUse while it
  // has members; `doing` names the operation in the messages.
  std::uint32_t named_group_locked(const std::string& name, const char* doing);
  struct Segment;
  Region();
  void init_accessors(const TopicOptions& validated, const Layout& layout);
  static void map(Segment& seg, std::uint64_t size, bool writable, const std::string& where);
  // create, create_sealed and create_file: makes the two segments, then
  // initialises them.
  enum class Place : std::uint8_t { Named, Sealed, File };
  static std::shared_ptr<Region> create_as(const std::string& shm_name, std::string_view topic,
                                           const TopicOptions& options, Place place,
                                           int dir_fd = -1, const std::string& dir = {});
  // from_fd and adopt: fstat, map and validate the two descriptors; adopt
  // refuses (before mapping) a pair without the seals.
  void attach_fds(bool must_be_sealed = false);
  Layout attach_data(const std::string& where, const struct stat& data);
  void attach_control(const std::string& where, const struct stat& control, const Layout& l);

  std::string shm_name_;
  std::string dir_;  // a file topic's data directory; else empty
  std::unique_ptr<Segment> data_;
  std::unique_ptr<Segment> control_seg_;
  std::shared_ptr<void> owner_;
  std::vector<Ring> rings_;               // one per partition
  std::vector<ProducerSeat*> producers_;  // each partition's seat table
  Schedule schedule_;
  AckRecord* acks_ = nullptr;
  std::uint32_t max_producers_ = 0;
  bool single_producer_ = false;
  bool read_only_ = false;
  bool sealed_ = false;
  TopicOptions options_;  // the validated copies of the header's fields (attach_data)
  std::uint64_t generation_ = 0;
  std::chrono::milliseconds lock_patience_{10'000};
};

class ControlLock {
 public:
  explicit ControlLock(const Region& r) : r_(r) { r_.lock_control(); }
  ~ControlLock() { r_.unlock_control(); }
  ControlLock(const ControlLock&) = delete;
  ControlLock& operator=(const ControlLock&) = delete;

 private:
  const Region& r_;
};

}  // namespace shmbus::detail
