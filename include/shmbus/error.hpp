// Errors and statuses. Set-up (control-plane) calls throw shmbus::Error; hot-path
// calls return a [[nodiscard]] Status and never throw or allocate.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace shmbus {

enum class ErrorCode : std::uint8_t {
  InvalidArgument,    // a name, size or option is out of range
  NotFound,           // no topic region by that name
  AlreadyExists,      // a topic region by that name exists already
  PermissionDenied,   // the OS refused access to the region
  VersionMismatch,    // the region was made by another layout version
  Corrupt,            // the region's header does not describe a valid topic
  ResourceExhausted,  // no free producer seat, group or member seat
  SystemError,        // a POSIX call failed; the message carries errno text
  DaemonUnavailable,  // reserved for the control plane (shmbusd)
  InUse,              // refused while producers or members are attached (if_unused, groups)
  Timeout,            // Bus::request: no reply came within the timeout
};

[[nodiscard]] const char* to_string(ErrorCode code) noexcept;

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  [[nodiscard]] ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

// Outcome of a data-plane call.
enum class Status : std::uint8_t {
  Ok,
  WouldBlock,    // try_*: the ring is full (publish) or empty (receive)
  Timeout,       // a blocking call's timeout passed first
  TooLarge,      // the message is larger than the topic's slot size
  TooManyHeld,   // the subscriber holds the maximum number of unreleased samples
  Corrupt,       // a slot's header was invalid; the message was skipped and counted
  Invalid,       // the call was made on an empty/moved-from/published object
  Interrupted,   // the options' Interrupt::check ended the wait; nothing was done
  TopicDeleted,  // the topic was deleted; a subscriber gets it once it drained the rest
  // A publish's partition or priority is not one of the topic's (Route).
  NoSuchPartition,
  // A publish's properties break a limit (properties.hpp): too many, a name
  // empty or too long, or more than kMaxPropertyBytes encoded.
  InvalidProperties,
  // A delayed publish to a topic created without a schedule (delay_slots 0).
  NoSchedule,
  // Sample::reply to a message that is no request: it lacks the reply_to and
  // correlation_id properties of Bus::request (or names no reply topic).
  NotARequest,
  // Sample::nack of a message delivered max_deliveries times: its dead-letter
  // topic ("<topic>.dlq") could not be made or opened (the sample stays held).
  NoDeadLetter,
};

[[nodiscard]] const char* to_string(Status status) noexcept;

}  // namespace shmbus
