// libFuzzer target: arbitrary bytes through the daemon's request decoding
// (frame splitting, header, every request type's fields, name validation) and
// the client's reply decoders. Nothing may crash, hang, leak or read out of
// bounds (ASan/UBSan); a decoder either accepts or says why not.
#include <cstddef>
#include <cstdint>
#include <span>

#include "protocol.hpp"

using namespace shmbus::detail::proto;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto bytes = std::as_bytes(std::span(data, size));
  // As a stream of frames, the way the daemon reads a socket.
  FrameBuffer frames;
  frames.feed(bytes.data(), bytes.size());
  while (auto body = frames.next()) {
    Request q;
    if (!parse_request(*body, q) && q.error.empty()) __builtin_trap();  // a refusal says why
  }
  // As one body.
  Request q;
  (void)parse_request(bytes, q);
  // The replies a client decodes.
  Reader r(bytes);
  shmbus::TopicStatus status;
  (void)decode(r, status);
  Reader r2(bytes);
  TopicSpec spec;
  (void)decode(r2, spec);
  return 0;
}
