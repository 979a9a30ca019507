// CRC32C (Castagnoli; reflected polynomial 0x82F63B78), the checksum of
// iSCSI, ext4 and Kafka's record batches. Used for the checksums of messages
// in file-backed topics: a producer writes a message's CRC before the slot's
// stamp, so a reader (or recovery after a reboot) can tell a message that
// reached the file whole from a torn one. Internal: not installed.
//
// One entry point, chosen once at run time: the SSE4.2 crc32 instruction
// where the CPU has it (x86-64 only), else a portable slicing-by-8 table.
// Both give the same value for every input.
#pragma once

#include <cstddef>
#include <cstdint>

namespace shmbus::detail {

// Continues a running CRC over n bytes at data (any alignment; data may be
// null when n is 0). The pre- and post-inversion happen inside each call, as
// in zlib's crc32(), so start with 0 and chain:
//   crc32c(crc32c(0, a, na), b, nb) == crc32c(0, a||b, na + nb)
// crc32c(0, "123456789", 9) == 0xE3069283.
[[nodiscard]] std::uint32_t crc32c(std::uint32_t crc, const void* data, std::size_t n) noexcept;

// True when crc32c() uses the SSE4.2 instruction.
[[nodiscard]] bool crc32c_hardware() noexcept;

// The table path alone, whatever the CPU: for tests, which compare it with
// crc32c() on a CPU where that is the hardware path. Same contract as crc32c().
[[nodiscard]] std::uint32_t crc32c_software(std::uint32_t crc, const void* data,
                                            std::size_t n) noexcept;

}  // namespace shmbus::detail
