// CRC32C (src/crc32c.hpp), the checksum of messages in file-backed topics:
// the published check values, the hardware path against the table path at
// every length and alignment, chaining, and a single flipped bit.
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <random>
#include <vector>

#include "crc32c.hpp"

namespace shmbus::test {
namespace {

using detail::crc32c;
using detail::crc32c_software;

// Both paths, so each expectation holds for the one crc32c() chose and for
// the table path whatever the CPU.
std::array<std::uint32_t, 2> both(const void* data, std::size_t n) {
  return {crc32c(0, data, n), crc32c_software(0, data, n)};
}

TEST(Crc32c, CheckValue) {
  for (const std::uint32_t c : both("123456789", 9))
    EXPECT_EQ(c, 0xE3069283u);
  // The empty input leaves the running value alone.
  for (const std::uint32_t c : both(nullptr, 0))
    EXPECT_EQ(c, 0u);
  EXPECT_EQ(crc32c(0x12345678u, nullptr, 0), 0x12345678u);
}

// RFC 3720 (iSCSI), appendix B.4.
TEST(Crc32c, Rfc3720Vectors) {
  std::array<unsigned char, 32> zeros{}, ones{}, up{}, down{};
  ones.fill(0xff);
  for (std::size_t i = 0; i < 32; ++i) {
    up[i] = static_cast<unsigned char>(i);
    down[i] = static_cast<unsigned char>(31 - i);
  }
  for (const std::uint32_t c : both(zeros.data(), 32))
    EXPECT_EQ(c, 0x8A9136AAu);
  for (const std::uint32_t c : both(ones.data(), 32))
    EXPECT_EQ(c, 0x62A8AB43u);
  for (const std::uint32_t c : both(up.data(), 32))
    EXPECT_EQ(c, 0x46DD794Eu);
  for (const std::uint32_t c : both(down.data(), 32))
    EXPECT_EQ(c, 0x113FDB5Cu);
}

// Every length through several 8-byte words and a tail, from every start
// within a word: the word loop, the byte tail and unaligned loads all checked.
TEST(Crc32c, HardwareMatchesSoftware) {
  if (!detail::crc32c_hardware())
    GTEST_SKIP() << "no SSE4.2 here: crc32c() is the table path itself";
  constexpr std::size_t kMaxLength = 1000, kOffsets = 8;
  std::mt19937 rng(20240917);
  std::vector<unsigned char> buf(kMaxLength + kOffsets);
  for (auto& b : buf)
    b = static_cast<unsigned char>(rng());
  std::size_t mismatches = 0;
  for (std::size_t offset = 0; offset < kOffsets; ++offset) {
    for (std::size_t n = 0; n <= kMaxLength; ++n) {
      const unsigned char* p = buf.data() + offset;
      // A non-zero running value too, so the inversions are checked as well.
      const auto seed = static_cast<std::uint32_t>(rng());
      if (crc32c(0, p, n) != crc32c_software(0, p, n) ||
          crc32c(seed, p, n) != crc32c_software(seed, p, n)) {
        if (mismatches++ == 0) ADD_FAILURE() << "first mismatch: offset " << offset << ", n " << n;
      }
    }
  }
  EXPECT_EQ(mismatches, 0u);
}

// The hardware path's three-chain blocks (768 bytes) and their joins: every
// length up to six blocks and more, at three offsets, against the tables.
TEST(Crc32c, HardwareBlocksMatchSoftware) {
  if (!detail::crc32c_hardware())
    GTEST_SKIP() << "no SSE4.2 here: crc32c() is the table path itself";
  constexpr std::size_t kMaxLength = 6 * 768 + 100;
  std::mt19937 rng(99);
  std::vector<unsigned char> buf(kMaxLength + 8);
  for (auto& b : buf)
    b = static_cast<unsigned char>(rng());
  std::size_t mismatches = 0;
  for (const std::size_t offset : {0u, 3u, 7u})
    for (std::size_t n = 700; n <= kMaxLength; ++n) {
      const unsigned char* p = buf.data() + offset;
      if (crc32c(0x1234u, p, n) != crc32c_software(0x1234u, p, n) && mismatches++ == 0)
        ADD_FAILURE() << "first mismatch: offset " << offset << ", n " << n;
    }
  EXPECT_EQ(mismatches, 0u);
}

TEST(Crc32c, ChainingEqualsOnePass) {
  std::mt19937 rng(7);
  std::vector<unsigned char> buf(300);
  for (auto& b : buf)
    b = static_cast<unsigned char>(rng());
  const std::uint32_t whole = crc32c(0, buf.data(), buf.size());
  EXPECT_EQ(crc32c_software(0, buf.data(), buf.size()), whole);
  for (std::size_t split = 0; split <= buf.size(); ++split) {
    const std::size_t rest = buf.size() - split;
    EXPECT_EQ(crc32c(crc32c(0, buf.data(), split), buf.data() + split, rest), whole) << split;
    EXPECT_EQ(crc32c_software(crc32c_software(0, buf.data(), split), buf.data() + split, rest),
              whole)
        << split;
  }
  // Three pieces, and chaining across the two paths.
  EXPECT_EQ(
      crc32c(crc32c_software(crc32c(0, buf.data(), 5), buf.data() + 5, 100), buf.data() + 105, 195),
      whole);
}

// A CRC detects every single-bit error; the sizes are a message's header, a
// small payload and one that ends in a tail.
TEST(Crc32c, FlippedBitChangesCrc) {
  std::mt19937 rng(11);
  for (const std::size_t n : {1u, 8u, 64u, 77u}) {
    std::vector<unsigned char> buf(n);
    for (auto& b : buf)
      b = static_cast<unsigned char>(rng());
    const auto good = both(buf.data(), n);
    for (std::size_t bit = 0; bit < n * 8; ++bit) {
      buf[bit / 8] ^= static_cast<unsigned char>(1u << (bit % 8));
      const auto bad = both(buf.data(), n);
      EXPECT_NE(bad[0], good[0]) << "n " << n << ", bit " << bit;
      EXPECT_NE(bad[1], good[1]) << "n " << n << ", bit " << bit;
      buf[bit / 8] ^= static_cast<unsigned char>(1u << (bit % 8));
    }
  }
}

}  // namespace
}  // namespace shmbus::test
