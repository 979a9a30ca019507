// Topic: a named shared-memory region holding one ring. Created and opened
// directly here; the daemon (shmbusd) uses the same calls.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "shmbus/options.hpp"
#include "shmbus/publisher.hpp"
#include "shmbus/subscriber.hpp"

namespace shmbus {

struct TopicInfo {
  std::string name;
  std::uint32_t slot_count = 0;
  std::uint32_t slot_size = 0;
  Policy policy = Policy::Block;
  bool single_producer = false;
  std::uint64_t tail = 0;  // next sequence to be claimed (a guess under concurrency)
  std::uint64_t generation = 0;
};

// Throws shmbus::Error(InvalidArgument) with a message that says what is allowed.
void validate_name(std::string_view what, std::string_view name);
// "shmbus.<bus>.<topic>", the name under /dev/shm.
[[nodiscard]] std::string region_name(std::string_view bus, std::string_view topic);

class Topic {
 public:
  static Topic create(std::string_view name, const TopicOptions& options = {},
                      std::string_view bus = "default");
  static Topic open(std::string_view name, std::string_view bus = "default");
  // Removes the topic's name; processes that have it open keep using it.
  // Returns false if there was no such topic.
  static bool remove(std::string_view name, std::string_view bus = "default");

  [[nodiscard]] Publisher publisher(const PublisherOptions& options = {}) const;
  // Subscribers are not movable (their samples point at them): hold them by pointer.
  [[nodiscard]] std::unique_ptr<Subscriber> subscriber(const SubscriberOptions& options = {}) const;

  [[nodiscard]] TopicInfo info() const;
  [[nodiscard]] const std::string& name() const noexcept { return name_; }

 private:
  friend class Bus;
  Topic(std::string name, std::shared_ptr<detail::Region> region)
      : name_(std::move(name)), region_(std::move(region)) {}
  std::string name_;
  std::shared_ptr<detail::Region> region_;
};

}  // namespace shmbus
