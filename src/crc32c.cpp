// CRC32C (crc32c.hpp): the SSE4.2 instruction when the CPU has it, chosen
// once at run time, else slicing-by-8 tables built at compile time.
#include "crc32c.hpp"

#include <array>
#include <bit>
#include <cstring>
#include <string_view>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace shmbus::detail {
namespace {

constexpr std::uint32_t kPolynomial = 0x82F63B78;  // Castagnoli, reflected

// kTables[0][b] is the CRC (no inversions) of the byte b; kTables[k][b] that
// of b followed by k zero bytes. Slicing-by-8 looks up each of a word's eight
// bytes in the table for its distance from the word's end and XORs the
// results: eight independent loads per 8 bytes instead of a chain of eight.
using Tables = std::array<std::array<std::uint32_t, 256>, 8>;

constexpr Tables make_tables() noexcept {
  Tables t{};
  for (std::uint32_t b = 0; b < 256; ++b) {
    std::uint32_t c = b;
    // (0 - (c & 1)) is all ones when the low bit is set: the polynomial is
    // XORed in without a branch or a narrowing conversion.
    for (int bit = 0; bit < 8; ++bit)
      c = (c >> 1) ^ ((0u - (c & 1u)) & kPolynomial);
    t[0][b] = c;
  }
  for (std::size_t k = 1; k < t.size(); ++k)
    for (std::size_t b = 0; b < 256; ++b)
      t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xffu];
  return t;
}

// constexpr: the tables are built by the compiler and live in .rodata, so
// there is no start-up work and no initialisation order to get wrong.
alignas(64) constexpr Tables kTables = make_tables();

// The tables checked where they are made: the polynomial's place in the first
// table, and the standard check value computed one byte at a time.
static_assert(kTables[0][128] == kPolynomial);
static_assert([] {
  std::uint32_t c = ~0u;
  for (const char ch : std::string_view("123456789"))
    c = kTables[0][(c ^ static_cast<unsigned char>(ch)) & 0xffu] ^ (c >> 8);
  return ~c;
}() == 0xE3069283u);

// The hardware path runs three CRCs at once over the three stretches of a
// block: the crc32 instruction takes 3 cycles but can start every cycle, so
// one chain leaves two thirds of it idle. A raw CRC (no inversions) is
// linear in its starting value, so going on from a state s over a stretch
// is shift(s) ^ (the stretch's CRC from 0), where shift(s) is s carried over
// kStretch zero bytes; shift is linear too, so four tables of each byte's
// shift compute it. The blocks are joined with it: shift(shift(a) ^ b) ^ c.
constexpr std::size_t kStretch = 256;
using ShiftTables = std::array<std::array<std::uint32_t, 256>, 4>;

constexpr ShiftTables make_shift_tables() noexcept {
  // The shift of each single bit (32 runs over kStretch zero bytes), then
  // every byte value's as the XOR of its bits'.
  std::array<std::uint32_t, 32> bit{};
  for (std::size_t i = 0; i < bit.size(); ++i) {
    std::uint32_t c = 1u << i;
    for (std::size_t k = 0; k < kStretch; ++k)
      c = kTables[0][c & 0xffu] ^ (c >> 8);
    bit[i] = c;
  }
  ShiftTables t{};
  for (std::size_t k = 0; k < t.size(); ++k)
    for (std::uint32_t v = 0; v < 256; ++v)
      for (std::uint32_t j = 0; j < 8; ++j)
        if ((v >> j) & 1u) t[k][v] ^= bit[8 * k + j];
  return t;
}
alignas(64) constexpr ShiftTables kShift = make_shift_tables();

constexpr std::uint32_t shift_stretch(std::uint32_t c) noexcept {
  return kShift[0][c & 0xffu] ^ kShift[1][(c >> 8) & 0xffu] ^ kShift[2][(c >> 16) & 0xffu] ^
         kShift[3][c >> 24];
}

// Eight bytes as a little-endian word, from any address: memcpy is the
// defined way to read an unaligned word and compiles to one load.
inline std::uint64_t load_le64(const unsigned char* p) noexcept {
  std::uint64_t w;
  std::memcpy(&w, p, sizeof w);
  if constexpr (std::endian::native == std::endian::big) w = __builtin_bswap64(w);
  return w;
}

