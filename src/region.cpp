#include "region.hpp"

#include "os.hpp"
#include "schedule.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <random>
#include <thread>

#include "shmbus/detail/wait.hpp"
#include "shmbus/error.hpp"

namespace shmbus::detail {

void start_session(std::atomic<std::uint64_t>& session) noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);  // cannot fail for CLOCK_MONOTONIC
  const auto now = static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u +
                   static_cast<std::uint64_t>(ts.tv_nsec);
  // Relaxed: written and read under the control lock by takers; readers of
  // the seat table see it through the release store of the seat's state.
  const std::uint64_t before = session.load(std::memory_order_relaxed);
  session.store(std::max(now, before + 1), std::memory_order_relaxed);
}

// One mapped segment of the region: its descriptor (when opened or created
// by name; -1 for a region mapped from descriptors another process sent) and
// its mapping.
struct Region::Segment {
  int fd = -1;         // owned: opened or created by name
  int fd_to_map = -1;  // fd, or a descriptor the caller of from_fd keeps
  void* base = nullptr;
  std::size_t size = 0;
  Segment() = default;
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
  ~Segment() {
    if (base != nullptr) ::munmap(base, size);
    if (fd >= 0) ::close(fd);
  }
};

namespace {

constexpr std::uint64_t round_up(std::uint64_t v, std::uint64_t a) {
  return (v + a - 1) / a * a;
}

constexpr std::uint32_t kMaxSlotCount = 1u << 24;
constexpr std::uint32_t kMaxSlotSize = 64u << 20;
constexpr std::uint32_t kMaxSeats = 1024;
constexpr std::uint64_t kMaxRegionSize = 64ULL << 30;
// What create_sealed seals: no resizing, and no change to the seals.
constexpr int kRegionSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;

ErrorCode code_of_errno(int err) {
  switch (err) {
    case ENOENT:
      return ErrorCode::NotFound;
    case EEXIST:
      return ErrorCode::AlreadyExists;
    case EACCES:
    case EPERM:
      return ErrorCode::PermissionDenied;
    case ENOSPC:
    case EFBIG:
    case EDQUOT:
    case ENOMEM:
    case EMFILE:
    case ENFILE:
      return ErrorCode::ResourceExhausted;
    default:
      return ErrorCode::SystemError;
  }
}

Error os_error(const std::string& what, int err) {
  return Error(code_of_errno(err), what + ": " + errno_text(err));
}

std::string validate_options(const TopicOptions& o) {
  if (o.slot_count < 2 || o.slot_count > kMaxSlotCount || (o.slot_count & (o.slot_count - 1)) != 0)
    return "slot_count " + std::to_string(o.slot_count) +
           " is not a power of two between 2 and 16777216; pick e.g. 1024";
  if (o.slot_size == 0 || o.slot_size > kMaxSlotSize)
    return "slot_size " + std::to_string(o.slot_size) + " must be between 1 and 67108864 bytes";
  if (o.policy != Policy::Block && o.policy != Policy::Reject && o.policy != Policy::Overwrite)
    return "policy must be block, reject or overwrite";
  if (o.max_producers == 0 || o.max_producers > kMaxSeats || o.max_groups == 0 ||
      o.max_groups > kMaxSeats || o.max_members == 0 || o.max_members > kMaxSeats)
    return "max_producers, max_groups and max_members must be between 1 and 1024";
  if ((o.mode & ~0777u) != 0) return "mode must be permission bits only (e.g. 0600)";
  if (o.partitions == 0 || o.partitions > kMaxPartitions)
    return "partitions " + std::to_string(o.partitions) + " must be between 1 and " +
           std::to_string(kMaxPartitions);
  if (o.priorities == 1 || o.priorities > kMaxPriorities)
    return "priorities " + std::to_string(o.priorities) + " must be 0 (none) or between 2 and " +
           std::to_string(kMaxPriorities);
  if (o.priorities != 0 && o.partitions != 1)
    return "a topic has either partitions or priority lanes, not both (partitions " +
           std::to_string(o.partitions) + ", priorities " + std::to_string(o.priorities) + ")";
  if (o.delay_slots > kMaxDelaySlots)
    return "delay_slots " + std::to_string(o.delay_slots) + " must be at most " +
           std::to_string(kMaxDelaySlots);
  if (o.delay_slots != 0 && o.single_producer)
    return "a single-producer topic cannot have delay_slots: shmbusd appends due messages as a "
           "second producer; create it without single_producer";
  if (o.delay_slots != 0 && o.slot_size < 8)
    return "delay_slots needs a slot_size of at least 8 bytes (a delayed message carries its "
           "due time in the slot)";
  if (o.storage != Storage::Memory && o.storage != Storage::File)
    return "storage must be memory or file";
  if (o.flush_interval.count() < 0 || o.flush_interval > kMaxFlushInterval)
    return "flush interval " + std::to_string(o.flush_interval.count()) +
           " ms must be between 0 (none) and 86400000 (a day)";
  if (o.flush_interval.count() != 0 && o.storage != Storage::File)
    return "a flush interval is for file topics; create the topic with storage file";
  const Layout l = compute_layout(o);
  if (l.size + l.control_size > kMaxRegionSize)
    return "slot_count x slot_size x rings makes a region of " +
           std::to_string((l.size + l.control_size) >> 20) +
           " MiB, over the 64 GiB limit; use fewer or smaller slots, or fewer partitions";
  return {};
}

// Gives a new segment its mode (fchmod: the umask neither widens nor narrows
// it) and its size, every page or block reserved now: tmpfs and file systems
// allocate lazily, and touching a page that cannot be backed later would
// kill the process with SIGBUS. False with `failed` (what could not be done)
// and errno set.
bool prepare_segment(int fd, std::uint32_t mode, std::uint64_t size, const char* reserving,
                     std::string& failed) {
  int rc = 0;
  if (::fchmod(fd, static_cast<mode_t>(mode)) != 0)
    failed = "set the mode of";
  else if (::ftruncate(fd, static_cast<off_t>(size)) != 0)
    failed = "size";
  else if ((rc = ::posix_fallocate(fd, 0, static_cast<off_t>(size))) != 0)
    failed = reserving;
  else
    return true;
  if (rc != 0) errno = rc;
  return false;
}

// Closes a segment that could not be prepared, keeping its errno.
int give_up(int fd) {
  const int err = errno;
  ::close(fd);
  errno = err;
  return -1;
}

// Creates a segment file exclusively with exactly `mode`, sized and
// reserved. -1 and errno on failure.
int create_segment(const std::string& name, std::uint64_t size, std::uint32_t mode,
                   std::string& failed) {
  // shm_open adds O_NOFOLLOW | O_CLOEXEC.
  const int fd = ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL, static_cast<mode_t>(mode));
  if (fd < 0) {
    failed = "create";
    return -1;
  }
  failed.clear();
  if (prepare_segment(fd, mode, size, "reserve memory for", failed)) return fd;
  const int err = errno;
  ::shm_unlink(name.c_str());
  errno = err;
  return give_up(fd);
}

