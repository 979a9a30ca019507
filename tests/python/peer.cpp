// A C++ producer or consumer of checksummed messages, run by the Python interop
// tests against the Python side. The message format (all little endian):
//   u64 index | u32 n | n payload bytes, byte j = (index + j) & 0xff | u32 crc32
// with n = index * 7919 % 241 and the CRC-32 (zlib's) of everything before it.
//
//   shmbus_py_peer produce <socket> <bus> <topic> <count>
//   shmbus_py_peer consume <socket> <bus> <topic> <count>
// The consumer prints "ready" once subscribed, then "ok <count>" when every
// message arrived in order and intact. Exit status 0 on success.
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "shmbus/shmbus.hpp"

namespace {

std::uint32_t crc32(const std::byte* p, std::size_t n) {
  static const auto table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k)
        c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < n; ++i)
    c = table[(c ^ static_cast<std::uint8_t>(p[i])) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

template <class T>
void put(std::byte* p, T v) {
  std::memcpy(p, &v, sizeof v);  // x86-64 and aarch64 Linux are little endian
}
template <class T>
T get(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

std::size_t encode(std::uint64_t index, std::byte* out) {
  const auto n = static_cast<std::uint32_t>(index * 7919 % 241);
  put(out, index);
  put(out + 8, n);
  for (std::uint32_t j = 0; j < n; ++j)
    out[12 + j] = static_cast<std::byte>((index + j) & 0xff);
  put(out + 12 + n, crc32(out, 12 + n));
  return 16 + n;
}

// Empty when `m` is message `index`, else what is wrong.
std::string check(std::uint64_t index, std::span<const std::byte> m) {
  if (m.size() < 16) return "too short (" + std::to_string(m.size()) + " bytes)";
  const auto got = get<std::uint64_t>(m.data());
  if (got != index) return "index " + std::to_string(got) + ", expected " + std::to_string(index);
  const auto n = get<std::uint32_t>(m.data() + 8);
  if (n != index * 7919 % 241 || m.size() != 16 + n) return "bad length";
  if (get<std::uint32_t>(m.data() + 12 + n) != crc32(m.data(), 12 + n)) return "bad checksum";
  for (std::uint32_t j = 0; j < n; ++j)
    if (m[12 + j] != static_cast<std::byte>((index + j) & 0xff)) return "bad payload";
  return {};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: %s produce|consume <socket> <bus> <topic> <count>\n", argv[0]);
    return 2;
  }
  const std::string mode = argv[1];
  shmbus::BusOptions o;
  o.socket_path = argv[2];
  o.bus = argv[3];
  o.autospawn = false;  // the test runs the daemon
  const std::string topic = argv[4];
  const std::uint64_t count = std::stoull(argv[5]);
  try {
    auto bus = shmbus::Bus::connect(o);
    if (mode == "produce") {
      shmbus::PublisherOptions po;
      po.timeout = std::chrono::seconds(20);
      auto pub = bus.publisher(topic, po);
      std::array<std::byte, 256> buf{};
      for (std::uint64_t i = 0; i < count; ++i) {
        if (i % 2 == 0) {
          const std::size_t n = encode(i, buf.data());
          const auto st = pub.publish(std::span<const std::byte>(buf.data(), n));
          if (st != shmbus::Status::Ok) {
            std::fprintf(stderr, "publish %llu: %s\n", static_cast<unsigned long long>(i),
                         shmbus::to_string(st));
            return 1;
          }
        } else {  // every other message through a loan, written in place
          auto loan = pub.loan(256);
          if (!loan) {
            std::fprintf(stderr, "loan %llu: %s\n", static_cast<unsigned long long>(i),
                         shmbus::to_string(loan.status()));
            return 1;
          }
          const std::size_t n = encode(i, loan.data().data());
          if (loan.publish(n) != shmbus::Status::Ok) return 1;
        }
      }
      std::printf("done %llu\n", static_cast<unsigned long long>(count));
      return 0;
    }
    if (mode == "consume") {
      auto sub = bus.subscriber(topic);
      std::printf("ready\n");
      std::fflush(stdout);
      for (std::uint64_t i = 0; i < count; ++i) {
        shmbus::Sample s;
        const auto st = sub->receive(s, std::chrono::seconds(20));
        if (st != shmbus::Status::Ok) {
          std::printf("error at %llu: receive: %s\n", static_cast<unsigned long long>(i),
                      shmbus::to_string(st));
          return 1;
        }
        if (const std::string why = check(i, s.data()); !why.empty()) {
          std::printf("error at %llu: %s\n", static_cast<unsigned long long>(i), why.c_str());
          return 1;
        }
      }
      std::printf("ok %llu lost %llu\n", static_cast<unsigned long long>(count),
                  static_cast<unsigned long long>(sub->lost()));
      return 0;
    }
  } catch (const shmbus::Error& e) {
    std::fprintf(stderr, "shmbus error (%s): %s\n", shmbus::to_string(e.code()), e.what());
    return 1;
  }
  std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
  return 2;
}
