#include "shmbus/topic.hpp"

#include <algorithm>
#include <cstring>

#include "connection.hpp"
#include "region.hpp"
#include "schedule.hpp"
#include "shmbus/report.hpp"

namespace shmbus {

namespace {

// What is wrong with `name` under the rule of topic names ("" when nothing):
// the words that follow the name in the error.
std::string name_problem(std::string_view name) {
  if (name.empty()) return "is empty";
  if (name.size() > detail::kNameMax) return "is too long (" + std::to_string(name.size()) + ")";
  for (const char ch : name) {
    const auto c = static_cast<unsigned char>(ch);
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (ok) continue;
    if (c == '/') return "contains '/'";
    if (c < 0x20 || c >= 0x7f) return "contains a non-printable byte";
    return std::string("contains '") + ch + "'";
  }
  if (name == "." || name == "..") return "is reserved";
  return {};
}

std::string allowed_characters() {
  return "use 1 to " + std::to_string(detail::kNameMax) + " characters from A-Z a-z 0-9 . _ -";
}

}  // namespace

void validate_name(std::string_view what, std::string_view name) {
  if (const std::string why = name_problem(name); !why.empty())
    throw Error(ErrorCode::InvalidArgument, std::string(what) + " name '" + std::string(name) +
                                                "' " + why + "; " + allowed_characters());
  // A bus name is part of every region name (shmbus.<bus>.<topic>): a '.' in it
  // would let one bus's names be read as another's.
  if (what == "bus" && name.find('.') != std::string_view::npos)
    throw Error(
        ErrorCode::InvalidArgument,
        "bus name '" + std::string(name) + "' contains '.'; use A-Z a-z 0-9 _ - for bus names");
}

void validate_report(std::string_view name, std::string_view kind,
                     std::span<const ReportCounter> counters) {
  const auto check = [](const std::string& what, std::string_view value) {
    if (const std::string why = name_problem(value); !why.empty())
      throw Error(ErrorCode::InvalidArgument,
                  what + " '" + std::string(value) + "' " + why + "; " + allowed_characters());
  };
  check("component name", name);
  const std::string component = "component '" + std::string(name) + "'";
  check(component + ": kind", kind);
  if (counters.size() > kMaxReportCounters)
    throw Error(ErrorCode::InvalidArgument,
                component + " has " + std::to_string(counters.size()) + " counters; at most " +
                    std::to_string(kMaxReportCounters) +
                    " (kMaxReportCounters) are reported: leave some out or report them under "
                    "another component name");
  for (std::size_t i = 0; i < counters.size(); ++i) {
    check(component + ": counter name", counters[i].name);
    for (std::size_t k = 0; k < i; ++k)
      if (counters[k].name == counters[i].name)
        throw Error(ErrorCode::InvalidArgument, component + ": counter '" + counters[i].name +
                                                    "' is reported twice; name each counter once");
  }
}

std::string region_name(std::string_view bus, std::string_view topic) {
  validate_name("bus", bus);
  validate_name("topic", topic);
  return "shmbus." + std::string(bus) + "." + std::string(topic);
}

Topic Topic::create(std::string_view name, const TopicOptions& options, std::string_view bus) {
  const std::string shm = region_name(bus, name);
  return Topic(std::string(name), detail::Region::create(shm, name, options));
}

Topic Topic::open(std::string_view name, std::string_view bus) {
  const std::string shm = region_name(bus, name);
  return Topic(std::string(name), detail::Region::open(shm));
}

bool Topic::remove(std::string_view name, std::string_view bus) {
  return detail::Region::remove(region_name(bus, name));
}

const std::shared_ptr<detail::Region>& Topic::region(const char* doing) const {
  if (!region_)
    throw Error(ErrorCode::PermissionDenied,
                "topic '" + name_ + "' was created with the create right only: this uid may not " +
                    doing + " it; ask the bus owner for a publish or subscribe rule");
  return region_;
}

Publisher Topic::publisher(const PublisherOptions& options) const {
  Publisher p(region("publish to"), options);
  if (bus_) detail::register_producer(*bus_, name_, p.id());
  return p;
}

std::unique_ptr<Subscriber> Topic::subscriber(const SubscriberOptions& options) const {
  std::unique_ptr<Subscriber> s(new Subscriber(region("subscribe to"), options));
  if (bus_) detail::register_member(*bus_, name_, s->group_index(), s->member_index());
  s->bus_ = bus_;  // Sample::reply opens reply topics through it
  return s;
}

void Topic::flush() const {
  detail::flush_region(*region("flush"), name_);
}

TopicOptions Topic::options() const {
  return region_ ? detail::options_of(*region_) : created_options_;
}

TopicStatus Topic::status() const {
  return detail::status_of(name_, *region("read the status of"));
}

namespace detail {

TopicOptions options_of(const Region& r) {
  TopicOptions o;
  o.slot_count = static_cast<std::uint32_t>(r.slot_count());
  o.slot_size = r.slot_size();
  o.policy = r.policy();
  o.single_producer = r.single_producer();
  o.max_producers = r.max_producers();
  o.max_groups = r.max_groups();
  o.max_members = r.max_members();
  o.partitions = r.lanes() ? 1 : r.partitions();
  o.priorities = r.lanes() ? r.partitions() : 0;
  o.delay_slots = r.schedule().capacity;
  o.storage = r.storage();
  o.flush_interval = r.flush_interval();
  return o;
}

TopicStatus status_of(const std::string& name, const Region& r) {
  TopicStatus t;
  t.name = name;
  t.options = options_of(r);
  t.generation = r.header().generation;
  // Relaxed loads below: a snapshot for reporting; no field is used to reach
  // other memory, and a seat or group caught mid-change is reported as seen.
  for (std::uint32_t p = 0; p < r.partitions(); ++p) {
    PartitionStatus ps;
    ps.tail = r.header(p).tail.load(std::memory_order_relaxed);
    ps.abandoned = r.header(p).abandoned.load(std::memory_order_relaxed);
    t.tail += ps.tail;
    t.abandoned += ps.abandoned;
    t.partitions.push_back(ps);
  }
  t.published = t.tail > t.abandoned ? t.tail - t.abandoned : 0;
  t.deleted = r.header().deleted.load(std::memory_order_relaxed) != 0;
  for (std::uint32_t i = 0; i < r.max_producers(); ++i) {
    const ProducerSeat& p = r.producer(i);
    if (p.state.load(std::memory_order_relaxed) == static_cast<std::uint32_t>(SeatState::Free))
      continue;
    ++t.producers;
    ProducerStatus ps;
    ps.seat = i;
    ps.pid = p.pid.load(std::memory_order_relaxed);
    ps.session = p.session.load(std::memory_order_relaxed);
    for (std::uint32_t q = 0; q < r.partitions(); ++q) {
      ps.published += r.producer(i, q).published.load(std::memory_order_relaxed);
      ps.published_bytes += r.producer(i, q).published_bytes.load(std::memory_order_relaxed);
    }
    t.published_bytes += ps.published_bytes;
    t.producer_seats.push_back(ps);
  }
  for (std::uint32_t g = 0; g < r.max_groups(); ++g) {
    const GroupEntry& e = r.group(g);
    if (e.state.load(std::memory_order_relaxed) != static_cast<std::uint32_t>(SeatState::Active))
      continue;
    GroupStatus gs;
    const std::uint32_t flags = e.flags.load(std::memory_order_relaxed);
    gs.name = (flags & kGroupPrivate) != 0 ? std::string()
                                           : std::string(e.name, ::strnlen(e.name, sizeof e.name));
    gs.members = e.members.load(std::memory_order_relaxed);
    gs.durable = (flags & kGroupDurable) != 0;
    gs.mode = (flags & kGroupPartitioned) != 0 ? GroupMode::Partitioned : GroupMode::Shared;
    if ((flags & kGroupAtLeastOnce) != 0) {
      gs.delivery = Delivery::AtLeastOnce;
      gs.max_deliveries = e.max_deliveries;
      gs.redelivered = e.redelivered.load(std::memory_order_relaxed);
      gs.dead_lettered = e.dead_lettered.load(std::memory_order_relaxed);
      gs.orphans = e.orphans.load(std::memory_order_relaxed);
      gs.unacked_orphans = r.orphan_records(g);
    }
    for (std::uint32_t p = 0; p < r.partitions(); ++p) {
      const GroupEntry& ep = r.group(g, p);
      const std::uint64_t tail = t.partitions[p].tail;
      GroupPartitionStatus gp;
      gp.position = ep.cursor.load(std::memory_order_relaxed);
      gp.lag = tail > gp.position ? tail - gp.position : 0;
      if (gs.mode == GroupMode::Partitioned) {
        gp.owner_pid = r.owner_pid(g, p);
        const std::uint32_t target = ep.target.load(std::memory_order_relaxed);
        gp.target_seat = target == 0 ? -1 : static_cast<std::int32_t>(target - 1);
      }
      gs.position += gp.position;
      gs.lag += gp.lag;
      gs.lost += ep.lost.load(std::memory_order_relaxed);
      gs.filtered += ep.filtered.load(std::memory_order_relaxed);
      const std::uint64_t oldest = r.ring(p).oldest(tail);
      gs.overrun += gp.position < oldest ? oldest - gp.position : 0;
      gs.partitions.push_back(gp);
    }
    for (std::uint32_t m = 0; m < r.max_members(); ++m) {
      const MemberSeat& seat = r.member(g, m);
      if (seat.state.load(std::memory_order_relaxed) !=
          static_cast<std::uint32_t>(SeatState::Active))
        continue;  // free, or an orphan (counted above)
      MemberStatus ms;
      ms.seat = m;
      ms.pid = seat.pid.load(std::memory_order_relaxed);
      ms.session = seat.session.load(std::memory_order_relaxed);
      ms.held = seat.held.load(std::memory_order_relaxed);
      ms.received = seat.received.load(std::memory_order_relaxed);
      for (std::uint32_t p = 1; p < r.partitions(); ++p) {
        const MemberSeat& sp = r.member(g, m, p);
        ms.held = std::min(ms.held, sp.held.load(std::memory_order_relaxed));
        ms.received += sp.received.load(std::memory_order_relaxed);
      }
      gs.member_seats.push_back(ms);
    }
    t.groups.push_back(std::move(gs));
  }
  if (const Schedule& sc = r.schedule(); sc.header != nullptr) {
    const ScheduleCounts c = count_schedule(r, wall_ns());
    t.scheduled = c.scheduled;
    t.overdue = c.overdue;
    t.next_due_ns = c.next_due_ns;
    t.moved = sc.header->moved.load(std::memory_order_relaxed);
    t.refused = sc.header->refused.load(std::memory_order_relaxed);
  }
  if (!r.dir().empty()) t.path = r.where();
  // Relaxed: a report.
  t.flushed_ns = r.control().flushed_ns.load(std::memory_order_relaxed);
  return t;
}

}  // namespace detail

}  // namespace shmbus