// Creates a sealed memfd segment: mode 0600 (a memfd starts 0777, and a
// holder of another uid could otherwise re-open it read-write through
// /proc/<pid>/fd), sized, reserved, then sealed so that no descriptor of it
// can shrink or grow it, nor change the seals. -1 and errno on failure.
int create_sealed_segment(const std::string& name, std::uint64_t size, std::string& failed) {
  const int fd = ::memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) {
    failed = "create";
    return -1;
  }
  failed.clear();
  if (!prepare_segment(fd, 0600, size, "reserve", failed)) return give_up(fd);
  if (::fcntl(fd, F_ADD_SEALS, kRegionSeals) == 0) return fd;
  failed = "seal";
  return give_up(fd);
}

// Creates a file topic's segment `name` in the data directory `dir_fd`:
// exclusively, never through a link, mode 0600, and with every block
// allocated now, so that a full file system is an error here and never a
// SIGBUS in a producer writing through the mapping later. -1 and errno on
// failure (the file removed).
int create_file_segment(int dir_fd, const std::string& name, std::uint64_t size,
                        std::string& failed) {
  const int fd =
      ::openat(dir_fd, name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    failed = "create";
    return -1;
  }
  failed.clear();
  if (prepare_segment(fd, 0600, size, "allocate the disk space of", failed)) return fd;
  const int err = errno;
  ::unlinkat(dir_fd, name.c_str(), 0);
  errno = err;
  return give_up(fd);
}

// Whether fd's file carries the seals that make it unresizable.
bool has_region_seals(int fd) {
  const int seals = ::fcntl(fd, F_GET_SEALS);  // EINVAL for a file that is no memfd
  return seals >= 0 && (seals & kRegionSeals) == kRegionSeals;
}

}  // namespace

std::string control_name(const std::string& shm_name) {
  return shm_name + std::string(kControlSuffix);
}

Layout compute_layout(const TopicOptions& o) noexcept {
  Layout l{};
  // A file topic's slot ends in its checksum (kSlotTrailer); a memory topic
  // pays nothing for it.
  l.stride = round_up(kSlotHeaderSize + std::uint64_t{o.slot_size} +
                          (o.storage == Storage::File ? kSlotTrailer : 0),
                      kCacheLine);
  l.group_stride =
      round_up(sizeof(GroupEntry) + std::uint64_t{o.max_members} * sizeof(MemberSeat), kHotAlign);
  l.producers_offset = round_up(sizeof(TopicHeader), kHotAlign);
  l.slots_offset = round_up(
      l.producers_offset + std::uint64_t{o.max_producers} * sizeof(ProducerSeat), kHotAlign);
  l.partition_size = round_up(l.slots_offset + std::uint64_t{o.slot_count} * l.stride, kHotAlign);
  l.groups_offset = round_up(sizeof(ControlHeader), kHotAlign);
  l.partition_control_size =
      round_up(l.groups_offset + std::uint64_t{o.max_groups} * l.group_stride, kHotAlign);
  const std::uint64_t rings = std::max<std::uint32_t>(o.rings(), 1);
  l.size = rings * l.partition_size;
  l.control_size = rings * l.partition_control_size;
  if (o.delay_slots != 0) {
    // The schedule area after the last block (layout.hpp).
    l.schedule_offset = l.size;
    l.delay_stride = kEntryHeaderSize + l.stride;
    l.bitmap_offset = sizeof(ScheduleHeader);
    l.entries_offset =
        l.bitmap_offset + round_up((std::uint64_t{o.delay_slots} + 63) / 64 * 8, kHotAlign);
    l.size += l.entries_offset + std::uint64_t{o.delay_slots} * l.delay_stride;
  }
  l.acks_offset = l.control_size;
  l.control_size += std::uint64_t{o.max_groups} * o.max_members * kAckRecords * sizeof(AckRecord);
  return l;
}

Region::Region() : data_(std::make_unique<Segment>()), control_seg_(std::make_unique<Segment>()) {}
Region::~Region() = default;

