// The control protocol between clients and shmbusd: small, versioned,
// length-prefixed binary frames over a Unix-domain stream socket. Every field
// is decoded with bounds checks; a malformed frame is an error, never a crash.
//
// Frame:  u32 body_length | body
// Body:   u16 version | u16 type | u32 request_id | fields...
// Fields: u8/u16/u32/u64 little-endian; strings as u16 length + bytes.
// A reply carries the request's id; an error reply is type Error with
// (u8 code, string message). Topic regions travel as a file descriptor
// (SCM_RIGHTS) beside the reply that describes them.
//
// One struct per message, each with encode(Writer&) and decode(Reader&); the
// client (src/bus.cpp) and the daemon build and read frames only through
// frame(), parse_request() and decode_reply() below.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "shmbus/error.hpp"
#include "shmbus/options.hpp"
#include "shmbus/report.hpp"
#include "shmbus/topic_status.hpp"

namespace shmbus::detail::proto {

// 2: TopicStatus carries published_bytes and one entry per live producer.
// 3: TopicStatus carries the topic's generation.
// 4: TopicStatus carries abandoned and deleted, published is the topic's
//    total; GroupStatus carries overrun and its members; DeleteTopic carries
//    if_unused; DeleteGroup and ResetGroup.
// 5: a TopicReply carries two descriptors (the data and control segments of
//    layout version 5); TopicStatus carries damage.
// 6: TopicOptions carry partitions and priorities; TopicStatus one entry per
//    partition; GroupStatus its mode and one entry per partition.
// 7: GroupStatus carries filtered (tag filters).
// 8: TopicOptions carry delay_slots; TopicStatus the schedule's counts
//    (scheduled, overdue, next_due_ns, moved, refused).
// 9: GroupStatus carries delivery, max_deliveries, redelivered,
//    dead_lettered, unacked_orphans and orphans (at-least-once groups).
// 10: TopicOptions carry storage and flush_interval; TopicStatus path,
//    flushed_ns and torn (file topics).
// Report, ListReports and ReportList (types 50-52) came without a new
// version: they change no message that was there before, so clients and
// daemons of version 10 that predate them still speak to each other; such a
// daemon answers them "unknown request type 50" (InvalidArgument).
inline constexpr std::uint16_t kVersion = 10;
inline constexpr std::uint32_t kMaxFrame = 64 * 1024;         // bytes of a request body
inline constexpr std::uint32_t kMaxReply = 16 * 1024 * 1024;  // a reply (a long topic list)
inline constexpr std::size_t kMaxString = 1024;
inline constexpr std::size_t kHeaderSize = 8;      // version, type, request id
inline constexpr std::uint32_t kMaxGroups = 4096;  // entries in one TopicStatus list
inline constexpr std::uint32_t kMaxTopics = 1 << 20;
inline constexpr std::uint32_t kMaxPartitions = 1024;  // entries in one partition list
// Component reports (shmbus/report.hpp): counters in one, entries in a list.
inline constexpr std::uint32_t kMaxCounters = kMaxReportCounters;
inline constexpr std::uint32_t kMaxReportEntries = kMaxReports;

enum class Type : std::uint16_t {
  Error = 0,
  Ok = 1,
  Hello = 2,
  HelloReply = 3,
  CreateTopic = 10,
  OpenTopic = 11,
  TopicReply = 12,  // + region fd
  DeleteTopic = 13,
  ListTopics = 14,
  TopicList = 15,
  Describe = 16,
  Description = 17,
  AttachProducer = 20,
  AttachMember = 21,
  // 22 was Detach, never sent: a client frees its seats in the region itself.
  Shutdown = 30,
  DeleteGroup = 40,
  ResetGroup = 41,
  Report = 50,
  ListReports = 51,
  ReportList = 52,
};

[[nodiscard]] bool known_type(std::uint16_t t) noexcept;

// Why a frame was refused (or the daemon's Error reply): a code and a message.
struct Problem {
  ErrorCode code = ErrorCode::InvalidArgument;
  std::string message;
};

// Builds one frame. The request id is given last, by finish(): a client
// numbers a request when it sends it, so a retry is a new finish().
class Writer {
 public:
  explicit Writer(Type type) : type_(type) {}
  Writer& u8(std::uint8_t v) { return number(v); }
  Writer& u16(std::uint16_t v) { return number(v); }
  Writer& u32(std::uint32_t v) { return number(v); }
  Writer& u64(std::uint64_t v) { return number(v); }
  // Longer strings are cut at kMaxString (names are validated shorter).
  Writer& str(std::string_view s);
  // The finished frame: length prefix, header with `request_id`, fields.
  [[nodiscard]] std::vector<std::byte> finish(std::uint32_t request_id) const;

