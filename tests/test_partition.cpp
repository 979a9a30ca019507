// Issue 15: the partition of a keyed message is Kafka's default, checked
// against Debian's librdkafka (rd_kafka_msg_partitioner_murmur2) over many
// random keys, so a key lands on the partition number Kafka's clients give it.
#include <gtest/gtest.h>
#include <librdkafka/rdkafka.h>

#include <climits>
#include <random>
#include <string>
#include <vector>

#include "shmbus/error.hpp"
#include "shmbus/partition.hpp"

namespace shmbus::test {
namespace {

std::int32_t kafka_partition(const std::vector<std::byte>& key, std::int32_t partitions) {
  // A key pointer that is never null, so librdkafka hashes an empty key too
  // (a null key picks a random partition).
  static const std::byte none{};
  return rd_kafka_msg_partitioner_murmur2(nullptr, key.empty() ? &none : key.data(), key.size(),
                                          partitions, nullptr, nullptr);
}

TEST(Partitioner, AgreesWithLibrdkafkaOverRandomKeys) {
  std::mt19937_64 rng(0x5eed);  // a fixed seed: the same keys on every run
  std::uniform_int_distribution<int> len(0, 80), byte(0, 255), count(1, 512);
  int checked = 0;
  for (int i = 0; i < 20000; ++i) {
    std::vector<std::byte> key(static_cast<std::size_t>(len(rng)));
    for (auto& b : key)
      b = static_cast<std::byte>(byte(rng));
    const auto n = static_cast<std::uint32_t>(count(rng));
    ASSERT_EQ(partition_for_key(key, n),
              static_cast<std::uint32_t>(kafka_partition(key, static_cast<std::int32_t>(n))))
        << "key of " << key.size() << " bytes, " << n << " partitions";
    // The hash itself, made positive (modulo INT32_MAX leaves all but one value).
    const std::uint32_t positive = murmur2(key) & 0x7fffffffu;
    ASSERT_EQ(positive % INT32_MAX, static_cast<std::uint32_t>(kafka_partition(key, INT32_MAX)));
    ++checked;
  }
  EXPECT_EQ(checked, 20000);
}

TEST(Partitioner, TextKeysEveryTailLengthAndOnePartition) {
  // Every length mod 4 (the hash's tail cases), as strings users send.
  for (const std::string k :
       {"", "a", "ab", "abc", "abcd", "user-7", "order:12345", "a-little-bit-longer-string"}) {
    const std::vector<std::byte> bytes(reinterpret_cast<const std::byte*>(k.data()),
                                       reinterpret_cast<const std::byte*>(k.data()) + k.size());
    EXPECT_EQ(partition_for_key(k, 16), static_cast<std::uint32_t>(kafka_partition(bytes, 16)))
        << k;
    EXPECT_EQ(partition_for_key(k, 1), 0u) << k;
  }
}

TEST(Partitioner, ZeroPartitionsIsRefusedWithAReason) {
  try {
    (void)partition_for_key("k", 0);
    FAIL() << "accepted 0 partitions";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("at least one partition"), std::string::npos);
  }
}

}  // namespace
}  // namespace shmbus::test
