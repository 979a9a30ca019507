#include "shmbus/topic.hpp"

#include "region.hpp"

namespace shmbus {

void validate_name(std::string_view what, std::string_view name) {
  const auto fail = [&](const std::string& why) {
    throw Error(ErrorCode::InvalidArgument,
                std::string(what) + " name '" + std::string(name) + "' " + why + "; use 1 to " +
                    std::to_string(detail::kNameMax) + " characters from A-Z a-z 0-9 . _ -");
  };
  if (name.empty()) fail("is empty");
  if (name.size() > detail::kNameMax) fail("is too long (" + std::to_string(name.size()) + ")");
  for (const char ch : name) {
    const auto c = static_cast<unsigned char>(ch);
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (ok) continue;
    if (c == '/') fail("contains '/'");
    if (c < 0x20 || c >= 0x7f) fail("contains a non-printable byte");
    fail(std::string("contains '") + ch + "'");
  }
  if (name == "." || name == "..") fail("is reserved");
  // A bus name is part of every region name (shmbus.<bus>.<topic>): a '.' in it
  // would let one bus's names be read as another's.
  if (what == "bus" && name.find('.') != std::string_view::npos)
    throw Error(
        ErrorCode::InvalidArgument,
        "bus name '" + std::string(name) + "' contains '.'; use A-Z a-z 0-9 _ - for bus names");
}

std::string region_name(std::string_view bus, std::string_view topic) {
  validate_name("bus", bus);
  validate_name("topic", topic);
  return "shmbus." + std::string(bus) + "." + std::string(topic);
}

Topic Topic::create(std::string_view name, const TopicOptions& options, std::string_view bus) {
  const std::string shm = region_name(bus, name);
  return Topic(std::string(name), detail::Region::create(shm, name, options));
}

Topic Topic::open(std::string_view name, std::string_view bus) {
  const std::string shm = region_name(bus, name);
  return Topic(std::string(name), detail::Region::open(shm));
}

bool Topic::remove(std::string_view name, std::string_view bus) {
  return detail::Region::remove(region_name(bus, name));
}

Publisher Topic::publisher(const PublisherOptions& options) const {
  return Publisher(region_, options);
}

std::unique_ptr<Subscriber> Topic::subscriber(const SubscriberOptions& options) const {
  return std::unique_ptr<Subscriber>(new Subscriber(region_, options));
}

TopicInfo Topic::info() const {
  const detail::TopicHeader& h = region_->header();
  TopicInfo i;
  i.name = name_;
  i.slot_count = static_cast<std::uint32_t>(region_->slot_count());
  i.slot_size = region_->slot_size();
  i.policy = region_->policy();
  i.single_producer = region_->single_producer();
  i.tail = h.tail.load(std::memory_order_relaxed);  // relaxed: a snapshot
  i.generation = h.generation;
  return i;
}

}  // namespace shmbus