 private:
  // Native byte order: the machine is little-endian (x86-64, aarch64 Linux)
  // and both ends are on one host.
  template <class T>
  Writer& number(T v) {
    raw(&v, sizeof v);
    return *this;
  }
  void raw(const void* p, std::size_t n);
  Type type_;
  std::vector<std::byte> fields_;
};

// Reads a frame body. Every read checks bounds; after the first failure all
// reads return zero values and ok() is false, so a decoder reads all its fields
// and checks once. error() says what failed first.
class Reader {
 public:
  explicit Reader(std::span<const std::byte> body) noexcept;
  [[nodiscard]] std::uint16_t version() const noexcept { return version_; }
  [[nodiscard]] std::uint16_t type() const noexcept { return type_; }
  [[nodiscard]] std::uint32_t request_id() const noexcept { return request_id_; }
  std::uint8_t u8() noexcept { return number<std::uint8_t>(); }
  std::uint16_t u16() noexcept { return number<std::uint16_t>(); }
  std::uint32_t u32() noexcept { return number<std::uint32_t>(); }
  std::uint64_t u64() noexcept { return number<std::uint64_t>(); }
  std::string str() noexcept;
  // A boolean byte: 0 or 1, anything else fails.
  bool flag() noexcept;
  // A count of entries that follow, at most `limit`.
  std::uint32_t count(std::uint32_t limit) noexcept;
  // Fails the read with `why` (the first failure is the one reported).
  void fail(std::string why) noexcept;
  [[nodiscard]] bool ok() const noexcept { return ok_; }
  // True when every byte was consumed and nothing failed.
  [[nodiscard]] bool done() const noexcept { return ok_ && pos_ == body_.size(); }
  [[nodiscard]] const std::string& error() const noexcept { return error_; }

