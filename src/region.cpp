#include "region.hpp"

#include "os.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <boost/interprocess/exceptions.hpp>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/permissions.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <cerrno>
#include <cstring>
#include <new>
#include <random>
#include <thread>

#include "shmbus/detail/wait.hpp"
#include "shmbus/error.hpp"

namespace bip = boost::interprocess;

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

struct Region::Mapping {
  bip::shared_memory_object shm;  // by name (create, open)
  bip::mapped_region map;
  void* raw = nullptr;  // or mapped from a descriptor (from_fd)
  std::size_t raw_size = 0;
  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (raw != nullptr) ::munmap(raw, raw_size);
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

Error os_error(ErrorCode code, const std::string& what, const bip::interprocess_exception& e) {
  return Error(code, what + ": " + e.what());
}

ErrorCode code_of(const bip::interprocess_exception& e) {
  switch (e.get_error_code()) {
    case bip::already_exists_error:
      return ErrorCode::AlreadyExists;
    case bip::not_found_error:
      return ErrorCode::NotFound;
    case bip::security_error:
      return ErrorCode::PermissionDenied;
    default:
      break;
  }
  switch (e.get_native_error()) {
    case ENOENT:
      return ErrorCode::NotFound;
    case EEXIST:
      return ErrorCode::AlreadyExists;
    case EACCES:
    case EPERM:
      return ErrorCode::PermissionDenied;
    default:
      return ErrorCode::SystemError;
  }
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
  const Layout l =
      compute_layout(o.slot_count, o.slot_size, o.max_producers, o.max_groups, o.max_members);
  if (l.size > kMaxRegionSize)
    return "slot_count x slot_size makes a region of " + std::to_string(l.size >> 20) +
           " MiB, over the 64 GiB limit; use fewer or smaller slots";
  return {};
}

}  // namespace

Layout compute_layout(std::uint32_t slot_count, std::uint32_t slot_size,
                      std::uint32_t max_producers, std::uint32_t max_groups,
                      std::uint32_t max_members) noexcept {
  Layout l{};
  l.stride = round_up(kSlotHeaderSize + std::uint64_t{slot_size}, kCacheLine);
  l.group_stride =
      round_up(sizeof(GroupEntry) + std::uint64_t{max_members} * sizeof(MemberSeat), kHotAlign);
  l.producers_offset = round_up(sizeof(TopicHeader), kHotAlign);
  l.groups_offset =
      round_up(l.producers_offset + std::uint64_t{max_producers} * sizeof(ProducerSeat), kHotAlign);
  l.slots_offset =
      round_up(l.groups_offset + std::uint64_t{max_groups} * l.group_stride, kHotAlign);
  l.size = l.slots_offset + std::uint64_t{slot_count} * l.stride;
  return l;
}

Region::~Region() = default;

// Accessors come from the validated copies, never from a second read of the
// header: another process could change the header after it was checked.
void Region::init_accessors(const TopicOptions& o, const Layout& l) {
  ring_.count = o.slot_count;
  ring_.swap = o.slot_count >= 4 ? 3 : 0;
  ring_.slot_size = o.slot_size;
  ring_.stride = l.stride;
  producers_offset_ = l.producers_offset;
  ring_.groups = base_ + l.groups_offset;
  ring_.group_stride = l.group_stride;
  max_producers_ = o.max_producers;
  ring_.max_groups = o.max_groups;
  ring_.max_members = o.max_members;
  ring_.policy = o.policy;
  single_producer_ = o.single_producer;
  ring_.slots = base_ + l.slots_offset;
}

