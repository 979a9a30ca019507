// Kafka's key partitioner (partition.hpp).
#include "shmbus/partition.hpp"

#include <cstring>

#include "shmbus/error.hpp"

namespace shmbus {

std::uint32_t murmur2(std::span<const std::byte> key) noexcept {
  // Unsigned arithmetic throughout: Kafka's Java code works on int with
  // wrap-around and unsigned shifts (>>>), which is this.
  constexpr std::uint32_t kSeed = 0x9747b28c;
  constexpr std::uint32_t kMix = 0x5bd1e995;
  constexpr int kShift = 24;
  const std::size_t n = key.size();
  std::uint32_t h = kSeed ^ static_cast<std::uint32_t>(n);
  const auto byte = [&](std::size_t i) { return static_cast<std::uint32_t>(key[i]); };
  std::size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    std::uint32_t k = byte(i) | byte(i + 1) << 8 | byte(i + 2) << 16 | byte(i + 3) << 24;
    k *= kMix;
    k ^= k >> kShift;
    k *= kMix;
    h *= kMix;
    h ^= k;
  }
  // The last one to three bytes, as the Java switch falls through.
  switch (n - i) {
    case 3:
      h ^= byte(i + 2) << 16;
      [[fallthrough]];
    case 2:
      h ^= byte(i + 1) << 8;
      [[fallthrough]];
    case 1:
      h ^= byte(i);
      h *= kMix;
      break;
    default:
      break;
  }
  h ^= h >> 13;
  h *= kMix;
  h ^= h >> 15;
  return h;
}

std::uint32_t partition_for_key(std::span<const std::byte> key, std::uint32_t partitions) {
  if (partitions == 0)
    throw Error(ErrorCode::InvalidArgument,
                "a topic has at least one partition; partition_for_key was given 0");
  return (murmur2(key) & 0x7fffffffu) % partitions;
}

}  // namespace shmbus