 private:
  // Zero when the field overruns the body (take() zero-fills and fails).
  template <class T>
  T number() noexcept {
    T v;
    take(&v, sizeof v);
    return v;
  }
  bool take(void* out, std::size_t n) noexcept;
  std::span<const std::byte> body_;
  std::size_t pos_ = 0;
  bool ok_ = true;
  std::string error_;
  std::uint16_t version_ = 0, type_ = 0;
  std::uint32_t request_id_ = 0;
};

// ---- messages ----------------------------------------------------------------
// Requests (client -> daemon), then replies. Each names its Type.

struct Hello {
  static constexpr Type kType = Type::Hello;
  std::string client;  // who is asking, for the log
  void encode(Writer& w) const;
  void decode(Reader& r);
};

struct CreateTopic {
  static constexpr Type kType = Type::CreateTopic;
  std::string name;
  TopicOptions options;  // fields left 0 take the daemon's defaults
  void encode(Writer& w) const;
  void decode(Reader& r);
};

struct OpenTopic {
  static constexpr Type kType = Type::OpenTopic;
  std::string name;
  void encode(Writer& w) const;
  void decode(Reader& r);
};

struct DeleteTopic {
  static constexpr Type kType = Type::DeleteTopic;
  std::string name;
  bool if_unused = false;  // refuse (InUse) while producers or members are attached
  void encode(Writer& w) const;
  void decode(Reader& r);
};

struct ListTopics {
  static constexpr Type kType = Type::ListTopics;
  void encode(Writer&) const {}
  void decode(Reader&) {}
};

struct Describe {
  static constexpr Type kType = Type::Describe;
  std::string name;
  void encode(Writer& w) const;
  void decode(Reader& r);
};

// Registers a producer seat the client took in the region, so the daemon
// frees it if the client dies.
struct AttachProducer {
  static constexpr Type kType = Type::AttachProducer;
  std::string name;
  std::uint32_t seat = 0;
  void encode(Writer& w) const;
  void decode(Reader& r);
  bool operator==(const AttachProducer&) const = default;
};

struct AttachMember {
  static constexpr Type kType = Type::AttachMember;
  std::string name;
  std::uint32_t group = 0, member = 0;
  void encode(Writer& w) const;
  void decode(Reader& r);
  bool operator==(const AttachMember&) const = default;
};

// Group administration: refused (InUse) while the group has live members.
struct DeleteGroup {
  static constexpr Type kType = Type::DeleteGroup;
  std::string topic, group;
  void encode(Writer& w) const;
  void decode(Reader& r);
};

struct ResetGroup {
  static constexpr Type kType = Type::ResetGroup;
  std::string topic, group;
  StartPosition to;  // Earliest, Latest or Offset (at most the tail)
  void encode(Writer& w) const;
  void decode(Reader& r);
};

// A component's counters for `shmbus stat` (shmbus/report.hpp): replaces the
// same connection's earlier report of that name. Fields: name, kind,
// u32 count (at most kMaxCounters), count x (string name, u64 value).
struct Report {
  static constexpr Type kType = Type::Report;
  std::string name, kind;
  std::vector<ReportCounter> counters;
  void encode(Writer& w) const;
  void decode(Reader& r);
  // validate_report: parse_request refuses a report it throws for.
  void check() const;
  bool operator==(const Report&) const = default;
};

struct ListReports {
  static constexpr Type kType = Type::ListReports;
  void encode(Writer&) const {}
  void decode(Reader&) {}
};

struct Shutdown {
  static constexpr Type kType = Type::Shutdown;
  void encode(Writer&) const {}
  void decode(Reader&) {}
};

struct Ok {
  static constexpr Type kType = Type::Ok;
  void encode(Writer&) const {}
  void decode(Reader&) {}
};

// Type::Error. A code this build does not know reads as SystemError.
struct ErrorReply {
  static constexpr Type kType = Type::Error;
  ErrorCode code = ErrorCode::SystemError;
  std::string message;
  void encode(Writer& w) const;
  void decode(Reader& r);
};

struct HelloReply {
  static constexpr Type kType = Type::HelloReply;
  std::string bus;
  std::uint32_t pid = 0;  // the daemon's
  void encode(Writer& w) const;
  void decode(Reader& r);
};

// Answers CreateTopic and OpenTopic; the region's descriptor travels beside it.
struct TopicReply {
  static constexpr Type kType = Type::TopicReply;
  std::string name;
  TopicOptions options;  // as created
  void encode(Writer& w) const;
  void decode(Reader& r);
};

struct TopicList {
  static constexpr Type kType = Type::TopicList;
  std::vector<TopicStatus> topics;
  void encode(Writer& w) const;
  void decode(Reader& r);
};

struct Description {
  static constexpr Type kType = Type::Description;
  TopicStatus status;
  void encode(Writer& w) const;
  void decode(Reader& r);
};

// Answers ListReports: u32 count (at most kMaxReportEntries), each entry
// string name, string kind, u32 pid, u32 uid, u64 updated_ns, then its
// counters as in Report. Entries are checked as the daemon checks a Report.
struct ReportList {
  static constexpr Type kType = Type::ReportList;
  std::vector<ComponentReport> reports;
  void encode(Writer& w) const;
  void decode(Reader& r);
};
// The bytes one entry takes in a ReportList (what kMaxReportBytes bounds).
[[nodiscard]] std::size_t encoded_size(const ComponentReport& e) noexcept;

// ---- frames ------------------------------------------------------------------

template <class M>
[[nodiscard]] std::vector<std::byte> frame(const M& m, std::uint32_t request_id) {
  Writer w(M::kType);
  m.encode(w);
  return w.finish(request_id);
}

// A request as the daemon understands it, decoded and checked: every field
// present, nothing left over, topic names (and reports) valid.
using RequestMessage =
    std::variant<Hello, CreateTopic, OpenTopic, DeleteTopic, ListTopics, Describe, AttachProducer,
                 AttachMember, Shutdown, DeleteGroup, ResetGroup, Report, ListReports>;
struct Request {
  std::uint32_t id = 0;  // readable even when the request is refused (0 if not)
  RequestMessage message;
};
// The one decoder the daemon uses (and the fuzz target drives). False with
// `why` set (never empty) when the request is refused.
[[nodiscard]] bool parse_request(std::span<const std::byte> body, Request& out, Problem& why);

// What the client makes of a reply body it expects to be an M: the message,
// or the daemon's Error reply, or why the bytes are neither (SystemError, or
// VersionMismatch for another protocol version).
template <class M>
struct Reply {
  std::uint32_t id = 0;  // the request id the reply carries (0 if unreadable)
  bool header_ok = false;
  std::optional<M> message;
  bool from_daemon = false;  // `problem` is the daemon's Error reply
  Problem problem;
};
template <class M>
[[nodiscard]] Reply<M> decode_reply(std::span<const std::byte> body);

// Splits a byte stream into frames. feed() appends; next() yields a body when
// a whole frame is buffered. A length prefix over the limit is a protocol
// error: the stream cannot be resynchronised.
class FrameBuffer {
 public:
  FrameBuffer() = default;
  explicit FrameBuffer(std::uint32_t max_body) noexcept : max_(max_body) {}
  void feed(const std::byte* p, std::size_t n);
  // nullopt: need more bytes, or bad().
  std::optional<std::vector<std::byte>> next();
  [[nodiscard]] bool bad() const noexcept { return bad_length_ != 0; }
  // The oversized length prefix that made the stream bad.
  [[nodiscard]] std::uint32_t bad_length() const noexcept { return bad_length_; }
  [[nodiscard]] std::size_t buffered() const noexcept { return buf_.size() - pos_; }

 private:
  std::uint32_t max_ = kMaxFrame;
  std::vector<std::byte> buf_;
  std::size_t pos_ = 0;  // start of the first unread frame
  std::uint32_t bad_length_ = 0;
};

}  // namespace shmbus::detail::proto
