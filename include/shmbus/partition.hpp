// Keys and partitions (issue 15): the partition a keyed message goes to is
// Kafka's default, so that a key lands on the partition number Kafka's Java
// client and librdkafka would give it (tests/test_partition.cpp checks it
// against librdkafka over many random keys).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace shmbus {

// MurmurHash2, 32-bit, as Kafka uses it (org.apache.kafka.common.utils.Utils
// .murmur2 and librdkafka's rd_murmur2): seed 0x9747b28c, the key's bytes
// read as little-endian 32-bit words.
[[nodiscard]] std::uint32_t murmur2(std::span<const std::byte> key) noexcept;

// Kafka's default partition of a keyed message: murmur2(key) made positive
// (& 0x7fffffff), modulo `partitions`. Throws Error(InvalidArgument) for 0
// partitions.
[[nodiscard]] std::uint32_t partition_for_key(std::span<const std::byte> key,
                                              std::uint32_t partitions);
[[nodiscard]] inline std::uint32_t partition_for_key(std::string_view key,
                                                     std::uint32_t partitions) {
  return partition_for_key(std::as_bytes(std::span(key.data(), key.size())), partitions);
}

}  // namespace shmbus