std::shared_ptr<Region> Region::create(const std::string& shm_name, std::string_view topic,
                                       const TopicOptions& o) {
  if (auto why = validate_options(o); !why.empty())
    throw Error(ErrorCode::InvalidArgument, "topic '" + std::string(topic) + "': " + why);
  const Layout l =
      compute_layout(o.slot_count, o.slot_size, o.max_producers, o.max_groups, o.max_members);
  std::shared_ptr<Region> r(new Region());
  r->shm_name_ = shm_name;
  auto m = std::make_unique<Mapping>();
  try {
    bip::permissions perm(static_cast<int>(o.mode));
    m->shm = bip::shared_memory_object(bip::create_only, shm_name.c_str(), bip::read_write, perm);
  } catch (const bip::interprocess_exception& e) {
    const ErrorCode c = code_of(e);
    if (c == ErrorCode::AlreadyExists)
      throw Error(c, "topic '" + std::string(topic) + "' already exists (/dev/shm/" + shm_name +
                         "); open it, or delete it first");
    throw os_error(c, "cannot create /dev/shm/" + shm_name, e);
  }
  try {
    m->shm.truncate(static_cast<bip::offset_t>(l.size));
    // Reserve the memory now: tmpfs allocates lazily, and touching a page it
    // cannot back later would kill the process with SIGBUS.
    const int rc = ::posix_fallocate(static_cast<int>(m->shm.get_mapping_handle().handle), 0,
                                     static_cast<off_t>(l.size));
    if (rc != 0) {
      bip::shared_memory_object::remove(shm_name.c_str());
      throw Error(rc == ENOSPC ? ErrorCode::ResourceExhausted : ErrorCode::SystemError,
                  "cannot reserve " + std::to_string(l.size >> 20) +
                      " MiB in /dev/shm for topic '" + std::string(topic) + "': " +
                      std::strerror(rc) + "; free space there or use fewer or smaller slots");
    }
    m->map = bip::mapped_region(m->shm, bip::read_write);
  } catch (const bip::interprocess_exception& e) {
    bip::shared_memory_object::remove(shm_name.c_str());
    throw os_error(code_of(e),
                   "cannot size or map /dev/shm/" + shm_name + " (" + std::to_string(l.size) +
                       " bytes; is /dev/shm large enough?)",
                   e);
  }
  // Boost applies `perm` through fchmod, so the umask does not widen or narrow it.
  r->base_ = static_cast<std::byte*>(m->map.get_address());
  r->mapping_ = std::move(m);
  // A new region reads as zeros. The atomics below are lock-free integers whose
  // zero bytes are a valid zero value; we construct them in place all the same.
  auto* h = new (r->base_) TopicHeader{};
  h->layout_version = kLayoutVersion;
  h->header_size = sizeof(TopicHeader);
  h->generation = std::random_device{}() | (std::uint64_t{std::random_device{}()} << 32);
  h->region_size = l.size;
  h->slot_count = o.slot_count;
  h->slot_size = o.slot_size;
  h->stride = static_cast<std::uint32_t>(l.stride);
  h->policy = static_cast<std::uint8_t>(o.policy);
  h->single_producer = o.single_producer ? 1 : 0;
  h->max_producers = o.max_producers;
  h->max_groups = o.max_groups;
  h->max_members = o.max_members;
  h->group_stride = static_cast<std::uint32_t>(l.group_stride);
  h->producers_offset = l.producers_offset;
  h->groups_offset = l.groups_offset;
  h->slots_offset = l.slots_offset;
  std::memset(h->name, 0, sizeof h->name);
  std::memcpy(h->name, topic.data(), std::min(topic.size(), kNameMax));
  r->ring_.header = h;
  r->init_accessors(o, l);
  for (std::uint32_t i = 0; i < o.max_producers; ++i)
    new (&r->producer(i)) ProducerSeat{};
  for (std::uint32_t i = 0; i < o.max_producers; ++i)
    for (auto& f : r->producer(i).in_flight)
      f.store(kNone, std::memory_order_relaxed);
  for (std::uint32_t g = 0; g < o.max_groups; ++g) {
    new (&r->group(g)) GroupEntry{};
    for (std::uint32_t mbr = 0; mbr < o.max_members; ++mbr) {
      new (&r->member(g, mbr)) MemberSeat{};
      r->member(g, mbr).held.store(kNone, std::memory_order_relaxed);
    }
  }
  for (std::uint64_t s = 0; s < o.slot_count; ++s)
    new (&r->slot(s)) SlotHeader{};
  // SYNC POINT M1 (release): everything above is visible to an opener whose
  // acquire load of `magic` (M2, in validate: open and from_fd) reads kMagic.
  h->magic.store(kMagic, std::memory_order_release);
  return r;
}