// Accessors come from the validated copies, never from a second read of the
// header: another process could change the header after it was checked.
void Region::init_accessors(const TopicOptions& o, const Layout& l) {
  auto* data = static_cast<std::byte*>(data_->base);
  auto* control = static_cast<std::byte*>(control_seg_->base);
  options_ = o;
  max_producers_ = o.max_producers;
  single_producer_ = o.single_producer;
  const std::uint32_t rings = o.rings();
  rings_.assign(rings, Ring{});
  producers_.assign(rings, nullptr);
  for (std::uint32_t p = 0; p < rings; ++p) {
    std::byte* d = data + p * l.partition_size;
    std::byte* c = control + p * l.partition_control_size;
    Ring& ring = rings_[p];
    ring.header = reinterpret_cast<TopicHeader*>(d);
    ring.control = reinterpret_cast<ControlHeader*>(c);
    ring.data_event = &reinterpret_cast<ControlHeader*>(control)->data_event;
    ring.count = o.slot_count;
    ring.swap = o.slot_count >= 4 ? 3 : 0;
    ring.slot_size = o.slot_size;
    ring.stride = l.stride;
    ring.groups = c + l.groups_offset;
    ring.group_stride = l.group_stride;
    ring.max_groups = o.max_groups;
    ring.max_members = o.max_members;
    ring.policy = o.policy;
    ring.checksummed = o.storage == Storage::File;
    ring.slots = d + l.slots_offset;
    producers_[p] = reinterpret_cast<ProducerSeat*>(d + l.producers_offset);
  }
  acks_ = reinterpret_cast<AckRecord*>(control + l.acks_offset);
  schedule_ = {};
  if (o.delay_slots != 0) {
    std::byte* area = data + l.schedule_offset;
    schedule_.header = reinterpret_cast<ScheduleHeader*>(area);
    schedule_.bitmap = reinterpret_cast<std::atomic<std::uint64_t>*>(area + l.bitmap_offset);
    schedule_.entries = area + l.entries_offset;
    schedule_.capacity = o.delay_slots;
    schedule_.stride = l.delay_stride;
  }
}

void Region::map(Segment& seg, std::uint64_t size, bool writable, const std::string& where) {
  const int prot = writable ? PROT_READ | PROT_WRITE : PROT_READ;
  void* p = ::mmap(nullptr, size, prot, MAP_SHARED, seg.fd_to_map, 0);
  if (p == MAP_FAILED) throw os_error("cannot map " + where, errno);
  seg.base = p;
  seg.size = size;
}

std::shared_ptr<Region> Region::create(const std::string& shm_name, std::string_view topic,
                                       const TopicOptions& o) {
  if (o.storage != Storage::Memory)
    throw Error(ErrorCode::InvalidArgument,
                "topic '" + std::string(topic) +
                    "': a topic without shmbusd lives in /dev/shm; file storage needs the "
                    "daemon (create it through a Bus)");
  return create_as(shm_name, topic, o, Place::Named);
}

std::shared_ptr<Region> Region::create_sealed(const std::string& shm_name, std::string_view topic,
                                              const TopicOptions& o) {
  return create_as(shm_name, topic, o, Place::Sealed);
}

std::shared_ptr<Region> Region::create_file(int dir_fd, const std::string& dir,
                                            const std::string& file, std::string_view topic,
                                            const TopicOptions& o) {
  return create_as(file, topic, o, Place::File, dir_fd, dir);
}

