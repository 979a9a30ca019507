// Message properties: the encoding in the slot and its bounds-checked reading.
//
// Each pair is [name length: u16][value length: u16][name][value], the
// lengths little-endian (memcpy'd: the entries are not aligned), one pair
// after the other, nothing between them.
#include "shmbus/properties.hpp"

#include <cstring>

namespace shmbus {
namespace {

constexpr std::size_t kEntryHeader = 4;

std::uint16_t load_u16(const std::byte* p) noexcept {
  const auto lo = static_cast<std::uint16_t>(p[0]);
  const auto hi = static_cast<std::uint16_t>(p[1]);
  return static_cast<std::uint16_t>(lo | hi << 8);
}

void store_u16(std::byte* p, std::size_t v) noexcept {
  p[0] = static_cast<std::byte>(v & 0xff);
  p[1] = static_cast<std::byte>((v >> 8) & 0xff);
}

std::string_view view(std::span<const std::byte> bytes, std::size_t at, std::size_t n) noexcept {
  return {reinterpret_cast<const char*>(bytes.data()) + at, n};
}

}  // namespace

void Properties::iterator::advance() noexcept {
  const std::size_t at = next_;
  if (at + kEntryHeader > bytes_.size()) {
    at_ = kEnd;
    return;
  }
  const std::size_t name = load_u16(bytes_.data() + at);
  const std::size_t value = load_u16(bytes_.data() + at + 2);
  const std::size_t end = at + kEntryHeader + name + value;
  if (name == 0 || name > kMaxPropertyName || end > bytes_.size()) {
    at_ = kEnd;  // damaged: stop here (valid() says so)
    return;
  }
  current_ = {view(bytes_, at + kEntryHeader, name), view(bytes_, at + kEntryHeader + name, value)};
  at_ = at;
  next_ = end;
}

std::size_t Properties::size() const noexcept {
  std::size_t n = 0;
  for (auto it = begin(); it != end(); ++it)
    ++n;
  return n;
}

std::optional<std::string_view> Properties::get(std::string_view name) const noexcept {
  for (const Property& p : *this)
    if (p.name == name) return p.value;
  return std::nullopt;
}

bool Properties::valid() const noexcept {
  std::size_t used = 0, count = 0;
  for (const Property& p : *this) {
    used += kEntryHeader + p.name.size() + p.value.size();
    ++count;
  }
  return used == bytes_.size() && count <= kMaxProperties;
}

std::uint32_t tag_hash(std::string_view tag) noexcept {
  std::uint32_t h = 2166136261u;
  for (const char c : tag) {
    h ^= static_cast<unsigned char>(c);
    h *= 16777619u;
  }
  return h == 0 ? 1 : h;
}

namespace detail {

Status encoded_size(std::span<const Property> props, std::uint32_t& size) noexcept {
  if (props.size() > kMaxProperties) return Status::InvalidProperties;
  std::uint64_t total = 0;
  for (const Property& p : props) {
    if (p.name.empty() || p.name.size() > kMaxPropertyName) return Status::InvalidProperties;
    total += kEntryHeader + p.name.size() + p.value.size();
    if (total > kMaxPropertyBytes) return Status::InvalidProperties;
  }
  size = static_cast<std::uint32_t>(total);
  return Status::Ok;
}

void encode(std::span<const Property> props, std::byte* out) noexcept {
  for (const Property& p : props) {
    store_u16(out, p.name.size());
    store_u16(out + 2, p.value.size());
    out += kEntryHeader;
    std::memcpy(out, p.name.data(), p.name.size());
    out += p.name.size();
    if (!p.value.empty()) std::memcpy(out, p.value.data(), p.value.size());
    out += p.value.size();
  }
}

}  // namespace detail
}  // namespace shmbus