std::shared_ptr<Region> Region::open(const std::string& shm_name) {
  std::shared_ptr<Region> r(new Region());
  r->shm_name_ = shm_name;
  auto m = std::make_unique<Mapping>();
  bip::offset_t size = 0;
  try {
    m->shm = bip::shared_memory_object(bip::open_only, shm_name.c_str(), bip::read_write);
    if (!m->shm.get_size(size)) size = 0;
  } catch (const bip::interprocess_exception& e) {
    const ErrorCode c = code_of(e);
    if (c == ErrorCode::NotFound)
      throw Error(c, "no topic region /dev/shm/" + shm_name + "; create the topic first");
    if (c == ErrorCode::PermissionDenied)
      throw Error(c, "no permission to open /dev/shm/" + shm_name +
                         "; ask its owner to grant access to your uid or group");
    throw os_error(c, "cannot open /dev/shm/" + shm_name, e);
  }
  const std::string where = "/dev/shm/" + shm_name;
  if (size < static_cast<bip::offset_t>(sizeof(TopicHeader)))
    throw Error(ErrorCode::Corrupt, where + " is " + std::to_string(size) +
                                        " bytes, too small to be a shmbus topic; delete it "
                                        "(rm " +
                                        where + ") and create the topic again");
  try {
    m->map = bip::mapped_region(m->shm, bip::read_write);
  } catch (const bip::interprocess_exception& e) {
    throw os_error(code_of(e), "cannot map " + where, e);
  }
  r->base_ = static_cast<std::byte*>(m->map.get_address());
  r->mapping_ = std::move(m);
  r->validate(where, static_cast<std::uint64_t>(size));
  return r;
}

std::shared_ptr<Region> Region::from_fd(int fd, const std::string& shm_name) {
  const std::string where = "/dev/shm/" + shm_name;
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    throw Error(ErrorCode::SystemError,
                "cannot stat the region of " + where + ": " + std::strerror(errno));
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size < sizeof(TopicHeader) || size > kMaxRegionSize + (1ULL << 30))
    throw Error(ErrorCode::Corrupt, where + " has an impossible size (" + std::to_string(size) +
                                        " bytes); delete the topic and create it again");
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED)
    throw Error(ErrorCode::SystemError, "cannot map " + where + ": " + std::strerror(errno));
  std::shared_ptr<Region> r(new Region());
  r->shm_name_ = shm_name;
  r->mapping_ = std::make_unique<Mapping>();
  r->mapping_->raw = p;
  r->mapping_->raw_size = size;
  r->base_ = static_cast<std::byte*>(p);
  r->validate(where, size);
  return r;
}

int Region::fd() const noexcept {
  return mapping_->raw != nullptr ? -1
                                  : static_cast<int>(mapping_->shm.get_mapping_handle().handle);
}

// Checks every header field that sizes or places something, then sets the
// accessors from the checked copies.
void Region::validate(const std::string& where, std::uint64_t size) {
  auto* h = reinterpret_cast<TopicHeader*>(base_);
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
                    "); delete it (rm " + where + ") and create the topic again");
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
  // Every field that sizes or places something is checked against the layout
  // this library would compute for the same parameters and against the file size.
  TopicOptions o;
  o.slot_count = h->slot_count;
  o.slot_size = h->slot_size;
  o.policy = static_cast<Policy>(h->policy);
  o.max_producers = h->max_producers;
  o.max_groups = h->max_groups;
  o.max_members = h->max_members;
  o.mode = 0600;
  if (auto why = validate_options(o); !why.empty())
    throw Error(ErrorCode::Corrupt, where + " has an invalid header (" + why +
                                        "); delete it and create the topic again");
  const Layout l =
      compute_layout(o.slot_count, o.slot_size, o.max_producers, o.max_groups, o.max_members);
  if (h->stride != l.stride || h->group_stride != l.group_stride ||
      h->producers_offset != l.producers_offset || h->groups_offset != l.groups_offset ||
      h->slots_offset != l.slots_offset || h->region_size != l.size || size < l.size ||
      h->single_producer > 1)
    throw Error(ErrorCode::Corrupt, where + " has a header that does not match its size (" +
                                        std::to_string(size) +
                                        " bytes); delete it and create "
                                        "the topic again");
  o.single_producer = h->single_producer != 0;
  ring_.header = h;
  init_accessors(o, l);
}

bool Region::remove(const std::string& shm_name) {
  return bip::shared_memory_object::remove(shm_name.c_str());
}

void Region::mark_deleted() noexcept {
  TopicHeader& h = header();
  // Release: pairs with detail::deleted()'s acquire.
  h.deleted.store(1, std::memory_order_release);
  // seq_cst, as a join's J3: every producer's next claim sees the epoch
  // change (J2), takes the slow path and finds the flag there, so the hot
  // path never looks at it.
  h.join_epoch.fetch_add(1, std::memory_order_seq_cst);
  // Everyone asleep re-checks: consumers drain what is left, then see it.
  wake(h.data_event);
  wake(h.space_event);
}