std::shared_ptr<Region> Region::create_as(const std::string& shm_name, std::string_view topic,
                                          const TopicOptions& o, Place place, int dir_fd,
                                          const std::string& dir) {
  if (auto why = validate_options(o); !why.empty())
    throw Error(ErrorCode::InvalidArgument, "topic '" + std::string(topic) + "': " + why);
  if ((place == Place::File) != (o.storage == Storage::File))
    throw Error(ErrorCode::InvalidArgument, "topic '" + std::string(topic) + "': storage " +
                                                std::string(to_string(o.storage)) +
                                                " does not match where it is created");
  const bool sealed = place == Place::Sealed;
  const Layout l = compute_layout(o);
  std::shared_ptr<Region> r(new Region());
  r->shm_name_ = shm_name;
  r->sealed_ = sealed;
  r->dir_ = place == Place::File ? dir : std::string();
  const std::string where = r->where();
  const std::string cname = control_name(shm_name);
  std::string failed;
  if (place == Place::File) {
    r->data_->fd = create_file_segment(dir_fd, shm_name, l.size, failed);
    if (r->data_->fd >= 0) {
      r->control_seg_->fd = create_file_segment(dir_fd, cname, l.control_size, failed);
      if (r->control_seg_->fd < 0) {
        const int err = errno;
        ::unlinkat(dir_fd, shm_name.c_str(), 0);
        errno = err;
      }
    }
    if (const int err = errno; r->data_->fd < 0 || r->control_seg_->fd < 0) {
      if (err == EEXIST && failed == "create")
        throw Error(ErrorCode::AlreadyExists,
                    where +
                        " or its @control file exists already (a topic's file left "
                        "behind, or planted); remove it (rm " +
                        where + "*) or choose another name");
      const bool full = err == ENOSPC || err == EFBIG || err == EDQUOT;
      throw Error(code_of_errno(err),
                  "cannot " + failed + " the files of topic '" + std::string(topic) + "' in " +
                      dir + " (" + std::to_string(l.size + l.control_size) +
                      " bytes): " + errno_text(err) +
                      (full ? "; free space there (a file topic allocates all of its region "
                              "when it is created, so a full disk never faults a producer), "
                              "or use fewer or smaller slots"
                            : ""));
    }
  } else if (sealed) {
    // No names to race for: shmbusd's topic table says what exists.
    r->data_->fd = create_sealed_segment(shm_name, l.size, failed);
    if (r->data_->fd >= 0)
      r->control_seg_->fd = create_sealed_segment(cname, l.control_size, failed);
    if (const int err = errno; r->data_->fd < 0 || r->control_seg_->fd < 0)
      throw Error(code_of_errno(err),
                  "cannot " + failed + " the memory of topic '" + std::string(topic) + "' (" +
                      std::to_string(l.size + l.control_size) + " bytes): " + errno_text(err) +
                      (err == ENOSPC || err == ENOMEM ? "; use fewer or smaller slots" : ""));
  } else {
    // The data segment is the topic's identity: whoever creates it exclusively
    // owns the name, and only then makes the control segment.
    r->data_->fd = create_segment(shm_name, l.size, o.mode, failed);
    if (const int err = errno; r->data_->fd < 0) {
      if (err == EEXIST && failed == "create")
        throw Error(ErrorCode::AlreadyExists, "topic '" + std::string(topic) +
                                                  "' already exists (" + where +
                                                  "); open it, or delete it first");
      throw Error(
          code_of_errno(err),
          "cannot " + failed + " " + where + " (" + std::to_string(l.size) +
              " bytes): " + errno_text(err) +
              (err == ENOSPC ? "; free space in /dev/shm or use fewer or smaller slots" : ""));
    }
    // A control file without its data file is what a crash between the two
    // unlinks of remove() leaves: ours to replace.
    if (::shm_unlink(cname.c_str()) != 0 && errno != ENOENT) {
      const int err = errno;
      ::shm_unlink(shm_name.c_str());
      throw os_error("cannot remove the stale /dev/shm/" + cname, err);
    }
    r->control_seg_->fd = create_segment(cname, l.control_size, o.mode, failed);
    if (const int err = errno; r->control_seg_->fd < 0) {
      ::shm_unlink(shm_name.c_str());
      throw Error(code_of_errno(err),
                  "cannot " + failed + " /dev/shm/" + cname + ": " + errno_text(err) +
                      (err == EEXIST ? " (another process planted it; remove it)" : ""));
    }
  }
  try {
    r->data_->fd_to_map = r->data_->fd;
    r->control_seg_->fd_to_map = r->control_seg_->fd;
    map(*r->data_, l.size, true, where);
    map(*r->control_seg_, l.control_size, true, where + std::string(kControlSuffix));
  } catch (...) {
    if (place == Place::Named) remove(shm_name);
    if (place == Place::File) remove_file(dir_fd, shm_name);
    throw;
  }
  // A file topic's names on disk too: a flush() after this must not leave
  // a power cut to lose the files themselves.
  if (place == Place::File) (void)::fsync(dir_fd);
  r->init_accessors(o, l);
  const std::uint64_t generation =
      std::random_device{}() | (std::uint64_t{std::random_device{}()} << 32);
  // New segments read as zeros. The atomics below are lock-free integers whose
  // zero bytes are a valid zero value; we construct them in place all the same.
  // Every block gets the same headers (block 0's speak for the topic).
  for (std::uint32_t p = 0; p < o.rings(); ++p) {
    auto* c = new (&r->control(p)) ControlHeader{};
    c->generation = generation;
    for (std::uint32_t g = 0; g < o.max_groups; ++g) {
      new (&r->group(g, p)) GroupEntry{};
      for (std::uint32_t mbr = 0; mbr < o.max_members; ++mbr) {
        new (&r->member(g, mbr, p)) MemberSeat{};
        // Relaxed: published to openers by the release stores of the magics below.
        r->member(g, mbr, p).held.store(kNone, std::memory_order_relaxed);
      }
    }
    if (p != 0) c->magic.store(kControlMagic, std::memory_order_relaxed);  // as block 0's, below
  }
  // Release: before the data segment's magic (M1), which openers acquire
  // first; an opener that sees the data magic sees this too.
  r->control(0).magic.store(kControlMagic, std::memory_order_release);
  const std::uint64_t boot = o.storage == Storage::File ? boot_id_hash() : 0;
  for (std::uint32_t p = o.rings(); p-- > 0;) {
    auto* h = new (&r->header(p)) TopicHeader{};
    h->layout_version = kLayoutVersion;
    h->header_size = sizeof(TopicHeader);
    h->generation = generation;
    h->region_size = l.size;
    h->slot_count = o.slot_count;
    h->slot_size = o.slot_size;
    h->stride = static_cast<std::uint32_t>(l.stride);
    h->policy = static_cast<std::uint8_t>(o.policy);
    h->single_producer = o.single_producer ? 1 : 0;
    h->storage = static_cast<std::uint8_t>(o.storage);
    h->boot = boot;
    h->flush_interval_ms = static_cast<std::uint32_t>(o.flush_interval.count());
    // Relaxed: published with the rest of the header by M1 below.
    h->shared_control.store((o.mode & 077) != 0 ? 1 : 0, std::memory_order_relaxed);
    h->max_producers = o.max_producers;
    h->max_groups = o.max_groups;
    h->max_members = o.max_members;
    h->group_stride = static_cast<std::uint32_t>(l.group_stride);
    h->producers_offset = l.producers_offset;
    h->groups_offset = l.groups_offset;
    h->slots_offset = l.slots_offset;
    h->control_size = l.control_size;
    h->partitions = o.rings();
    h->lanes = o.priorities != 0 ? 1 : 0;
    h->partition_size = l.partition_size;
    h->partition_control_size = l.partition_control_size;
    h->schedule_offset = l.schedule_offset;
    h->delay_slots = o.delay_slots;
    h->delay_stride = static_cast<std::uint32_t>(l.delay_stride);
    std::memset(h->name, 0, sizeof h->name);
    std::memcpy(h->name, topic.data(), std::min(topic.size(), kNameMax));
    for (std::uint32_t i = 0; i < o.max_producers; ++i) {
      new (&r->producer(i, p)) ProducerSeat{};
      for (auto& f : r->producer(i, p).in_flight)
        f.store(kNone, std::memory_order_relaxed);
    }
    for (std::uint64_t s = 0; s < o.slot_count; ++s)
      new (&r->slot(s, p)) SlotHeader{};
    // Relaxed for blocks p > 0 (block 0's release, M1, publishes them all).
    if (p != 0) h->magic.store(kMagic, std::memory_order_relaxed);
  }
  if (const Schedule& sc = r->schedule(); sc.header != nullptr) {
    new (sc.header) ScheduleHeader{};
    // Relaxed: published by M1 below. Nothing scheduled: no wake-up needed.
    sc.header->armed.store(kNone, std::memory_order_relaxed);
    for (std::uint32_t i = 0; i < sc.capacity; ++i)
      new (&sc.entry(i)) ScheduleEntry{};
  }
  // SYNC POINT M1 (release): everything above is visible to an opener whose
  // acquire load of `magic` (M2, in validate: open and from_fd) reads kMagic.
  r->header(0).magic.store(kMagic, std::memory_order_release);
  return r;
}

