#include "shmbus/error.hpp"

namespace shmbus {

const char* to_string(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::InvalidArgument:
      return "InvalidArgument";
    case ErrorCode::NotFound:
      return "NotFound";
    case ErrorCode::AlreadyExists:
      return "AlreadyExists";
    case ErrorCode::PermissionDenied:
      return "PermissionDenied";
    case ErrorCode::VersionMismatch:
      return "VersionMismatch";
    case ErrorCode::Corrupt:
      return "Corrupt";
    case ErrorCode::ResourceExhausted:
      return "ResourceExhausted";
    case ErrorCode::SystemError:
      return "SystemError";
    case ErrorCode::InUse:
      return "InUse";
    case ErrorCode::Timeout:
      return "Timeout";
    case ErrorCode::DaemonUnavailable:
      return "DaemonUnavailable";
  }
  return "Unknown";
}

const char* to_string(Status status) noexcept {
  switch (status) {
    case Status::Ok:
      return "Ok";
    case Status::WouldBlock:
      return "WouldBlock";
    case Status::Timeout:
      return "Timeout";
    case Status::TooLarge:
      return "TooLarge";
    case Status::TooManyHeld:
      return "TooManyHeld";
    case Status::Corrupt:
      return "Corrupt";
    case Status::Invalid:
      return "Invalid";
    case Status::Interrupted:
      return "Interrupted";
    case Status::TopicDeleted:
      return "TopicDeleted";
    case Status::NoSuchPartition:
      return "NoSuchPartition";
    case Status::InvalidProperties:
      return "InvalidProperties";
    case Status::NoSchedule:
      return "NoSchedule";
    case Status::NotARequest:
      return "NotARequest";
    case Status::NoDeadLetter:
      return "NoDeadLetter";
  }
  return "Unknown";
}

}  // namespace shmbus