#if defined(__x86_64__)
// Only this function is compiled for SSE4.2, so the rest of the build (and
// its callers) runs on any x86-64; it is called only once crc32c_hardware()
// has seen the CPU support it. The instruction takes unaligned operands, and
// the words are read with memcpy as above. The instruction's CRC is the raw
// register value: the inversions are ours, as in the table path.
// Not instrumented by TSan (nor is crc32c_software): a reader checks a
// slot's checksum before it knows the message is its own (a shared group's
// take before its cursor CAS, a reader racing an overwrite), and throws
// the result away when the slot moved on, as the seqlock copy does
// (copy_racy in subscriber_inl.hpp).
__attribute__((target("sse4.2"), no_sanitize("thread"))) std::uint32_t crc32c_sse42(
    std::uint32_t crc, const unsigned char* p, std::size_t n) noexcept {
  std::uint64_t c = ~crc;
  // Blocks of three stretches, three chains at once (see kStretch).
  for (; n >= 3 * kStretch; p += 3 * kStretch, n -= 3 * kStretch) {
    std::uint64_t a = c, b = 0, d = 0;
    for (std::size_t i = 0; i < kStretch; i += 8) {
      a = _mm_crc32_u64(a, load_le64(p + i));
      b = _mm_crc32_u64(b, load_le64(p + kStretch + i));
      d = _mm_crc32_u64(d, load_le64(p + 2 * kStretch + i));
    }
    c = shift_stretch(shift_stretch(static_cast<std::uint32_t>(a)) ^
                      static_cast<std::uint32_t>(b)) ^
        static_cast<std::uint32_t>(d);
  }
  for (; n >= 8; p += 8, n -= 8)
    c = _mm_crc32_u64(c, load_le64(p));
  auto c32 = static_cast<std::uint32_t>(c);  // the instruction leaves the high half zero
  for (; n > 0; ++p, --n)
    c32 = _mm_crc32_u8(c32, *p);
  return ~c32;
}

bool cpu_has_sse42() noexcept {
  // Needed only before constructors have run (libgcc's own fills the CPU
  // model first otherwise); cheap, and makes a call from another static
  // initialiser safe too.
  __builtin_cpu_init();
  return __builtin_cpu_supports("sse4.2") != 0;
}
#endif

}  // namespace

__attribute__((no_sanitize("thread"))) std::uint32_t crc32c_software(std::uint32_t crc,
                                                                     const void* data,
                                                                     std::size_t n) noexcept {
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint32_t c = ~crc;
  for (; n >= 8; p += 8, n -= 8) {
    // The running CRC folds into the word's first four bytes (reflected: the
    // low end), then each byte is looked up by its distance from the end.
    const std::uint64_t w = load_le64(p) ^ c;
    c = kTables[7][w & 0xffu] ^ kTables[6][(w >> 8) & 0xffu] ^ kTables[5][(w >> 16) & 0xffu] ^
        kTables[4][(w >> 24) & 0xffu] ^ kTables[3][(w >> 32) & 0xffu] ^
        kTables[2][(w >> 40) & 0xffu] ^ kTables[1][(w >> 48) & 0xffu] ^ kTables[0][w >> 56];
  }
  for (; n > 0; ++p, --n)
    c = kTables[0][(c ^ *p) & 0xffu] ^ (c >> 8);
  return ~c;
}

bool crc32c_hardware() noexcept {
#if defined(__x86_64__)
  // A function-local static: its initialiser runs once (other threads that
  // arrive meanwhile wait), and each later call reads the guard with acquire
  // ordering, which pairs with the release that publishes the initialised
  // value; so every caller sees the one answer, and the CPU probe (which
  // writes libgcc's unsynchronised CPU-model globals) never runs concurrently.
  static const bool has_sse42 = cpu_has_sse42();
  return has_sse42;
#else
  return false;
#endif
}

std::uint32_t crc32c(std::uint32_t crc, const void* data, std::size_t n) noexcept {
#if defined(__x86_64__)
  if (crc32c_hardware()) return crc32c_sse42(crc, static_cast<const unsigned char*>(data), n);
#endif
  return crc32c_software(crc, data, n);
}

}  // namespace shmbus::detail