std::shared_ptr<Region> Region::open(const std::string& shm_name) {
  const std::string where = "/dev/shm/" + shm_name;
  const std::string cname = control_name(shm_name);
  std::shared_ptr<Region> r(new Region());
  r->shm_name_ = shm_name;
  // A subscriber whose file mode lets it read but not write the data segment
  // opens it read-only (and cannot publish); the control segment it must write.
  int fd = ::shm_open(shm_name.c_str(), O_RDWR, 0);
  if (fd < 0 && errno == EACCES) fd = ::shm_open(shm_name.c_str(), O_RDONLY, 0);
  if (const int err = errno; fd < 0) {
    if (err == ENOENT)
      throw Error(ErrorCode::NotFound, "no topic region " + where + "; create the topic first");
    if (err == EACCES)
      throw Error(ErrorCode::PermissionDenied,
                  "no permission to open " + where +
                      "; ask its owner to grant access to your uid or group");
    throw os_error("cannot open " + where, err);
  }
  r->data_->fd = fd;
  struct stat ds {
  }, cs{};
  if (::fstat(fd, &ds) != 0) throw os_error("cannot stat " + where, errno);
  // The data segment first: a file that is no topic at all is reported as that.
  const Layout l = r->attach_data(where, ds);
  r->control_seg_->fd = ::shm_open(cname.c_str(), O_RDWR, 0);
  if (const int err = errno; r->control_seg_->fd < 0) {
    if (err == ENOENT)
      throw Error(ErrorCode::Corrupt, where + " has no control segment (/dev/shm/" + cname +
                                          "); delete the topic and create it again");
    if (err == EACCES)
      throw Error(ErrorCode::PermissionDenied,
                  "no permission to write /dev/shm/" + cname +
                      " (subscribing needs it); ask the topic's owner for access");
    throw os_error("cannot open /dev/shm/" + cname, err);
  }
  if (::fstat(r->control_seg_->fd, &cs) != 0) throw os_error("cannot stat " + cname, errno);
  // /dev/shm is writable by everyone: a control file someone else planted
  // next to a topic's data file is not that topic's.
  if (cs.st_uid != ds.st_uid)
    throw Error(ErrorCode::PermissionDenied, "/dev/shm/" + cname + " is owned by uid " +
                                                 std::to_string(cs.st_uid) + ", not by uid " +
                                                 std::to_string(ds.st_uid) + " who owns " + where +
                                                 "; remove it and re-create the topic");
  r->attach_control(where, cs, l);
  return r;
}

std::shared_ptr<Region> Region::open_file(int dir_fd, const std::string& dir,
                                          const std::string& file) {
  std::shared_ptr<Region> r(new Region());
  r->shm_name_ = file;
  r->dir_ = dir;
  const std::string where = r->where();
  // Never through a link, and only a regular file of ours that nobody else
  // may open: the directory is ours (open_data_dir), checked again here.
  const auto open_own = [&](const std::string& name) {
    const int fd = ::openat(dir_fd, name.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      if (err == ENOENT)
        throw Error(ErrorCode::Corrupt, dir + "/" + name +
                                            " is missing; delete the topic (shmbus topic "
                                            "delete) and create it again");
      throw os_error("cannot open " + dir + "/" + name, err);
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != ::geteuid() ||
        (st.st_mode & 077) != 0) {
      ::close(fd);
      throw Error(
          ErrorCode::PermissionDenied,
          dir + "/" + name + " is not a regular file of this user with mode 0600; " + "remove it");
    }
    return fd;
  };
  r->data_->fd = open_own(file);
  struct stat ds {
  }, cs{};
  if (::fstat(r->data_->fd, &ds) != 0) throw os_error("cannot stat " + where, errno);
  const Layout l = r->attach_data(where, ds);
  r->control_seg_->fd = open_own(control_name(file));
  if (::fstat(r->control_seg_->fd, &cs) != 0) throw os_error("cannot stat " + where, errno);
  r->attach_control(where, cs, l);
  return r;
}

bool Region::remove_file(int dir_fd, const std::string& file) {
  // Control first, as remove().
  ::unlinkat(dir_fd, control_name(file).c_str(), 0);
  const bool removed = ::unlinkat(dir_fd, file.c_str(), 0) == 0;
  (void)::fsync(dir_fd);  // the names' removal on disk too
  return removed;
}

int Region::flush() noexcept {
  if (options_.storage != Storage::File) return 0;
  // What was published before this call is in the mappings now; the time is
  // taken first, so flushed_ns never claims more than was written.
  const std::uint64_t now = wall_ns();
  // The control segment first: a cursor on disk is then never ahead of the
  // tail written after it (what a power cut between the two could leave).
  for (const Segment* seg : {control_seg_.get(), data_.get()})
    if (::msync(seg->base, seg->size, MS_SYNC) != 0) return errno;
  // Relaxed: a report; a later flush only raises it.
  std::atomic<std::uint64_t>& f = control().flushed_ns;
  std::uint64_t seen = f.load(std::memory_order_relaxed);
  while (seen < now && !f.compare_exchange_weak(seen, now, std::memory_order_relaxed)) {
  }
  return 0;
}

void flush_region(Region& r, const std::string& topic) {
  if (const int err = r.flush(); err != 0)
    throw Error(ErrorCode::SystemError, "cannot write topic '" + topic + "' to disk (msync of " +
                                            r.where() + "): " + errno_text(err));
}

std::shared_ptr<Region> Region::from_fd(int data_fd, int control_fd, const std::string& shm_name) {
  std::shared_ptr<Region> r(new Region());
  r->shm_name_ = shm_name;
  // The descriptors stay the caller's: map through them, keep none.
  r->data_->fd_to_map = data_fd;
  r->control_seg_->fd_to_map = control_fd;
  r->attach_fds();
  return r;
}

