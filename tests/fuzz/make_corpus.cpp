// Writes the fuzz target's seed corpus (tests/fuzz/corpus) with the current
// encoders, so that the seeds carry the protocol version the decoders speak
// and reach past the version check. Run after a protocol change:
//   build/release/tests/fuzz/shmbus-fuzz-corpus tests/fuzz/corpus
// The first byte of a seed picks the fuzz target's path (fuzz_request.cpp).
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "protocol.hpp"

using namespace shmbus;
using namespace shmbus::detail::proto;

namespace {

using Bytes = std::vector<std::byte>;

Bytes operator+(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

Bytes selector(std::uint8_t s) {
  return {static_cast<std::byte>(s)};
}

// A whole frame (length prefix and body), as the daemon's stream carries it.
template <class M>
Bytes framed(const M& m, std::uint32_t id = 1) {
  return frame(m, id);
}

// A frame's body without its length prefix: what the reply decoders take.
template <class M>
Bytes body(const M& m, std::uint32_t id = 1) {
  Bytes f = frame(m, id);
  return Bytes(f.begin() + 4, f.end());
}

TopicStatus some_status() {
  TopicStatus t;
  t.name = "orders";
  t.options.slot_count = 8;
  t.options.slot_size = 64;
  t.tail = 12;
  t.producers = 1;
  t.published = 11;
  t.abandoned = 1;
  GroupStatus g;
  g.name = "billing";
  g.members = 1;
  g.position = 4;
  g.lag = 8;
  g.member_seats.push_back({0, 4242, 7, 4, 3});
  t.groups.push_back(g);
  t.producer_seats.push_back({0, 4243, 8, 11, 704});
  return t;
}

ComponentReport some_report(std::uint32_t pid) {
  return {"bridge-1",
          "bridge",
          pid,
          1000,
          1'700'000'000'000'000'000ULL,
          {{"forwarded", 12}, {"in_flight", 2}}};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR (e.g. tests/fuzz/corpus)\n", argv[0]);
    return 64;
  }
  const std::string dir = argv[1];
  TopicOptions o;
  o.slot_count = 1024;
  o.slot_size = 256;
  Bytes hello = framed(Hello{"client"});
  Bytes unknown = framed(Describe{"orders"});
  unknown[6] = std::byte{22};  // the deleted Detach type (u16 at body offset 2)
  unknown[7] = std::byte{0};
  Bytes oversized = hello;
  for (std::byte b : {std::byte{0xff}, std::byte{0xff}, std::byte{0xff}, std::byte{0x7f}})
    oversized.push_back(b);  // then a length far over the limit
  Bytes old = hello;
  old[4] = std::byte{1};  // version 1
  old[5] = std::byte{0};
  const std::vector<std::pair<std::string, Bytes>> seeds = {
      {"stream_hello", selector(0) + hello},
      {"stream_create", selector(0) + framed(CreateTopic{"orders", o})},
      {"stream_open", selector(0) + framed(OpenTopic{"orders"})},
      {"stream_delete", selector(0) + framed(DeleteTopic{"orders", true})},
      {"stream_list", selector(0) + framed(ListTopics{})},
      {"stream_describe", selector(0) + framed(Describe{"orders"})},
      {"stream_attach_p", selector(0) + framed(AttachProducer{"orders", 3})},
      {"stream_attach_m", selector(0) + framed(AttachMember{"orders", 1, 2})},
      {"stream_shutdown", selector(0) + framed(Shutdown{})},
      {"stream_delete_group", selector(0) + framed(DeleteGroup{"orders", "billing"})},
      {"stream_report",
       selector(0) + framed(Report{"bridge-1", "bridge", {{"forwarded", 12}, {"acked", 10}}})},
      {"stream_list_reports", selector(0) + framed(ListReports{})},
      {"stream_reset_group",
       selector(0) + framed(ResetGroup{"orders", "billing", {StartFrom::Offset, 7}})},
      {"stream_many", selector(0) + hello + framed(ListTopics{}, 2) + framed(Describe{"a"}, 3)},
      {"stream_oversized", selector(0) + oversized},
      {"stream_old_version", selector(0) + old},
      {"stream_unknown_22", selector(0) + unknown},
      {"reply_ok", selector(1) + body(Ok{})},
      {"reply_error", selector(1) + body(ErrorReply{ErrorCode::NotFound, "no topic 'x'"})},
      {"reply_hello", selector(2) + body(HelloReply{"default", 4242})},
      {"reply_topic", selector(3) + body(TopicReply{"orders", o})},
      {"reply_list", selector(4) + body(TopicList{{some_status(), TopicStatus{}}})},
      {"reply_list_empty", selector(4) + body(TopicList{})},
      {"reply_description", selector(5) + body(Description{some_status()})},
      {"reply_report_list", selector(6) + body(ReportList{{some_report(4242), some_report(4243)}})},
      {"reply_report_list_empty", selector(6) + body(ReportList{})},
      {"body_create", selector(7) + body(CreateTopic{"orders", o})},
      {"body_report", selector(7) + body(Report{"bridge-1", "bridge", {{"forwarded", 12}}})},
  };
  for (const auto& [name, bytes] : seeds) {
    const std::string path = dir + "/" + name;
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    if (!out) {
      std::fprintf(stderr, "cannot write %s: %s\n", path.c_str(), std::strerror(errno));
      return 1;
    }
  }
  std::printf("%zu seeds written to %s (protocol version %u)\n", seeds.size(), dir.c_str(),
              static_cast<unsigned>(kVersion));
  return 0;
}
