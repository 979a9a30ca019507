#include "protocol.hpp"

#include <algorithm>
#include <cstring>

#include "shmbus/topic.hpp"

namespace shmbus::detail::proto {

bool known_type(std::uint16_t t) noexcept {
  switch (static_cast<Type>(t)) {
    case Type::Error:
    case Type::Ok:
    case Type::Hello:
    case Type::HelloReply:
    case Type::CreateTopic:
    case Type::OpenTopic:
    case Type::TopicReply:
    case Type::DeleteTopic:
    case Type::ListTopics:
    case Type::TopicList:
    case Type::Describe:
    case Type::Description:
    case Type::AttachProducer:
    case Type::AttachMember:
    case Type::Shutdown:
    case Type::DeleteGroup:
    case Type::ResetGroup:
    case Type::Report:
    case Type::ListReports:
    case Type::ReportList:
      return true;
  }
  return false;
}

// ---- Writer / Reader ---------------------------------------------------------

void Writer::raw(const void* p, std::size_t n) {
  const auto* b = static_cast<const std::byte*>(p);
  fields_.insert(fields_.end(), b, b + n);
}

Writer& Writer::str(std::string_view s) {
  const std::size_t n = std::min(s.size(), kMaxString);
  u16(static_cast<std::uint16_t>(n));
  raw(s.data(), n);
  return *this;
}

std::vector<std::byte> Writer::finish(std::uint32_t request_id) const {
  const auto length = static_cast<std::uint32_t>(kHeaderSize + fields_.size());
  const std::uint16_t version = kVersion;
  const auto type = static_cast<std::uint16_t>(type_);
  std::vector<std::byte> out(4 + length);
  std::byte* p = out.data();
  std::memcpy(p, &length, 4);
  std::memcpy(p + 4, &version, 2);
  std::memcpy(p + 6, &type, 2);
  std::memcpy(p + 8, &request_id, 4);
  if (!fields_.empty()) std::memcpy(p + 12, fields_.data(), fields_.size());
  return out;
}

Reader::Reader(std::span<const std::byte> body) noexcept : body_(body) {
  version_ = u16();
  type_ = u16();
  request_id_ = u32();
  if (!ok_) error_ = "frame shorter than its 8-byte header";
}

void Reader::fail(std::string why) noexcept {
  if (ok_) error_ = std::move(why);
  ok_ = false;
}

bool Reader::take(void* out, std::size_t n) noexcept {
  if (!ok_ || body_.size() - pos_ < n) {
    fail("frame truncated at byte " + std::to_string(pos_));
    std::memset(out, 0, n);
    return false;
  }
  std::memcpy(out, body_.data() + pos_, n);
  pos_ += n;
  return true;
}

std::string Reader::str() noexcept {
  const std::uint16_t n = u16();
  if (!ok_) return {};
  if (n > kMaxString) {
    fail("string of " + std::to_string(n) + " bytes is over the " + std::to_string(kMaxString) +
         "-byte limit");
    return {};
  }
  if (body_.size() - pos_ < n) {
    fail("string of " + std::to_string(n) + " bytes overruns the frame");
    return {};
  }
  std::string s(reinterpret_cast<const char*>(body_.data() + pos_), n);
  pos_ += n;
  return s;
}

bool Reader::flag() noexcept {
  const std::uint8_t v = u8();
  if (v > 1) fail("flag byte " + std::to_string(v) + " is neither 0 nor 1");
  return v == 1;
}

std::uint32_t Reader::count(std::uint32_t limit) noexcept {
  const std::uint32_t n = u32();
  if (n > limit) {
    fail("count " + std::to_string(n) + " is over the limit of " + std::to_string(limit));
    return 0;
  }
  return n;
}

// ---- shared field groups -----------------------------------------------------

namespace {

void put_spec(Writer& w, const std::string& name, const TopicOptions& o) {
  w.str(name)
      .u32(o.slot_count)
      .u32(o.slot_size)
      .u8(static_cast<std::uint8_t>(o.policy))
      .u8(o.single_producer ? 1 : 0)
      .u32(o.max_producers)
      .u32(o.max_groups)
      .u32(o.max_members)
      .u32(o.mode)
      .u32(o.partitions)
      .u32(o.priorities)
      .u32(o.delay_slots)
      .u8(static_cast<std::uint8_t>(o.storage))
      .u32(static_cast<std::uint32_t>(o.flush_interval.count()));
}

void get_spec(Reader& r, std::string& name, TopicOptions& o) {
  name = r.str();
  o.slot_count = r.u32();
  o.slot_size = r.u32();
  o.policy = static_cast<Policy>(r.u8());
  o.single_producer = r.flag();
  o.max_producers = r.u32();
  o.max_groups = r.u32();
  o.max_members = r.u32();
  o.mode = r.u32();
  o.partitions = r.u32();
  o.priorities = r.u32();
  o.delay_slots = r.u32();
  // Checked by whoever uses them (validate_options): any value reads back.
  o.storage = static_cast<Storage>(r.u8());
  o.flush_interval = std::chrono::milliseconds(r.u32());
}

void put_group(Writer& w, const GroupStatus& g) {
  w.str(g.name).u32(g.members).u8(g.durable ? 1 : 0).u64(g.position).u64(g.lag).u64(g.lost);
  w.u64(g.overrun).u32(static_cast<std::uint32_t>(g.member_seats.size()));
  for (const MemberStatus& m : g.member_seats)
    w.u32(m.seat).u32(m.pid).u64(m.session).u64(m.held).u64(m.received);
  w.u8(static_cast<std::uint8_t>(g.mode)).u32(static_cast<std::uint32_t>(g.partitions.size()));
  for (const GroupPartitionStatus& p : g.partitions)
    w.u64(p.position).u64(p.lag).u32(p.owner_pid).u32(static_cast<std::uint32_t>(p.target_seat));
  w.u64(g.filtered).u8(static_cast<std::uint8_t>(g.delivery)).u32(g.max_deliveries);
  w.u64(g.redelivered).u64(g.dead_lettered).u64(g.unacked_orphans).u32(g.orphans);
}

void get_group(Reader& r, GroupStatus& g) {
  g.name = r.str();
  g.members = r.u32();
  g.durable = r.flag();
  g.position = r.u64();
  g.lag = r.u64();
  g.lost = r.u64();
  g.overrun = r.u64();
  const std::uint32_t n = r.count(kMaxGroups);
  g.member_seats.clear();
  for (std::uint32_t i = 0; i < n && r.ok(); ++i) {
    MemberStatus m;
    m.seat = r.u32();
    m.pid = r.u32();
    m.session = r.u64();
    m.held = r.u64();
    m.received = r.u64();
    g.member_seats.push_back(m);
  }
  const std::uint8_t mode = r.u8();
  if (mode > static_cast<std::uint8_t>(GroupMode::Partitioned))
    r.fail("group mode " + std::to_string(mode) + " is not shared (0) or partitioned (1)");
  g.mode = static_cast<GroupMode>(mode);
  const std::uint32_t np = r.count(kMaxPartitions);
  g.partitions.clear();
  for (std::uint32_t i = 0; i < np && r.ok(); ++i) {
    GroupPartitionStatus p;
    p.position = r.u64();
    p.lag = r.u64();
    p.owner_pid = r.u32();
    p.target_seat = static_cast<std::int32_t>(r.u32());
    g.partitions.push_back(p);
  }
  g.filtered = r.u64();
  const std::uint8_t delivery = r.u8();
  if (delivery > static_cast<std::uint8_t>(Delivery::AtLeastOnce))
    r.fail("delivery " + std::to_string(delivery) +
           " is not at_most_once (0) or at_least_once (1)");
  g.delivery = static_cast<Delivery>(delivery);
  g.max_deliveries = r.u32();
  g.redelivered = r.u64();
  g.dead_lettered = r.u64();
  g.unacked_orphans = r.u64();
  g.orphans = r.u32();
}

void put_status(Writer& w, const TopicStatus& t) {
  put_spec(w, t.name, t.options);
  w.u64(t.tail).u32(t.producers).u64(t.published).u32(static_cast<std::uint32_t>(t.groups.size()));
  for (const GroupStatus& g : t.groups)
    put_group(w, g);
  w.u64(t.published_bytes).u32(static_cast<std::uint32_t>(t.producer_seats.size()));
  for (const ProducerStatus& p : t.producer_seats)
    w.u32(p.seat).u32(p.pid).u64(p.session).u64(p.published).u64(p.published_bytes);
  w.u64(t.generation).u64(t.abandoned).u8(t.deleted ? 1 : 0).str(t.damage);
  w.u32(static_cast<std::uint32_t>(t.partitions.size()));
  for (const PartitionStatus& p : t.partitions)
    w.u64(p.tail).u64(p.abandoned);
  w.u64(t.scheduled).u64(t.overdue).u64(t.next_due_ns).u64(t.moved).u64(t.refused);
  w.str(t.path).u64(t.flushed_ns).u64(t.torn);
}

void get_status(Reader& r, TopicStatus& t) {
  get_spec(r, t.name, t.options);
  t.tail = r.u64();
  t.producers = r.u32();
  t.published = r.u64();
  const std::uint32_t n = r.count(kMaxGroups);
  t.groups.clear();
  for (std::uint32_t i = 0; i < n && r.ok(); ++i) {
    GroupStatus g;
    get_group(r, g);
    t.groups.push_back(std::move(g));
  }
  t.published_bytes = r.u64();
  const std::uint32_t np = r.count(kMaxGroups);
  t.producer_seats.clear();
  for (std::uint32_t i = 0; i < np && r.ok(); ++i) {
    ProducerStatus p;
    p.seat = r.u32();
    p.pid = r.u32();
    p.session = r.u64();
    p.published = r.u64();
    p.published_bytes = r.u64();
    t.producer_seats.push_back(p);
  }
  t.generation = r.u64();
  t.abandoned = r.u64();
  t.deleted = r.flag();
  t.damage = r.str();
  const std::uint32_t nparts = r.count(kMaxPartitions);
  t.partitions.clear();
  for (std::uint32_t i = 0; i < nparts && r.ok(); ++i) {
    PartitionStatus p;
    p.tail = r.u64();
    p.abandoned = r.u64();
    t.partitions.push_back(p);
  }
  t.scheduled = r.u64();
  t.overdue = r.u64();
  t.next_due_ns = r.u64();
  t.moved = r.u64();
  t.refused = r.u64();
  t.path = r.str();
  t.flushed_ns = r.u64();
  t.torn = r.u64();
}

void put_counters(Writer& w, const std::vector<ReportCounter>& counters) {
  w.u32(static_cast<std::uint32_t>(counters.size()));
  for (const ReportCounter& c : counters)
    w.str(c.name).u64(c.value);
}

void get_counters(Reader& r, std::vector<ReportCounter>& counters) {
  const std::uint32_t n = r.count(kMaxCounters);
  counters.clear();
  for (std::uint32_t i = 0; i < n && r.ok(); ++i) {
    ReportCounter c;
    c.name = r.str();
    c.value = r.u64();
    counters.push_back(std::move(c));
  }
}

}  // namespace

// ---- messages ----------------------------------------------------------------

void Hello::encode(Writer& w) const {
  w.str(client);
}
void Hello::decode(Reader& r) {
  client = r.str();
}

void CreateTopic::encode(Writer& w) const {
  put_spec(w, name, options);
}
void CreateTopic::decode(Reader& r) {
  get_spec(r, name, options);
}

void OpenTopic::encode(Writer& w) const {
  w.str(name);
}
void OpenTopic::decode(Reader& r) {
  name = r.str();
}

void DeleteTopic::encode(Writer& w) const {
  w.str(name).u8(if_unused ? 1 : 0);
}
void DeleteTopic::decode(Reader& r) {
  name = r.str();
  if_unused = r.flag();
}

void DeleteGroup::encode(Writer& w) const {
  w.str(topic).str(group);
}
void DeleteGroup::decode(Reader& r) {
  topic = r.str();
  group = r.str();
}

void ResetGroup::encode(Writer& w) const {
  w.str(topic).str(group).u8(static_cast<std::uint8_t>(to.from)).u64(to.offset);
}
void ResetGroup::decode(Reader& r) {
  topic = r.str();
  group = r.str();
  const std::uint8_t from = r.u8();
  const std::uint64_t offset = r.u64();
  // An unknown start is not guessed at: it becomes an offset past any tail,
  // which the daemon refuses.
  if (from > static_cast<std::uint8_t>(StartFrom::Offset))
    to = {StartFrom::Offset, ~std::uint64_t{0}};
  else
    to = {static_cast<StartFrom>(from), offset};
}

void Describe::encode(Writer& w) const {
  w.str(name);
}
void Describe::decode(Reader& r) {
  name = r.str();
}

void AttachProducer::encode(Writer& w) const {
  w.str(name).u32(seat);
}
void AttachProducer::decode(Reader& r) {
  name = r.str();
  seat = r.u32();
}

void AttachMember::encode(Writer& w) const {
  w.str(name).u32(group).u32(member);
}
void AttachMember::decode(Reader& r) {
  name = r.str();
  group = r.u32();
  member = r.u32();
}

void Report::encode(Writer& w) const {
  w.str(name).str(kind);
  put_counters(w, counters);
}
void Report::decode(Reader& r) {
  name = r.str();
  kind = r.str();
  get_counters(r, counters);
}
void Report::check() const {
  validate_report(name, kind, counters);
}

void ReportList::encode(Writer& w) const {
  w.u32(static_cast<std::uint32_t>(reports.size()));
  for (const ComponentReport& e : reports) {
    w.str(e.name).str(e.kind).u32(e.pid).u32(e.uid).u64(e.updated_ns);
    put_counters(w, e.counters);
  }
}
std::size_t encoded_size(const ComponentReport& e) noexcept {
  // Strings as the Writer puts them: u16 length + bytes, cut at kMaxString.
  const auto str = [](const std::string& s) { return 2 + std::min(s.size(), kMaxString); };
  std::size_t n = str(e.name) + str(e.kind) + 4 + 4 + 8 + 4;
  for (const ReportCounter& c : e.counters)
    n += str(c.name) + 8;
  return n;
}

void ReportList::decode(Reader& r) {
  const std::uint32_t n = r.count(kMaxReportEntries);
  reports.clear();
  for (std::uint32_t i = 0; i < n && r.ok(); ++i) {
    ComponentReport& e = reports.emplace_back();
    e.name = r.str();
    e.kind = r.str();
    e.pid = r.u32();
    e.uid = r.u32();
    e.updated_ns = r.u64();
    get_counters(r, e.counters);
    if (!r.ok()) break;
    // What the daemon refuses in a Report is not printed from its reply
    // either (names go to terminals and into JSON keys).
    try {
      validate_report(e.name, e.kind, e.counters);
    } catch (const Error& bad) {
      r.fail("report " + std::to_string(i) + ": " + bad.what());
    }
  }
}

void ErrorReply::encode(Writer& w) const {
  w.u8(static_cast<std::uint8_t>(code)).str(message);
}
void ErrorReply::decode(Reader& r) {
  const std::uint8_t c = r.u8();
  code = c <= static_cast<std::uint8_t>(ErrorCode::Timeout) ? static_cast<ErrorCode>(c)
                                                            : ErrorCode::SystemError;
  message = r.str();
}

void HelloReply::encode(Writer& w) const {
  w.str(bus).u32(pid);
}
void HelloReply::decode(Reader& r) {
  bus = r.str();
  pid = r.u32();
}

void TopicReply::encode(Writer& w) const {
  put_spec(w, name, options);
}
void TopicReply::decode(Reader& r) {
  get_spec(r, name, options);
}

void TopicList::encode(Writer& w) const {
  w.u32(static_cast<std::uint32_t>(topics.size()));
  for (const TopicStatus& t : topics)
    put_status(w, t);
}
void TopicList::decode(Reader& r) {
  const std::uint32_t n = r.count(kMaxTopics);
  topics.clear();
  for (std::uint32_t i = 0; i < n && r.ok(); ++i)
    get_status(r, topics.emplace_back());
}

void Description::encode(Writer& w) const {
  put_status(w, status);
}
void Description::decode(Reader& r) {
  get_status(r, status);
}

// ---- requests and replies ----------------------------------------------------

namespace {

std::string version_problem(std::uint16_t v) {
  return "protocol version " + std::to_string(v) + " is not spoken here (this side speaks " +
         std::to_string(kVersion) + "); use a matching shmbus build";
}

// Decodes the fields of an M and checks that nothing is left over.
template <class M>
bool decode_fields(Reader& r, M& m, std::string& why) {
  m.decode(r);
  if (r.done()) return true;
  why = "type " + std::to_string(r.type()) +
        (r.ok() ? " has trailing bytes" : " is malformed: " + r.error());
  return false;
}

template <class M>
bool parse_as(Reader& r, Request& q, Problem& why) {
  M m;
  if (!decode_fields(r, m, why.message)) {
    why.code = ErrorCode::InvalidArgument;
    why.message = "request " + why.message;
    return false;
  }
  try {
    if constexpr (requires { m.check(); })
      m.check();
    else if constexpr (requires { m.name; })
      validate_name("topic", m.name);
  } catch (const Error& e) {
    why = {e.code(), e.what()};
    return false;
  }
  q.message = std::move(m);
  return true;
}

}  // namespace

bool parse_request(std::span<const std::byte> body, Request& q, Problem& why) {
  Reader r(body);
  q.id = r.request_id();
  why = {ErrorCode::InvalidArgument, {}};
  if (!r.ok()) {
    why.message = r.error();
    return false;
  }
  if (r.version() != kVersion) {
    why = {ErrorCode::VersionMismatch, version_problem(r.version())};
    return false;
  }
  if (!known_type(r.type())) {
    why.message = "unknown request type " + std::to_string(r.type());
    return false;
  }
  switch (static_cast<Type>(r.type())) {
    case Type::Hello:
      return parse_as<Hello>(r, q, why);
    case Type::CreateTopic:
      return parse_as<CreateTopic>(r, q, why);
    case Type::OpenTopic:
      return parse_as<OpenTopic>(r, q, why);
    case Type::DeleteTopic:
      return parse_as<DeleteTopic>(r, q, why);
    case Type::ListTopics:
      return parse_as<ListTopics>(r, q, why);
    case Type::Describe:
      return parse_as<Describe>(r, q, why);
    case Type::AttachProducer:
      return parse_as<AttachProducer>(r, q, why);
    case Type::AttachMember:
      return parse_as<AttachMember>(r, q, why);
    case Type::Shutdown:
      return parse_as<Shutdown>(r, q, why);
    case Type::DeleteGroup:
      return parse_as<DeleteGroup>(r, q, why);
    case Type::ResetGroup:
      return parse_as<ResetGroup>(r, q, why);
    case Type::Report:
      return parse_as<Report>(r, q, why);
    case Type::ListReports:
      return parse_as<ListReports>(r, q, why);
    default:
      why.message = "request type " + std::to_string(r.type()) + " is a reply, not a request";
      return false;
  }
}

template <class M>
Reply<M> decode_reply(std::span<const std::byte> body) {
  Reply<M> out;
  Reader r(body);
  const auto bad = [&](ErrorCode code, std::string msg) {
    out.problem = {code, std::move(msg)};
    return out;
  };
  if (!r.ok()) return bad(ErrorCode::SystemError, "shmbusd sent a " + r.error());
  out.id = r.request_id();
  out.header_ok = true;
  const std::uint16_t type = r.type();
  std::string why;
  // An Error reply is read whatever its version: a daemon of another version
  // says so in one, and that message is the useful one.
  if (type == static_cast<std::uint16_t>(Type::Error)) {
    ErrorReply e;
    if (!decode_fields(r, e, why))
      return bad(ErrorCode::SystemError, "shmbusd sent a bad error reply: " + why);
    out.from_daemon = true;
    if (e.message.empty()) e.message = "shmbusd refused the request without saying why";
    return bad(e.code, std::move(e.message));
  }
  if (r.version() != kVersion) return bad(ErrorCode::VersionMismatch, version_problem(r.version()));
  if (type != static_cast<std::uint16_t>(M::kType))
    return bad(ErrorCode::SystemError, "shmbusd sent an unexpected reply (type " +
                                           std::to_string(type) + ", expected " +
                                           std::to_string(static_cast<int>(M::kType)) + ")");
  M m;
  if (!decode_fields(r, m, why))
    return bad(ErrorCode::SystemError, "shmbusd sent a bad reply: " + why);
  out.message = std::move(m);
  return out;
}

template Reply<Ok> decode_reply<Ok>(std::span<const std::byte>);
template Reply<HelloReply> decode_reply<HelloReply>(std::span<const std::byte>);
template Reply<TopicReply> decode_reply<TopicReply>(std::span<const std::byte>);
template Reply<TopicList> decode_reply<TopicList>(std::span<const std::byte>);
template Reply<Description> decode_reply<Description>(std::span<const std::byte>);
template Reply<ReportList> decode_reply<ReportList>(std::span<const std::byte>);

// ---- FrameBuffer -------------------------------------------------------------

void FrameBuffer::feed(const std::byte* p, std::size_t n) {
  if (pos_ > 0 && pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  }
  buf_.insert(buf_.end(), p, p + n);
}

std::optional<std::vector<std::byte>> FrameBuffer::next() {
  if (bad() || buffered() < 4) return std::nullopt;
  std::uint32_t n = 0;
  std::memcpy(&n, buf_.data() + pos_, 4);
  if (n > max_) {
    bad_length_ = n;
    return std::nullopt;
  }
  if (buffered() - 4 < n) {
    // Wait for the rest; drop the frames already read so the buffer holds
    // at most one partial frame plus what the last feed() brought.
    buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(pos_));
    pos_ = 0;
    return std::nullopt;
  }
  const auto first = buf_.begin() + static_cast<std::ptrdiff_t>(pos_ + 4);
  std::vector<std::byte> body(first, first + n);
  pos_ += 4 + std::size_t{n};
  return body;
}

}  // namespace shmbus::detail::proto