std::shared_ptr<Region> Region::adopt(int data_fd, int control_fd) {
  std::shared_ptr<Region> r(new Region());
  // Owned from here on: closed with r, also if it is refused below.
  r->data_->fd = data_fd;
  r->control_seg_->fd = control_fd;
  r->data_->fd_to_map = data_fd;
  r->control_seg_->fd_to_map = control_fd;
  // The memfd's name, from /proc: "/memfd:<name> (deleted)".
  char link[512] = {};
  const std::string proc = "/proc/self/fd/" + std::to_string(data_fd);
  const ssize_t n = ::readlink(proc.c_str(), link, sizeof link - 1);
  if (n < 0) throw os_error("cannot read the name of " + proc, errno);
  std::string_view name(link, static_cast<std::size_t>(n));
  constexpr std::string_view kPrefix = "/memfd:", kSuffix = " (deleted)";
  if (!name.starts_with(kPrefix) || !name.ends_with(kSuffix))
    throw Error(ErrorCode::Corrupt, "descriptor " + std::string(name) + " is no shmbus memfd");
  name.remove_prefix(kPrefix.size());
  name.remove_suffix(kSuffix.size());
  r->shm_name_ = std::string(name);
  r->attach_fds(/*must_be_sealed=*/true);
  return r;
}

void Region::attach_fds(bool must_be_sealed) {
  // A region of shmbusd's is two sealed memfds; one opened by name is not.
  sealed_ = has_region_seals(data_->fd_to_map) && has_region_seals(control_seg_->fd_to_map);
  const std::string where = this->where();
  if (must_be_sealed && !sealed_)
    throw Error(ErrorCode::Corrupt, "memfd:" + shm_name_ + " is not sealed against resizing");
  struct stat ds {
  }, cs{};
  if (::fstat(data_->fd_to_map, &ds) != 0 || ::fstat(control_seg_->fd_to_map, &cs) != 0)
    throw os_error("cannot stat the region of " + where, errno);
  attach_control(where, cs, attach_data(where, ds));
}

std::string Region::where() const {
  if (!dir_.empty()) return dir_ + "/" + shm_name_;
  return (sealed_ ? "memfd:" : "/dev/shm/") + shm_name_;
}

// Maps the data segment (read-only when its descriptor is) and validates its
// header: every field that sizes or places something is checked before use.
Layout Region::attach_data(const std::string& where, const struct stat& ds) {
  if (data_->fd >= 0) data_->fd_to_map = data_->fd;
  const int flags = ::fcntl(data_->fd_to_map, F_GETFL);
  if (flags < 0) throw os_error("cannot inspect the descriptor of " + where, errno);
  read_only_ = (flags & O_ACCMODE) == O_RDONLY;
  const auto size = static_cast<std::uint64_t>(ds.st_size);
  if (size < sizeof(TopicHeader))
    throw Error(ErrorCode::Corrupt, where + " is " + std::to_string(size) +
                                        " bytes, too small to be a shmbus topic; delete it (rm " +
                                        where + "*) and create the topic again");
  if (size > kMaxRegionSize + (1ULL << 30))
    throw Error(ErrorCode::Corrupt, where + " has an impossible size (" + std::to_string(size) +
                                        " bytes); delete the topic and create it again");
  map(*data_, size, !read_only_, where);
  const auto* h = static_cast<const TopicHeader*>(data_->base);
  // A creator may still be initialising a fresh region: wait briefly for magic.
  // SYNC POINT M2 (acquire): pairs with M1 in create.
  std::uint64_t magic = h->magic.load(std::memory_order_acquire);
  for (int i = 0; magic == 0 && i < 200; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    magic = h->magic.load(std::memory_order_acquire);
  }
  if (magic != kMagic)
    throw Error(ErrorCode::Corrupt,
                where + " is not a shmbus topic (bad magic" +
                    std::string(magic == 0 ? ": its creator never finished" : "") +
                    "); delete it (rm " + where + "*) and create the topic again");
  if (h->layout_version != kLayoutVersion)
    throw Error(ErrorCode::VersionMismatch,
                where + " has layout version " + std::to_string(h->layout_version) +
                    " but this library speaks version " + std::to_string(kLayoutVersion) +
                    "; use a matching shmbus build, or delete and re-create the topic");
  if (h->header_size != sizeof(TopicHeader))
    throw Error(ErrorCode::VersionMismatch,
                where + " has a " + std::to_string(h->header_size) + "-byte header where this " +
                    "build expects " + std::to_string(sizeof(TopicHeader)) +
                    " (another build of layout version " + std::to_string(kLayoutVersion) +
                    "); use a matching shmbus build, or delete and re-create the topic");
  // Checked against the layout this library computes for the same
  // parameters and against the file size; the copies are what we use.
  options_.slot_count = h->slot_count;
  options_.slot_size = h->slot_size;
  options_.policy = static_cast<Policy>(h->policy);
  options_.max_producers = h->max_producers;
  options_.max_groups = h->max_groups;
  options_.max_members = h->max_members;
  options_.mode = 0600;
  if (h->lanes > 1)
    throw Error(ErrorCode::Corrupt, where + " has an invalid header (lanes " +
                                        std::to_string(h->lanes) +
                                        "); delete it and create the topic again");
  options_.partitions = h->lanes != 0 ? 1 : h->partitions;
  options_.priorities = h->lanes != 0 ? h->partitions : 0;
  options_.delay_slots = h->delay_slots;
  options_.single_producer = h->single_producer == 1;
  if (h->storage > 1)
    throw Error(ErrorCode::Corrupt, where + " has an invalid header (storage " +
                                        std::to_string(h->storage) +
                                        "); delete it and create the topic again");
  options_.storage = static_cast<Storage>(h->storage);
  // Over a day is refused by validate_options below, as Corrupt.
  options_.flush_interval = std::chrono::milliseconds(h->flush_interval_ms);
  if (auto why = validate_options(options_); !why.empty())
    throw Error(ErrorCode::Corrupt, where + " has an invalid header (" + why +
                                        "); delete it and create the topic again");
  const Layout l = compute_layout(options_);
  if (h->stride != l.stride || h->group_stride != l.group_stride ||
      h->producers_offset != l.producers_offset || h->groups_offset != l.groups_offset ||
      h->slots_offset != l.slots_offset || h->region_size != l.size ||
      h->control_size != l.control_size || h->partition_size != l.partition_size ||
      h->partition_control_size != l.partition_control_size || size < l.size ||
      h->single_producer > 1 || h->schedule_offset != l.schedule_offset ||
      h->delay_stride != l.delay_stride)
    throw Error(ErrorCode::Corrupt, where + " has a header that does not match its size (" +
                                        std::to_string(size) +
                                        " bytes); delete it and create the topic again");
  options_.single_producer = h->single_producer != 0;
  generation_ = h->generation;
  return l;
}

