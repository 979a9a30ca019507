// The daemon's request handlers: one per request type, each checking the
// access rules and answering with one reply. A refusal is thrown as
// shmbus::Error and becomes the Error reply.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "daemon.hpp"
#include "os.hpp"
#include "region.hpp"
#include "schedule.hpp"
#include "shmbus/error.hpp"
#include "shmbus/topic.hpp"

namespace shmbus::daemon {

namespace {

constexpr std::size_t kMaxSeatsPerClient = 4096;

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

template <class M>
std::vector<std::byte> reply(const M& m, std::uint32_t id) {
  return proto::frame(m, id);
}

}  // namespace

void Daemon::handle(Client& c, std::span<const std::byte> body) {
  proto::Request q;
  proto::Problem why;
  Outgoing out;
  if (proto::parse_request(body, q, why)) {
    try {
      out = std::visit([&](const auto& m) { return on(c, q.id, m); }, q.message);
    } catch (const Error& e) {
      why = {e.code(), e.what()};
    } catch (const std::exception& e) {
      why = {ErrorCode::SystemError, e.what()};
    }
  }
  if (out.frame.empty()) {
    spdlog::debug("pid {}: {}", c.pid, why.message);
    out = {reply(proto::ErrorReply{why.code, why.message}, q.id), {}};
  }
  send(c, out);
}

bool Daemon::allowed(const Client& c, const std::string& topic, Right what) const {
  if (c.uid == 0 || c.uid == ::geteuid()) return true;
  // A requester's own reply topic: it makes it and reads it; who may answer
  // (publish there) is for the rules to say.
  if (what != Right::Publish && reply_topic_pid(topic) == c.pid && c.pid != 0) return true;
  for (const TopicRule& r : config_.rules) {
    if (!matches(r.pattern, topic)) continue;
    const Principals& p = what == Right::Create    ? r.create
                          : what == Right::Publish ? r.publish
                                                   : r.subscribe;
    return in(p, c.uid, c.gid);  // the first rule that names the topic decides
  }
  return false;
}

bool Daemon::shared_with_others(const std::string& topic) const {
  const auto some = [](const Principals& p) {
    return p.anyone || !p.uids.empty() || !p.gids.empty();
  };
  for (const TopicRule& r : config_.rules)
    if (matches(r.pattern, topic))
      return some(r.publish) || some(r.subscribe);  // the first decides
  return false;
}

void Daemon::mark_sharing(const std::string& topic, detail::Region& r) const {
  // Relaxed: before any client of ours is sent the region (the socket
  // message orders it); a producer that mapped it earlier keeps what it read.
  r.header().shared_control.store(shared_with_others(topic) ? 1 : 0, std::memory_order_relaxed);
}

void Daemon::require(const Client& c, const std::string& topic, std::initializer_list<Right> any_of,
                     const std::string& what) const {
  if (std::any_of(any_of.begin(), any_of.end(), [&](Right r) { return allowed(c, topic, r); }))
    return;
  throw Error(ErrorCode::PermissionDenied, "uid " + std::to_string(c.uid) + " may not " + what +
                                               " topic '" + topic +
                                               "'; ask the bus owner for a rule");
}

detail::Descriptors Daemon::region_fds(const Client& c, const std::string& topic,
                                       const detail::Region& r) const {
  detail::Descriptors fds;
  // A region by name (adopted from /dev/shm) is a file without seals: a
  // holder of its descriptor could shrink it under everyone who maps it
  // (issue 14). Only processes that could do as much by name get one.
  // A file topic likewise: a regular file cannot be sealed.
  if (!r.sealed() && c.uid != ::geteuid() && c.uid != 0)
    throw Error(ErrorCode::PermissionDenied,
                "topic '" + topic + "' is the file " + r.where() +
                    ", which cannot be sealed against resizing, so it is served only to uid " +
                    std::to_string(::geteuid()) + " and root; " +
                    (r.storage() == Storage::File
                         ? std::string("run the process as that user, or use a memory topic")
                         : std::string("delete the topic and create it again through shmbusd")));
  const int data =
      allowed(c, topic, Right::Publish) ? ::dup(r.data_fd()) : r.reopen_data_read_only();
  if (data < 0) throw Error(ErrorCode::SystemError, "dup: " + detail::errno_text(errno));
  fds.add(data);
  const int control = ::dup(r.control_fd());
  if (control < 0) throw Error(ErrorCode::SystemError, "dup: " + detail::errno_text(errno));
  fds.add(control);
  return fds;
}

Daemon::TopicEntry& Daemon::find(const std::string& name) {
  auto it = topics_.find(name);
  if (it == topics_.end())
    throw Error(ErrorCode::NotFound, "no topic '" + name + "' on bus '" + config_.bus +
                                         "'; create it first (shmbus topic create " + name + ")");
  return it->second;
}

Error Daemon::damaged_error(const std::string& name, const TopicEntry& t) const {
  return Error(ErrorCode::Corrupt, "topic '" + name + "' on bus '" + config_.bus +
                                       "' is damaged (" + t.damage +
                                       ") and quarantined; delete it and create it again "
                                       "(shmbus topic delete " +
                                       name + ")");
}

TopicStatus Daemon::status_or_damaged(const std::string& name, TopicEntry& t) {
  TopicStatus s;
  // A SIGBUS inside status_of leaks the status it was building (see guarded).
  if (touch(name, t, [&] { s = detail::status_of(name, *t.region); })) {
    s.torn = t.torn;
    return s;
  }
  s = TopicStatus{};
  s.name = name;
  s.options = detail::options_of(*t.region);  // the validated copies, not the mapping
  s.damage = t.damage + "; quarantined: delete it (shmbus topic delete " + name + ")";
  return s;
}

Daemon::Outgoing Daemon::on(Client&, std::uint32_t id, const proto::Hello&) {
  return {reply(proto::HelloReply{config_.bus, static_cast<std::uint32_t>(::getpid())}, id)};
}

Daemon::Outgoing Daemon::on(Client& c, std::uint32_t id, const proto::CreateTopic& m) {
  if (const pid_t owner = reply_topic_pid(m.name); owner != 0 && owner != c.pid)
    throw Error(ErrorCode::PermissionDenied,
                "topic '" + m.name + "' is the name of pid " + std::to_string(owner) +
                    "'s reply topic (Bus::request makes it); a topic named _reply.<pid>.<n> may "
                    "be created only by that pid");
  require(c, m.name, {Right::Create}, "create");
  TopicOptions o = m.options;
  if (reply_topic_pid(m.name) != 0) {
    // A requester's own: it may make it whatever the rules say, so it gets
    // the fixed geometry, and a bounded number of them.
    const auto own = std::count_if(topics_.begin(), topics_.end(), [&](const auto& e) {
      return reply_topic_pid(e.first) == c.pid;
    });
    if (static_cast<std::size_t>(own) >= kMaxReplyTopics)
      throw Error(ErrorCode::ResourceExhausted,
                  "pid " + std::to_string(c.pid) + " has " + std::to_string(own) +
                      " reply topics already (at most " + std::to_string(kMaxReplyTopics) +
                      "): close some Bus objects that made requests");
    o = detail::reply_topic_options();
  }
  const TopicOptions& d = config_.defaults;
  if (o.slot_count == 0) o.slot_count = d.slot_count;
  if (o.slot_size == 0) o.slot_size = d.slot_size;
  if (o.max_producers == 0) o.max_producers = d.max_producers;
  if (o.max_groups == 0) o.max_groups = d.max_groups;
  if (o.max_members == 0) o.max_members = d.max_members;
  o.mode = 0600;  // clients get a descriptor; nobody else may open it
  if (topics_.contains(m.name))
    throw Error(ErrorCode::AlreadyExists, "topic '" + m.name + "' already exists on bus '" +
                                              config_.bus + "'; open it, or delete it first");
  // Sealed memfds: no client can resize them (issue 14); the keeper holds
  // them across a daemon crash. File topics: two files in the data
  // directory, which outlive everything (storage.cpp).
  if (o.storage == Storage::File && reply_topic_pid(m.name) == 0 && c.uid != ::geteuid() &&
      c.uid != 0)
    throw Error(ErrorCode::PermissionDenied,
                "a file topic is served only to shmbusd's own user (uid " +
                    std::to_string(::geteuid()) +
                    ") and root: a regular file cannot be sealed against resizing; create a "
                    "memory topic, or run as that user");
  const bool file = o.storage == Storage::File;
  // Started before the files exist: nothing after them may throw but the map.
  if (file && o.flush_interval.count() > 0) (void)flusher();
  auto region = file ? detail::Region::create_file(data_dir_fd(), data_dir_, m.name, m.name, o)
                     : detail::Region::create_sealed(region_name(config_.bus, m.name), m.name, o);
  // A throw below leaves no topic: a memfd has no name, a file topic's files go.
  struct Undo {
    const Daemon& d;
    const detail::Region* r;
    ~Undo() {
      if (r != nullptr && r->storage() == Storage::File)
        (void)detail::Region::remove_file(d.data_fd_, r->shm_name());
    }
  } undo{*this, region.get()};
  mark_sharing(m.name, *region);
  region->set_lock_patience(kLockPatience);
  // The create right alone gives no descriptor: the creator may neither read
  // nor write what others will publish there.
  detail::Descriptors fds;
  if (allowed(c, m.name, Right::Publish) || allowed(c, m.name, Right::Subscribe)) {
    fds = region_fds(c, m.name, *region);
  }
  undo.r = nullptr;  // created: nothing below throws but the map's allocation
  TopicEntry& t = topics_[m.name] = TopicEntry{region};
  start_mover(m.name, t, false);
  // A keeper that does not take it is replaced by housekeeping, and given
  // every topic then. A file topic needs none.
  if (!file) keeper_.put(region->data_fd(), region->control_fd());
  if (file && o.flush_interval.count() > 0) flusher().add(m.name, region);
  spdlog::info("pid {} uid {} created topic '{}' ({} x {} B, policy {}{})", c.pid, c.uid, m.name,
               o.slot_count, o.slot_size, static_cast<int>(o.policy),
               file ? ", file " + region->where() + ", flush " + flush_name(o.flush_interval)
                    : std::string());
  return {reply(proto::TopicReply{m.name, detail::options_of(*region)}, id), std::move(fds)};
}

Daemon::Outgoing Daemon::on(Client& c, std::uint32_t id, const proto::OpenTopic& m) {
  TopicEntry& t = find(m.name);
  require(c, m.name, {Right::Publish, Right::Subscribe},
          "open (neither publish to nor subscribe to)");
  // Only the size check: a client given a damaged region would fault in it.
  if (!touch(m.name, t, [] {})) throw damaged_error(m.name, t);
  return {reply(proto::TopicReply{m.name, detail::options_of(*t.region)}, id),
          region_fds(c, m.name, *t.region)};
}

Daemon::Outgoing Daemon::on(Client& c, std::uint32_t id, const proto::DeleteTopic& m) {
  require(c, m.name, {Right::Create}, "delete");
  const auto it = topics_.find(m.name);
  const bool adopted = it != topics_.end();
  // A damaged topic has no users worth asking about (none can use it): it is
  // deleted, with or without if_unused.
  if (adopted && m.if_unused && !it->second.damaged) {
    const TopicStatus s = status_or_damaged(m.name, it->second);
    std::uint32_t members = 0;
    for (const GroupStatus& g : s.groups)
      members += g.members;
    // The seat of our own mover of delayed messages does not count.
    const std::uint32_t mover =
        it->second.mover ? it->second.mover->mover->seat() : detail::Mover::kNoSeat;
    std::uint32_t producers = 0;
    for (const ProducerStatus& p : s.producer_seats)
      producers += p.seat != mover || p.pid != static_cast<std::uint32_t>(::getpid()) ? 1 : 0;
    if (producers != 0 || members != 0)
      throw Error(ErrorCode::InUse, "topic '" + m.name + "' has " + std::to_string(producers) +
                                        " producer(s) and " + std::to_string(members) +
                                        " member(s) attached; stop them first, or delete "
                                        "without --if-unused (they are then told)");
  }
  const bool damaged = adopted && it->second.damaged;
  if (adopted) {
    remove_topic(it);
  } else if (!detail::Region::remove(region_name(config_.bus, m.name)) &&
             !(data_fd_ >= 0 && detail::Region::remove_file(data_fd_, m.name))) {
    // (A file topic left unadopted, its files refused at start, likewise.)
    // A region file the daemon did not adopt (stale layout, foreign owner):
    // deleting it is how one gets rid of it.
    find(m.name);  // throws NotFound
  }
  spdlog::info("pid {} deleted {}topic '{}'", c.pid,
               !adopted  ? "the unadopted region of "
               : damaged ? "the damaged "
                         : "",
               m.name);
  return {reply(proto::Ok{}, id)};
}

void Daemon::remove_topic(std::map<std::string, TopicEntry>::iterator it) {
  // Tell everyone who has it mapped before the name goes: waits end, and
  // publishers and (once drained) subscribers get Status::TopicDeleted.
  (void)touch(it->first, it->second, [&] { it->second.region->mark_deleted(); });
  const detail::Region& r = *it->second.region;
  if (flusher_) flusher_->remove(&r);
  if (r.storage() == Storage::File && !r.dir().empty() && data_fd_ >= 0)
    (void)detail::Region::remove_file(data_fd_, r.shm_name());
  else
    (void)detail::Region::remove(region_name(config_.bus, it->first));
  if (r.sealed()) keeper_.drop(r.data_fd());
  topics_.erase(it);
}

Daemon::Outgoing Daemon::on(Client& c, std::uint32_t id, const proto::ListTopics&) {
  // Only the topics this client may use.
  proto::TopicList list;
  for (auto& [name, t] : topics_)
    if (allowed(c, name, Right::Publish) || allowed(c, name, Right::Subscribe) ||
        allowed(c, name, Right::Create))
      list.topics.push_back(status_or_damaged(name, t));
  return {reply(list, id)};
}

Daemon::Outgoing Daemon::on(Client& c, std::uint32_t id, const proto::Describe& m) {
  TopicEntry& t = find(m.name);
  require(c, m.name, {Right::Publish, Right::Subscribe, Right::Create}, "describe");
  TopicStatus s = status_or_damaged(m.name, t);
  if (t.damaged) throw damaged_error(m.name, t);
  return {reply(proto::Description{std::move(s)}, id)};
}

// Moving or removing a group's position is consuming on its behalf: the
// subscribe right, as joining the group would need.
Daemon::Outgoing Daemon::on(Client& c, std::uint32_t id, const proto::DeleteGroup& m) {
  TopicEntry& t = find(m.topic);
  require(c, m.topic, {Right::Subscribe}, "delete a group of");
  if (!touch(m.topic, t, [&] { t.region->delete_group(m.group); })) throw damaged_error(m.topic, t);
  t.stuck.clear();  // group indices may be reused
  spdlog::info("pid {} deleted group '{}' of topic '{}'", c.pid, m.group, m.topic);
  return {reply(proto::Ok{}, id)};
}

Daemon::Outgoing Daemon::on(Client& c, std::uint32_t id, const proto::ResetGroup& m) {
  TopicEntry& t = find(m.topic);
  require(c, m.topic, {Right::Subscribe}, "reset a group of");
  std::uint64_t at = 0;
  if (!touch(m.topic, t, [&] { at = t.region->reset_group(m.group, m.to); }))
    throw damaged_error(m.topic, t);
  spdlog::info("pid {} reset group '{}' of topic '{}' to {}", c.pid, m.group, m.topic, at);
  return {reply(proto::Ok{}, id)};
}

Daemon::Outgoing Daemon::on(Client& c, std::uint32_t id, const proto::AttachProducer& m) {
  return attach(c, id, m.name, true, m.seat, 0);
}

Daemon::Outgoing Daemon::on(Client& c, std::uint32_t id, const proto::AttachMember& m) {
  return attach(c, id, m.name, false, m.group, m.member);
}

Daemon::Outgoing Daemon::attach(Client& c, std::uint32_t id, const std::string& name, bool producer,
                                std::uint32_t a, std::uint32_t b) {
  TopicEntry& t = find(name);
  require(c, name, {producer ? Right::Publish : Right::Subscribe},
          producer ? "publish to" : "subscribe to");
  if (!touch(name, t, [] {})) throw damaged_error(name, t);
  const detail::Region& reg = *t.region;
  const bool in_range =
      producer ? a < reg.max_producers() : a < reg.max_groups() && b < reg.max_members();
  if (!in_range) throw Error(ErrorCode::InvalidArgument, "seat index out of range");
  const Seat seat{name, t.region, producer, a, b};
  if (!seat_held(seat, c.pid))
    throw Error(ErrorCode::PermissionDenied, "that seat belongs to another process");
  const auto same = [&](const Seat& x) {
    return x.region == seat.region && x.producer == producer && x.a == a && x.b == b;
  };
  if (std::none_of(c.seats.begin(), c.seats.end(), same)) {
    // Seats the client has freed itself (a client frees its seats in the
    // region, no request) are forgotten here, with the regions they kept mapped.
    std::erase_if(c.seats, [&](const Seat& x) { return !seat_held(x, c.pid); });
    if (c.seats.size() >= kMaxSeatsPerClient)
      throw Error(ErrorCode::ResourceExhausted,
                  "this connection registered " + std::to_string(kMaxSeatsPerClient) +
                      " seats already; close publishers and subscribers you no longer use");
    c.seats.push_back(seat);
  }
  return {reply(proto::Ok{}, id)};
}

// Component reports: anyone who may connect may report (a report describes
// only the reporter, by the pid and uid of its connection) and list them.
// parse_request has checked names and counts (validate_report).
Daemon::Outgoing Daemon::on(Client& c, std::uint32_t id, const proto::Report& m) {
  const auto same = std::find_if(c.reports.begin(), c.reports.end(),
                                 [&](const ComponentReport& e) { return e.name == m.name; });
  const bool added = same == c.reports.end();
  if (added && c.reports.size() >= kMaxReportsPerConnection)
    throw Error(ErrorCode::ResourceExhausted,
                "this connection (pid " + std::to_string(c.pid) + ") holds " +
                    std::to_string(c.reports.size()) + " component reports, the most one may (" +
                    std::to_string(kMaxReportsPerConnection) +
                    "); report again under a name it holds (that replaces the report), or "
                    "from another Bus");
  if (added && reports_held_ >= kMaxReports)
    throw Error(ErrorCode::ResourceExhausted,
                "shmbusd holds " + std::to_string(reports_held_) +
                    " component reports, the most it keeps (" + std::to_string(kMaxReports) +
                    "); they go when the programs that made them close their Bus or exit "
                    "(shmbus stat lists them)");
  ComponentReport next{
      m.name,
      m.kind,
      static_cast<std::uint32_t>(c.pid),
      static_cast<std::uint32_t>(c.uid),
      static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count()),
      m.counters};
  // The list must go out whole without waiting (kMaxReportBytes); checked
  // for a replacement too, which may be longer than what it replaces.
  const std::size_t size = proto::encoded_size(next);
  const std::size_t was = added ? 0 : proto::encoded_size(*same);
  if (report_bytes_ - was + size > kMaxReportBytes)
    throw Error(ErrorCode::ResourceExhausted,
                "component reports take " + std::to_string(report_bytes_) +
                    " bytes in shmbusd, and this one (" + std::to_string(size) +
                    " bytes) would take them over the " + std::to_string(kMaxReportBytes) +
                    " it keeps (kMaxReportBytes); report fewer or shorter counters, or wait for "
                    "other programs' reports to go (they go when their Bus closes)");
  if (added) {
    spdlog::debug("pid {} uid {} reports component '{}' ({})", c.pid, c.uid, m.name, m.kind);
    c.reports.push_back(std::move(next));  // first: the counts stay right if it throws
    ++reports_held_;
  } else {
    *same = std::move(next);
  }
  report_bytes_ = report_bytes_ - was + size;
  return {reply(proto::Ok{}, id)};
}

Daemon::Outgoing Daemon::on(Client&, std::uint32_t id, const proto::ListReports&) {
  proto::ReportList list;
  list.reports.reserve(reports_held_);
  for (const auto& [fd, client] : clients_)
    list.reports.insert(list.reports.end(), client.reports.begin(), client.reports.end());
  // By name, then pid: the order `shmbus stat` prints (connections have no order).
  std::sort(list.reports.begin(), list.reports.end(),
            [](const ComponentReport& a, const ComponentReport& b) {
              return a.name != b.name ? a.name < b.name : a.pid < b.pid;
            });
  return {reply(list, id)};
}

Daemon::Outgoing Daemon::on(Client& c, std::uint32_t id, const proto::Shutdown&) {
  if (c.uid != 0 && c.uid != ::geteuid())
    throw Error(ErrorCode::PermissionDenied, "only root or the daemon's user may stop it");
  stop();  // run() ends after this round; the reply goes out first
  return {reply(proto::Ok{}, id)};
}

}  // namespace shmbus::daemon
