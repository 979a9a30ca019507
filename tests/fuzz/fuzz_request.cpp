// libFuzzer target: arbitrary bytes through every decoder of the control
// protocol, the daemon's and the client's. The first byte picks the path:
//   0     the daemon's: FrameBuffer (the splitter it runs) + parse_request,
//         the rest of the input fed in pieces whose sizes the input chooses
//   1..6  the client's reply decoders: decode_reply<Ok, HelloReply,
//         TopicReply, TopicList, Description, ReportList> over the rest as
//         one body
//   else  parse_request over the rest as one body
// Nothing may crash, hang, leak or read out of bounds (ASan/UBSan); a decoder
// either accepts or says why not.
#include <cstddef>
#include <cstdint>
#include <span>

#include "protocol.hpp"

using namespace shmbus::detail::proto;

namespace {

void check(bool accepted, const std::string& why) {
  if (!accepted && why.empty()) __builtin_trap();  // a refusal says why
}

void as_stream(std::span<const std::byte> bytes) {
  // Small frames only (the limit is 64 KiB) so the fuzzer reaches bad() too.
  FrameBuffer frames(bytes.size() > 2 ? std::to_integer<std::uint32_t>(bytes[0]) * 64 : kMaxFrame);
  std::size_t pos = 0;
  while (pos < bytes.size() && !frames.bad()) {
    // Piece sizes come from the input, so frames straddle feed() calls.
    const std::size_t piece =
        std::min<std::size_t>(bytes.size() - pos, 1 + std::to_integer<std::size_t>(bytes[pos]));
    frames.feed(bytes.data() + pos, piece);
    pos += piece;
    while (auto body = frames.next()) {
      Request q;
      Problem why;
      check(parse_request(*body, q, why), why.message);
    }
  }
  if (frames.bad() && frames.bad_length() == 0) __builtin_trap();
}

template <class M>
void as_reply(std::span<const std::byte> body) {
  const Reply<M> r = decode_reply<M>(body);
  check(r.message.has_value(), r.problem.message);
  if (r.message && r.from_daemon) __builtin_trap();
  // What was accepted encodes back to the same bytes (the id included).
  if (r.message) {
    const auto again = frame(*r.message, r.id);
    if (again.size() != body.size() + 4 || !std::equal(body.begin(), body.end(), again.begin() + 4))
      __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const auto bytes = std::as_bytes(std::span(data + 1, size - 1));
  switch (data[0]) {
    case 0:
      as_stream(bytes);
      break;
    case 1:
      as_reply<Ok>(bytes);
      break;
    case 2:
      as_reply<HelloReply>(bytes);
      break;
    case 3:
      as_reply<TopicReply>(bytes);
      break;
    case 4:
      as_reply<TopicList>(bytes);
      break;
    case 5:
      as_reply<Description>(bytes);
      break;
    case 6:
      as_reply<ReportList>(bytes);
      break;
    default: {
      Request q;
      Problem why;
      check(parse_request(bytes, q, why), why.message);
    }
  }
  return 0;
}