bool Region::abandon_unpublished(std::uint64_t s) noexcept {
  SlotHeader& sl = slot(s);
  // Acquire: pairs with P1/P0; we inspect what the dead producer left.
  std::uint64_t st = sl.stamp.load(std::memory_order_acquire);
  // A claim of s is made only once the previous occupant is complete (P0), so
  // a slot claimed for s shows that occupant's final stamp or writing(s).
  const std::uint64_t floor = s >= ring_.count ? stamp_published(s - ring_.count) : 0;
  while (st >= floor && st < stamp_published(s)) {
    // Release on success: pairs with C1 like the abandon of a dropped loan.
    // Acquire on failure: the stamp read back is examined as the load above.
    // Nothing else is written: readers look at a slot's fields only when its
    // stamp says published, and once the CAS succeeds the slot may already
    // belong to s + slot_count.
    if (sl.stamp.compare_exchange_weak(st, stamp_abandoned(s), std::memory_order_release,
                                       std::memory_order_acquire)) {
      // Relaxed: a counter for reports.
      ring_.header->abandoned.fetch_add(1, std::memory_order_relaxed);
      notify(ring_.header->data_event);
      return true;
    }
  }
  return false;
}

void Region::free_producer(std::uint32_t i, std::uint32_t pid) {
  if (i >= max_producers_) return;
  ProducerSeat& seat = producer(i);
  {
    ControlLock lock(*this);
    // Checked under the lock: the seat may have been freed and taken by another
    // process since the caller looked. Relaxed: seats change under the lock.
    if (seat.state.load(std::memory_order_relaxed) == static_cast<std::uint32_t>(SeatState::Free) ||
        seat.pid.load(std::memory_order_relaxed) != pid)
      return;
    for (auto& f : seat.in_flight) {
      // Relaxed: only says which sequences to look at; abandon_unpublished
      // decides from the slot's stamp (acquire load, CAS).
      const std::uint64_t s = f.load(std::memory_order_relaxed);
      if (s != kNone) abandon_unpublished(s);
      // Relaxed: under the control lock; the release store of state below
      // publishes the cleared seat to the next attach.
      f.store(kNone, std::memory_order_relaxed);
    }
    // Release: pairs with the acquire of a later attach.
    seat.state.store(static_cast<std::uint32_t>(SeatState::Free), std::memory_order_release);
  }
}

void Region::free_member(std::uint32_t g, std::uint32_t m, std::uint32_t pid) {
  if (g >= ring_.max_groups || m >= ring_.max_members) return;
  {
    ControlLock lock(*this);
    GroupEntry& e = group(g);
    MemberSeat& seat = member(g, m);
    // Re-checked under the lock, as in free_producer.
    if (seat.state.load(std::memory_order_relaxed) == static_cast<std::uint32_t>(SeatState::Free) ||
        seat.pid.load(std::memory_order_relaxed) != pid)
      return;
    // Release: producers that read the cleared hazard (G2) may reuse the slot.
    seat.held.store(kNone, std::memory_order_release);
    // Release: pairs with the acquire of a later attach (the seat is cleared).
    seat.state.store(static_cast<std::uint32_t>(SeatState::Free), std::memory_order_release);
    // Release: pairs with the acquire of members in Ring::gate; a producer
    // that sees the group without members sees the hazard cleared above.
    e.members.fetch_sub(1, std::memory_order_release);
    // Relaxed: flags change only under the control lock, which we hold.
    if ((e.flags.load(std::memory_order_relaxed) & kGroupPrivate) != 0)
      // Release: pairs with the acquire of state in Ring::gate and attach.
      e.state.store(static_cast<std::uint32_t>(SeatState::Free), std::memory_order_release);
  }
  notify(ring_.header->space_event);
}

void Region::lock_control() const {
  const auto me = static_cast<std::uint32_t>(::getpid());
  std::atomic<std::uint32_t>& lock = ring_.header->control_lock;
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
    if (Clock::now() - start > std::chrono::seconds(10))
      throw Error(ErrorCode::SystemError, "topic control lock of /dev/shm/" + shm_name_ +
                                              " held by pid " + std::to_string(holder) +
                                              " for over 10 s; is that process stuck?");
    if (i < 64)
      cpu_relax();
    else
      std::this_thread::yield();
  }
}

void Region::unlock_control() const noexcept {
  // Release: pairs with the acquire CAS in lock_control.
  ring_.header->control_lock.store(0, std::memory_order_release);
}

}  // namespace shmbus::detail
