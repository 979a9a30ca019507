// Message properties: a few name/value string pairs stored in the slot after
// the message's key (Kafka's headers, RocketMQ's user properties), set on
// publish through Route::properties and read in place through
// Sample::properties(). The property named "tag" is the message's tag
// (RocketMQ's), also kept as a hash in the slot header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <optional>
#include <span>
#include <string_view>

#include "shmbus/error.hpp"

namespace shmbus {

struct Property {
  std::string_view name;   // 1 to kMaxPropertyName bytes
  std::string_view value;  // may be empty
};

// The limits (Status::InvalidProperties beyond them): at most kMaxProperties
// pairs, each name 1 to kMaxPropertyName bytes, and all of them encoded in at
// most kMaxPropertyBytes (4 bytes per pair + its name and value). The key,
// the encoded properties and the payload together must fit the slot
// (Status::TooLarge otherwise).
inline constexpr std::uint32_t kMaxProperties = 16;
inline constexpr std::uint32_t kMaxPropertyName = 255;
inline constexpr std::uint32_t kMaxPropertyBytes = 1024;
static_assert(kMaxPropertyBytes < 32768, "SlotHeader::meta keeps it in 15 bits");

// A read-only view of a message's encoded properties, in its slot (valid as
// long as the Sample it came from). Bytes from shared memory are not trusted:
// iteration stops at the first entry that does not fit, and valid() says
// whether every byte was a well-formed entry.
class Properties {
 public:
  Properties() = default;
  explicit Properties(std::span<const std::byte> encoded) noexcept : bytes_(encoded) {}

  class iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = Property;
    using difference_type = std::ptrdiff_t;
    using pointer = const Property*;
    using reference = const Property&;
    iterator() = default;
    [[nodiscard]] reference operator*() const noexcept { return current_; }
    [[nodiscard]] pointer operator->() const noexcept { return &current_; }
    iterator& operator++() noexcept {
      advance();
      return *this;
    }
    iterator operator++(int) noexcept {
      iterator old = *this;
      advance();
      return old;
    }
    [[nodiscard]] bool operator==(const iterator& o) const noexcept { return at_ == o.at_; }

   private:
    friend class Properties;
    iterator(std::span<const std::byte> bytes, std::size_t at) noexcept : bytes_(bytes), next_(at) {
      advance();
    }
    // Parses the entry at next_ into current_, or ends (at_ = npos).
    void advance() noexcept;
    std::span<const std::byte> bytes_{};
    std::size_t at_ = kEnd;
    std::size_t next_ = 0;
    Property current_{};
    static constexpr std::size_t kEnd = ~std::size_t{0};
  };

  [[nodiscard]] iterator begin() const noexcept { return iterator(bytes_, 0); }
  [[nodiscard]] iterator end() const noexcept { return iterator(); }
  [[nodiscard]] bool empty() const noexcept { return bytes_.empty(); }
  // The number of well-formed pairs.
  [[nodiscard]] std::size_t size() const noexcept;
  // The value of the first property of that name.
  [[nodiscard]] std::optional<std::string_view> get(std::string_view name) const noexcept;
  // The message's tag: its property "tag".
  [[nodiscard]] std::optional<std::string_view> tag() const noexcept { return get("tag"); }
  // True when the bytes are whole entries (a message written by a publisher
  // always is; damage in shared memory may make them not).
  [[nodiscard]] bool valid() const noexcept;
  // The encoded form, as stored in the slot.
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return bytes_; }

 private:
  std::span<const std::byte> bytes_{};
};

// The hash of a tag kept in the slot header (32-bit FNV-1a; never 0, which
// means "no tag").
[[nodiscard]] std::uint32_t tag_hash(std::string_view tag) noexcept;

namespace detail {
// The encoded size of `props` (Ok), or Status::InvalidProperties.
[[nodiscard]] Status encoded_size(std::span<const Property> props, std::uint32_t& size) noexcept;
// Writes `props` (checked by encoded_size) at `out`.
void encode(std::span<const Property> props, std::byte* out) noexcept;
}  // namespace detail

}  // namespace shmbus
