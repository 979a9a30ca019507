#include "protocol.hpp"

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
    case Type::Detach:
    case Type::Shutdown:
      return true;
  }
  return false;
}

Writer::Writer(Type type, std::uint32_t request_id) {
  u16(kVersion);
  u16(static_cast<std::uint16_t>(type));
  u32(request_id);
}

void Writer::raw(const void* p, std::size_t n) {
  const auto* b = static_cast<const std::byte*>(p);
  body_.insert(body_.end(), b, b + n);
}
Writer& Writer::str(std::string_view s) {
  const std::size_t n = std::min(s.size(), kMaxString);
  u16(static_cast<std::uint16_t>(n));
  raw(s.data(), n);
  return *this;
}

std::vector<std::byte> Writer::finish() const {
  std::vector<std::byte> out(4 + body_.size());
  const auto n = static_cast<std::uint32_t>(body_.size());
  std::memcpy(out.data(), &n, 4);
  std::memcpy(out.data() + 4, body_.data(), body_.size());
  return out;
}

Reader::Reader(std::span<const std::byte> body) noexcept : body_(body) {
  version_ = u16();
  type_ = u16();
  request_id_ = u32();
  if (!ok_) error_ = "frame shorter than its 8-byte header";
}

bool Reader::take(void* out, std::size_t n) noexcept {
  if (!ok_ || body_.size() - pos_ < n) {
    if (ok_) error_ = "frame truncated at byte " + std::to_string(pos_);
    ok_ = false;
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
  if (n > kMaxString || body_.size() - pos_ < n) {
    error_ = "string of " + std::to_string(n) + " bytes overruns the frame";
    ok_ = false;
    return {};
  }
  std::string s(reinterpret_cast<const char*>(body_.data() + pos_), n);
  pos_ += n;
  return s;
}

void encode(Writer& w, const TopicSpec& t) {
  const TopicOptions& o = t.options;
  w.str(t.name)
      .u32(o.slot_count)
      .u32(o.slot_size)
      .u8(static_cast<std::uint8_t>(o.policy))
      .u8(o.single_producer ? 1 : 0)
      .u32(o.max_producers)
      .u32(o.max_groups)
      .u32(o.max_members)
      .u32(o.mode);
}

bool decode(Reader& r, TopicSpec& t) {
  TopicOptions& o = t.options;
  t.name = r.str();
  o.slot_count = r.u32();
  o.slot_size = r.u32();
  o.policy = static_cast<Policy>(r.u8());
  const std::uint8_t sp = r.u8();
  o.single_producer = sp != 0;
  o.max_producers = r.u32();
  o.max_groups = r.u32();
  o.max_members = r.u32();
  o.mode = r.u32();
  return r.ok() && sp <= 1;
}

void encode(Writer& w, const TopicStatus& t) {
  encode(w, TopicSpec{t.name, t.options});
  w.u64(t.tail).u32(t.producers).u64(t.published).u32(static_cast<std::uint32_t>(t.groups.size()));
  for (const GroupStatus& g : t.groups)
    w.str(g.name).u32(g.members).u8(g.durable ? 1 : 0).u64(g.position).u64(g.lag).u64(g.lost);
  w.u64(t.published_bytes).u32(static_cast<std::uint32_t>(t.producer_seats.size()));
  for (const ProducerStatus& p : t.producer_seats)
    w.u32(p.seat).u32(p.pid).u64(p.session).u64(p.published).u64(p.published_bytes);
}

bool decode(Reader& r, TopicStatus& t) {
  TopicSpec spec;
  if (!decode(r, spec)) return false;
  t.name = std::move(spec.name);
  t.options = spec.options;
  t.tail = r.u64();
  t.producers = r.u32();
  t.published = r.u64();
  const std::uint32_t n = r.u32();
  if (!r.ok() || n > 4096) return false;
  t.groups.clear();
  for (std::uint32_t i = 0; i < n && r.ok(); ++i) {
    GroupStatus g;
    g.name = r.str();
    g.members = r.u32();
    g.durable = r.u8() != 0;
    g.position = r.u64();
    g.lag = r.u64();
    g.lost = r.u64();
    t.groups.push_back(std::move(g));
  }
  t.published_bytes = r.u64();
  const std::uint32_t np = r.u32();
  if (!r.ok() || np > 4096) return false;
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
  return r.ok();
}

bool parse_request(std::span<const std::byte> body, Request& q) {
  Reader r(body);
  q.id = r.request_id();
  const auto fail = [&](ErrorCode code, std::string msg) {
    q.error_code = code;
    q.error = std::move(msg);
    return false;
  };
  if (!r.ok()) return fail(ErrorCode::InvalidArgument, r.error());
  if (r.version() != kVersion)
    return fail(ErrorCode::VersionMismatch, "protocol version " + std::to_string(r.version()) +
                                                " is not spoken here (shmbusd speaks " +
                                                std::to_string(kVersion) +
                                                "); use a matching shmbus build");
  if (!known_type(r.type()))
    return fail(ErrorCode::InvalidArgument, "unknown request type " + std::to_string(r.type()));
  q.type = static_cast<Type>(r.type());
  bool named = true;  // the request carries a topic name to validate
  switch (q.type) {
    case Type::Hello:
      q.name = r.str();
      named = false;
      break;
    case Type::CreateTopic:
      if (!decode(r, q.spec)) return fail(ErrorCode::InvalidArgument, "malformed create request");
      q.name = q.spec.name;
      break;
    case Type::OpenTopic:
    case Type::DeleteTopic:
    case Type::Describe:
      q.name = r.str();
      break;
    case Type::ListTopics:
    case Type::Shutdown:
      named = false;
      break;
    case Type::AttachProducer:
      q.name = r.str();
      q.producer = true;
      q.a = r.u32();
      break;
    case Type::AttachMember:
      q.name = r.str();
      q.a = r.u32();
      q.b = r.u32();
      break;
    case Type::Detach:
      q.name = r.str();
      q.producer = r.u8() != 0;
      q.a = r.u32();
      q.b = r.u32();
      break;
    default:
      return fail(ErrorCode::InvalidArgument,
                  "request type " + std::to_string(r.type()) + " is a reply, not a request");
  }
  if (!r.done())
    return fail(ErrorCode::InvalidArgument,
                r.ok() ? "request type " + std::to_string(r.type()) + " has trailing bytes"
                       : "malformed request type " + std::to_string(r.type()) + ": " + r.error());
  if (named) {
    try {
      validate_name("topic", q.name);
    } catch (const Error& e) {
      return fail(e.code(), e.what());
    }
  }
  return true;
}

void FrameBuffer::feed(const std::byte* p, std::size_t n) {
  buf_.insert(buf_.end(), p, p + n);
}

std::optional<std::vector<std::byte>> FrameBuffer::next() {
  if (bad_ || buf_.size() < 4) return std::nullopt;
  std::uint32_t n = 0;
  std::memcpy(&n, buf_.data(), 4);
  if (n > kMaxFrame) {
    bad_ = true;
    return std::nullopt;
  }
  if (buf_.size() < 4 + std::size_t{n}) return std::nullopt;
  std::vector<std::byte> body(buf_.begin() + 4, buf_.begin() + 4 + n);
  buf_.erase(buf_.begin(), buf_.begin() + 4 + n);
  return body;
}

}  // namespace shmbus::detail::proto
