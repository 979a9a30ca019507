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
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "shmbus/error.hpp"
#include "shmbus/options.hpp"
#include "shmbus/topic_status.hpp"

namespace shmbus::detail::proto {

// 2: TopicStatus carries published_bytes and one entry per live producer.
inline constexpr std::uint16_t kVersion = 2;
inline constexpr std::uint32_t kMaxFrame = 64 * 1024;         // bytes of a request body
inline constexpr std::uint32_t kMaxReply = 16 * 1024 * 1024;  // a reply (a long topic list)
inline constexpr std::size_t kMaxString = 1024;

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
  Detach = 22,
  Shutdown = 30,
};

[[nodiscard]] bool known_type(std::uint16_t t) noexcept;

class Writer {
 public:
  Writer(Type type, std::uint32_t request_id);
  Writer& u8(std::uint8_t v) { return number(v); }
  Writer& u16(std::uint16_t v) { return number(v); }
  Writer& u32(std::uint32_t v) { return number(v); }
  Writer& u64(std::uint64_t v) { return number(v); }
  Writer& str(std::string_view s);
  // The finished frame: length prefix + body.
  [[nodiscard]] std::vector<std::byte> finish() const;

 private:
  // Native byte order: the machine is little-endian (x86-64, aarch64 Linux)
  // and both ends are on one host.
  template <class T>
  Writer& number(T v) {
    raw(&v, sizeof v);
    return *this;
  }
  void raw(const void* p, std::size_t n);
  std::vector<std::byte> body_;
};

// Reads a frame body. Every read checks bounds; after the first failure all
// reads return zero values and ok() is false, so a decoder reads all its fields
// and checks once.
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

// ---- typed messages ----------------------------------------------------------

struct TopicSpec {
  std::string name;
  TopicOptions options;
};
void encode(Writer& w, const TopicSpec& t);
[[nodiscard]] bool decode(Reader& r, TopicSpec& t);

void encode(Writer& w, const TopicStatus& t);
[[nodiscard]] bool decode(Reader& r, TopicStatus& t);

// A request as the daemon understands it, decoded and checked: every field
// present, nothing left over, names valid. The one decoder the daemon uses
// (and the fuzz target drives).
struct Request {
  Type type = Type::Error;
  std::uint32_t id = 0;
  std::string name;       // topic (or the client's name in Hello)
  TopicSpec spec;         // CreateTopic
  bool producer = false;  // Attach*/Detach: a producer seat (a) or a member seat (a, b)
  std::uint32_t a = 0, b = 0;
  ErrorCode error_code = ErrorCode::InvalidArgument;
  std::string error;  // set when parse_request returns false
};
[[nodiscard]] bool parse_request(std::span<const std::byte> body, Request& out);

// Splits a byte stream into frames. feed() appends; next() yields a body when
// a whole frame is buffered. A length over kMaxFrame is a protocol error.
class FrameBuffer {
 public:
  void feed(const std::byte* p, std::size_t n);
  // nullopt: need more bytes. On an oversized frame sets bad() and returns nullopt.
  std::optional<std::vector<std::byte>> next();
  [[nodiscard]] bool bad() const noexcept { return bad_; }

 private:
  std::vector<std::byte> buf_;
  bool bad_ = false;
};

}  // namespace shmbus::detail::proto