// Maps the control segment (always writable: every seat holder writes it)
// and checks that it belongs to the data segment, then sets the accessors.
void Region::attach_control(const std::string& where, const struct stat& cs, const Layout& l) {
  if (control_seg_->fd >= 0) control_seg_->fd_to_map = control_seg_->fd;
  const int flags = ::fcntl(control_seg_->fd_to_map, F_GETFL);
  if (flags < 0) throw os_error("cannot inspect the descriptor of " + where + "@control", errno);
  if ((flags & O_ACCMODE) != O_RDWR)
    throw Error(ErrorCode::PermissionDenied,
                "the control segment of " + where + " was not opened for writing");
  const auto size = static_cast<std::uint64_t>(cs.st_size);
  if (size < l.control_size || size > l.control_size + (1ULL << 30))
    throw Error(ErrorCode::Corrupt,
                where + "@control is " + std::to_string(size) + " bytes where the topic needs " +
                    std::to_string(l.control_size) + "; delete the topic and create it again");
  map(*control_seg_, size, true, where + "@control");
  const auto* c = static_cast<const ControlHeader*>(control_seg_->base);
  // Acquire: pairs with the release store in create (made before M1, which
  // attach_data acquired, so already visible; the acquire costs nothing here).
  if (c->magic.load(std::memory_order_acquire) != kControlMagic || c->generation != generation_)
    throw Error(ErrorCode::Corrupt, where + "@control does not belong to " + where +
                                        " (bad magic or another generation); delete the "
                                        "topic and create it again");
  init_accessors(options_, l);
}

int Region::data_fd() const noexcept {
  return data_->fd;
}
int Region::control_fd() const noexcept {
  return control_seg_->fd;
}

int Region::reopen_data_read_only() const {
  if (data_->fd < 0) throw Error(ErrorCode::SystemError, "region not opened by name");
  // A new open file description, read-only: a descriptor that cannot be
  // mapped writable or truncated, whatever its receiver does with it. (The
  // receiver cannot re-open it read-write through /proc either: that checks
  // the file's owner and mode, 0600 and shmbusd's.)
  const std::string path = "/proc/self/fd/" + std::to_string(data_->fd);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw os_error("cannot re-open " + path + " read-only", errno);
  return fd;
}

bool Region::remove(const std::string& shm_name) {
  // Control first: a create that finds the data name free may then replace
  // whatever control file it finds (see create).
  ::shm_unlink(control_name(shm_name).c_str());
  return ::shm_unlink(shm_name.c_str()) == 0;
}

void Region::mark_deleted() noexcept {
  for (std::uint32_t p = 0; p < partitions(); ++p) {
    // Release: pairs with detail::deleted()'s acquire.
    header(p).deleted.store(1, std::memory_order_release);
    // seq_cst, as a join's J3: every producer's next claim sees the epoch
    // change (J2), takes the slow path and finds the flag there, so the hot
    // path never looks at it.
    control(p).join_epoch.fetch_add(1, std::memory_order_seq_cst);
    wake(control(p).space_event);
  }
  // Everyone asleep re-checks: consumers drain what is left, then see it.
  wake(control(0).data_event);
}

bool Region::abandon_unpublished(std::uint64_t s, std::uint32_t p) noexcept {
  const Ring& ring = rings_[p];
  SlotHeader& sl = ring.slot(s);
  // Acquire: pairs with P1/P0; we inspect what the dead producer left.
  std::uint64_t st = sl.stamp.load(std::memory_order_acquire);
  // A claim of s is made only once the previous occupant is complete (P0), so
  // a slot claimed for s shows that occupant's final stamp or writing(s).
  const std::uint64_t floor = claim_floor(s, ring.count);
  while (st >= floor && st < stamp_published(s)) {
    // Release on success: pairs with C1 like the abandon of a dropped loan.
    // Acquire on failure: the stamp read back is examined as the load above.
    // Nothing else is written: readers look at a slot's fields only when its
    // stamp says published, and once the CAS succeeds the slot may already
    // belong to s + slot_count.
    if (sl.stamp.compare_exchange_weak(st, stamp_abandoned(s), std::memory_order_release,
                                       std::memory_order_acquire)) {
      // Relaxed: a counter for reports.
      ring.header->abandoned.fetch_add(1, std::memory_order_relaxed);
      notify(*ring.data_event);
      return true;
    }
  }
  return false;
}

void Region::free_producer(std::uint32_t i, std::uint32_t pid) {
  if (i >= max_producers_) return;
  {
    ControlLock lock(*this);
    // Checked under the lock: the seat may have been freed and taken by another
    // process since the caller looked. Relaxed: seats change under the lock.
    // Block 0's seat speaks for all (they are taken and freed together).
    const ProducerSeat& first = producer(i);
    if (first.state.load(std::memory_order_relaxed) ==
            static_cast<std::uint32_t>(SeatState::Free) ||
        first.pid.load(std::memory_order_relaxed) != pid)
      return;
    for (std::uint32_t p = partitions(); p-- > 0;) {
      ProducerSeat& seat = producer(i, p);
      for (auto& f : seat.in_flight) {
        // Relaxed: only says which sequences to look at; abandon_unpublished
        // decides from the slot's stamp (acquire load, CAS).
        const std::uint64_t s = f.load(std::memory_order_relaxed);
        if (s != kNone) abandon_unpublished(s, p);
        // Relaxed: under the control lock; the release store of state below
        // publishes the cleared seat to the next attach.
        f.store(kNone, std::memory_order_relaxed);
      }
      // Release: pairs with the acquire of a later attach (block 0's last).
      seat.state.store(static_cast<std::uint32_t>(SeatState::Free), std::memory_order_release);
    }
  }
}

