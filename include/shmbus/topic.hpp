// Topic: a named shared-memory region holding one ring. A Topic made by a Bus
// (create_topic, open_topic) registers the seats it hands out with shmbusd,
// which frees them if this process dies; one made here directly (create,
// open: tests, tools, the daemon itself) hands out unregistered seats.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "shmbus/options.hpp"
#include "shmbus/publisher.hpp"
#include "shmbus/subscriber.hpp"
#include "shmbus/topic_status.hpp"

namespace shmbus {

namespace detail {
class Connection;  // src/bus.cpp: the daemon connection of a Bus
}  // namespace detail

// Throws shmbus::Error(InvalidArgument) with a message that says what is allowed.
void validate_name(std::string_view what, std::string_view name);
// "shmbus.<bus>.<topic>": the name under /dev/shm of a topic made without a daemon
// (Topic::create), and of the sealed memfds of one shmbusd made.
[[nodiscard]] std::string region_name(std::string_view bus, std::string_view topic);

class Topic {
 public:
  static Topic create(std::string_view name, const TopicOptions& options = {},
                      std::string_view bus = "default");
  static Topic open(std::string_view name, std::string_view bus = "default");
  // Removes the topic's name; processes that have it open keep using it.
  // Returns false if there was no such topic.
  static bool remove(std::string_view name, std::string_view bus = "default");

  // A producer seat (registered with shmbusd when the topic came from a Bus).
  // A topic this uid created but may neither publish to nor subscribe to (the
  // create right alone) has no region here: publisher, subscriber and status
  // throw PermissionDenied.
  [[nodiscard]] Publisher publisher(const PublisherOptions& options = {}) const;
  // A member seat, likewise. Subscribers are not movable (their samples point
  // at them): hold them by pointer.
  [[nodiscard]] std::unique_ptr<Subscriber> subscriber(const SubscriberOptions& options = {}) const;

  // The topic's geometry and policy, as its region records them (mode: as
  // created, when known here; a topic from a Bus reports 0600).
  [[nodiscard]] TopicOptions options() const;
  // What Bus::describe reports, read from the region by this process: the
  // tail, the live producers and their counters, the groups (a snapshot).
  [[nodiscard]] TopicStatus status() const;
  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  // A file topic (Storage::File): returns once everything published to it
  // before the call is on disk (msync), and records when (TopicStatus::
  // flushed_ns). Nothing to do for a memory topic. Throws Error(SystemError).
  void flush() const;

 private:
  friend class Bus;
  Topic(std::string name, std::shared_ptr<detail::Region> region,
        std::shared_ptr<detail::Connection> bus = nullptr)
      : name_(std::move(name)), region_(std::move(region)), bus_(std::move(bus)) {}
  // A topic this process created with the create right only: no region (the
  // daemon sent none); options() answers, the rest is PermissionDenied.
  Topic(std::string name, const TopicOptions& options, std::shared_ptr<detail::Connection> bus)
      : name_(std::move(name)), bus_(std::move(bus)), created_options_(options) {}
  // The region, or PermissionDenied for a topic created with the create right only.
  [[nodiscard]] const std::shared_ptr<detail::Region>& region(const char* doing) const;
  std::string name_;
  std::shared_ptr<detail::Region> region_;
  std::shared_ptr<detail::Connection> bus_;  // null: seats are not registered
  TopicOptions created_options_;             // used only without a region
};

}  // namespace shmbus
