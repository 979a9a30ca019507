// shmbus-bridge: hands chosen topics to NATS JetStream and takes others back
// (docs/bridge.md). Out: a member of a durable at-least-once group publishes
// each message to JetStream with a Nats-Msg-Id and releases it only once
// JetStream acknowledged it. In: a durable pull consumer whose messages are
// published into a local topic and acknowledged only after that publish.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "shmbus/bus.hpp"
#include "shmbus/properties.hpp"

namespace shmbus::bridge {

// ---- configuration ------------------------------------------------------------

struct OutRoute {
  std::string topic;    // the local topic (must exist)
  std::string subject;  // the JetStream subject (no wildcards)
  std::string group = "bridge-out";
  std::string stream;  // empty: stream_name_for(subject)
  int replicas = 1;    // of a stream the bridge creates
  std::chrono::seconds duplicate_window{120};
  std::uint32_t max_in_flight = 4096;  // messages published, not yet acknowledged
};

struct InRoute {
  std::string subject;        // JetStream subject (a filter: wildcards allowed)
  std::string topic;          // the local topic (must exist)
  std::string durable;        // the durable pull consumer's name
  std::string stream;         // empty: stream_name_for(subject)
  int replicas = 1;           // of a stream the bridge creates
  std::uint32_t batch = 256;  // messages per pull
};

struct Config {
  std::vector<std::string> servers;  // nats://host:port, one or more of a cluster
  std::chrono::milliseconds connect_timeout{10'000};
  std::chrono::milliseconds status_interval{5'000};  // 0: no status lines
  std::vector<OutRoute> outs;
  std::vector<InRoute> ins;
};

// Parses `text` (from `origin`, for messages). Throws Error(InvalidArgument)
// naming the key and what to write instead: malformed TOML, an unknown key,
// a missing or ill-typed value, a subject or name JetStream would refuse.
[[nodiscard]] Config parse_config(const std::string& text, const std::string& origin);
// Reads and parses a file; Error(NotFound) when it cannot be read.
[[nodiscard]] Config load_config(const std::string& path);

// The stream a subject maps to when none is named: every character JetStream
// refuses in a stream name ('.', '*', '>', whitespace, '/', '\\') becomes '_'.
[[nodiscard]] std::string stream_name_for(const std::string& subject);

// ---- the message id and headers (headers.cpp) ------------------------------------

// "<bus>/<topic>/<generation hex>/<partition>/<offset>": the same message,
// re-sent after a crash, has the same id and JetStream drops it. The prefix
// is everything up to and including the third '/', the same for a route.
[[nodiscard]] std::string message_id_prefix(const std::string& bus, const std::string& topic,
                                            std::uint64_t generation);
[[nodiscard]] std::string message_id(const std::string& bus, const std::string& topic,
                                     std::uint64_t generation, std::uint32_t partition,
                                     std::uint64_t offset);
// Appends "<partition><separator><offset>": with '/' the tail of a message id
// (after its prefix), with '.' that of the out bridge's reply subjects.
void append_position(std::string& out, std::uint32_t partition, char separator,
                     std::uint64_t offset);
// Reads partition and offset back from an id (false when it is not one).
[[nodiscard]] bool parse_message_id(std::string_view id, std::uint32_t& partition,
                                    std::uint64_t& offset) noexcept;

// A JetStream publish acknowledgement, read from the server's JSON reply:
// {"stream":"S","seq":N[,"duplicate":true]} when stored, or
// {"error":{"code":C,"err_code":E,"description":"..."}}. Anything else (not
// an object, no seq, over kMaxPubAck bytes) is a failure with err_code 0.
struct PubAck {
  bool ok = false;
  bool duplicate = false;  // dropped by the duplicate window: stored before
  std::uint64_t seq = 0;   // the stream sequence when ok
  int err_code = 0;        // JetStream's err_code when it sent an error
};
inline constexpr std::size_t kMaxPubAck = 4096;
[[nodiscard]] PubAck parse_pub_ack(std::string_view json) noexcept;
// The out bridge's reply subjects end in "<partition>.<offset>": the ack
// names the message it is for without a lookup. false when malformed.
[[nodiscard]] bool parse_ack_token(std::string_view token, std::uint32_t& partition,
                                   std::uint64_t& offset) noexcept;

// Percent-encoding of bytes for a header value: everything but
// [A-Za-z0-9-_.~] as %XX. decode returns nullopt for a malformed input.
[[nodiscard]] std::string percent_encode(std::span<const std::byte> bytes);
[[nodiscard]] std::optional<std::string> percent_decode(std::string_view text);
// Properties as one header value: name=value pairs joined by '&', each side
// percent-encoded. decode returns nullopt when malformed or over the limits.
[[nodiscard]] std::string encode_properties(const Properties& props);
[[nodiscard]] std::optional<std::vector<std::pair<std::string, std::string>>> decode_properties(
    std::string_view text);

// Header names (docs/bridge.md).
inline constexpr const char* kHeaderKey = "Shmbus-Key";
inline constexpr const char* kHeaderPartition = "Shmbus-Partition";
inline constexpr const char* kHeaderPriority = "Shmbus-Priority";
inline constexpr const char* kHeaderTimestamp = "Shmbus-Timestamp";  // system-clock ns
inline constexpr const char* kHeaderProducer = "Shmbus-Producer";
inline constexpr const char* kHeaderDue = "Shmbus-Due";  // system-clock ns
inline constexpr const char* kHeaderProperties = "Shmbus-Properties";
// The property an [[in]] adds to each message it publishes locally:
// "stream/sequence", how a restarted bridge finds where it was.
inline constexpr const char* kMarkProperty = "nats.seq";

// ---- the bridge -------------------------------------------------------------------

// Counters of one route, read by the status line. Relaxed everywhere: they
// are statistics, no decision is made on them.
struct RouteCounters {
  std::atomic<std::uint64_t> forwarded{0};    // out: sent to JetStream; in: published locally
  std::atomic<std::uint64_t> acked{0};        // out: JetStream acks; in: acks sent to JetStream
  std::atomic<std::uint64_t> redelivered{0};  // deliveries that were not the first
  std::atomic<std::int64_t> in_flight{0};     // taken, not yet acknowledged
  std::atomic<std::uint64_t> duplicates{0};   // out: JetStream said duplicate; in: skipped
  std::atomic<std::uint64_t> resent{0};       // out: sent again after an error
  std::atomic<std::uint64_t> refused{0};      // in: the local topic refused it (logged)
};

// Exit codes of shmbus-bridge (and what run() throws as Error codes map to).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;    // a runtime failure after start
inline constexpr int kExitConfig = 2;    // bad flags or configuration
inline constexpr int kExitNats = 3;      // no NATS server answered in connect_timeout
inline constexpr int kExitLocalBus = 4;  // no shmbusd, or a configured topic is unknown

class Bridge {
 public:
  Bridge(Config config, BusOptions bus);
  ~Bridge();
  Bridge(const Bridge&) = delete;
  Bridge& operator=(const Bridge&) = delete;

  // Checks what can be checked without moving messages: the local topics
  // exist, and a NATS server answers. Returns the exit code, with `why` set.
  int check(std::string& why);
  // Runs until stop(): returns the exit code (kExitNats / kExitLocalBus
  // when starting failed, with the reason logged).
  int run();
  // From any thread or a signal handler (an atomic store).
  void stop() noexcept;

  // One line of counters (the status line).
  [[nodiscard]] std::string status() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace shmbus::bridge