void Region::free_member(std::uint32_t g, std::uint32_t m, std::uint32_t pid) {
  if (g >= options_.max_groups || m >= options_.max_members) return;
  {
    ControlLock lock(*this);
    // Re-checked under the lock, as in free_producer (block 0's seat). An
    // orphan is no one's seat any more: its adopters free it.
    const MemberSeat& first = member(g, m);
    const std::uint32_t state = first.state.load(std::memory_order_relaxed);
    if (state == static_cast<std::uint32_t>(SeatState::Free) ||
        state == static_cast<std::uint32_t>(SeatState::Orphan) ||
        first.pid.load(std::memory_order_relaxed) != pid)
      return;
    // Relaxed: flags change only under the control lock, which we hold.
    const std::uint32_t flags = group(g).flags.load(std::memory_order_relaxed);
    // At least once: what it took and did not release stays the group's.
    bool orphan = false;
    if ((flags & kGroupAtLeastOnce) != 0)
      for (std::uint32_t i = 0; i < kAckRecords; ++i)
        // Relaxed: the holder is dead or is this thread (its destructor).
        if (acks(g, m)[i].seq1.load(std::memory_order_relaxed) != 0) orphan = true;
    const auto to = static_cast<std::uint32_t>(orphan ? SeatState::Orphan : SeatState::Free);
    for (std::uint32_t p = partitions(); p-- > 0;) {
      GroupEntry& e = group(g, p);
      MemberSeat& seat = member(g, m, p);
      // Release: producers that read the cleared hazard (G2) may reuse the
      // slot. An orphan keeps its hazard: its samples are still to be read.
      if (!orphan) seat.held.store(kNone, std::memory_order_release);
      // Release: pairs with the acquire of a later attach (the seat is cleared).
      seat.state.store(to, std::memory_order_release);
      // Release: pairs with the acquire of members in Ring::gate; a producer
      // that sees the group without members sees the hazard cleared above.
      // (An at-least-once group is durable: it gates without members.)
      e.members.fetch_sub(1, std::memory_order_release);
      if ((flags & kGroupPrivate) != 0)
        // Release: pairs with the acquire of state in Ring::gate and attach.
        e.state.store(static_cast<std::uint32_t>(SeatState::Free), std::memory_order_release);
    }
    if (orphan) {
      // Relaxed: under the lock; release (orphaned): a member that acquires
      // the new count sees the orphan counted, and then adopts under the
      // control lock, which orders the rest.
      group(g).orphans.fetch_add(1, std::memory_order_relaxed);
      group(g).orphaned.fetch_add(1, std::memory_order_release);
    }
    // Its partitions go to the members left (it holds nothing any more: it
    // left, or died; under at-least-once its samples wait, as an orphan's,
    // for the partition's next owner).
    if ((flags & kGroupPartitioned) != 0) assign_partitions_locked(g);
  }
  for (std::uint32_t p = 0; p < partitions(); ++p)
    notify(control(p).space_event);
  notify(control(0).data_event);  // members waiting for a partition (or orphans) look again
}

std::uint64_t Region::orphan_records(std::uint32_t g) const noexcept {
  std::uint64_t n = 0;
  if (g >= options_.max_groups) return 0;
  for (std::uint32_t m = 0; m < options_.max_members; ++m) {
    // Relaxed: a snapshot for reporting.
    if (member(g, m).state.load(std::memory_order_relaxed) !=
        static_cast<std::uint32_t>(SeatState::Orphan))
      continue;
    for (std::uint32_t i = 0; i < kAckRecords; ++i) {
      const AckRecord& r = acks(g, m)[i];
      if (r.seq1.load(std::memory_order_relaxed) != 0)
        n += std::max<std::uint32_t>(1, ack_count(r.info.load(std::memory_order_relaxed)));
    }
  }
  return n;
}

void Region::lock_control() const {
  const auto me = static_cast<std::uint32_t>(::getpid());
  std::atomic<std::uint32_t>& lock = rings_[0].control->control_lock;
  const auto start = Clock::now();
  for (std::uint32_t i = 0;; ++i) {
    std::uint32_t holder = 0;
    // Acquire: pairs with the release in unlock_control; the previous holder's
    // changes to seats and groups are visible to us.
    if (lock.compare_exchange_weak(holder, me, std::memory_order_acquire,
                                   std::memory_order_relaxed))
      return;
    if (holder != 0 && i % 64 == 63 && Clock::now() - start > std::chrono::milliseconds(200) &&
        !process_alive(static_cast<pid_t>(holder))) {
      // The holder died inside its critical section (a few stores to seats);
      // take the lock over. Acquire as above.
      if (lock.compare_exchange_strong(holder, me, std::memory_order_acquire,
                                       std::memory_order_relaxed))
        return;
    }
    if (Clock::now() - start > lock_patience_)
      throw Error(ErrorCode::SystemError, "topic control lock of " + where() + " held by pid " +
                                              std::to_string(holder) + " for over " +
                                              std::to_string(lock_patience_.count()) +
                                              " ms; is that process stuck?");
    if (i < 64)
      cpu_relax();
    else
      std::this_thread::yield();
  }
}

bool Region::try_lock_control() const noexcept {
  std::uint32_t holder = 0;
  // Acquire: as in lock_control.
  return rings_[0].control->control_lock.compare_exchange_strong(
      holder, static_cast<std::uint32_t>(::getpid()), std::memory_order_acquire,
      std::memory_order_relaxed);
}

void Region::unlock_control() const noexcept {
  // Release: pairs with the acquire CAS in lock_control.
  rings_[0].control->control_lock.store(0, std::memory_order_release);
}

}  // namespace shmbus::detail
