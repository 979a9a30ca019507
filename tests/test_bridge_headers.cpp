// The bridge's pure header codecs (bridge/headers.cpp): message ids, JetStream
// publish acks, ack tokens, percent-encoding and properties. What they parse
// comes from the network, so most of these feed them malformed input.
#include <gtest/gtest.h>

#include <cctype>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bridge.hpp"

namespace shmbus::bridge {
namespace {

constexpr std::uint32_t kU32Max = std::numeric_limits<std::uint32_t>::max();
constexpr std::uint64_t kU64Max = std::numeric_limits<std::uint64_t>::max();

using namespace std::string_view_literals;
using Pairs = std::vector<std::pair<std::string, std::string>>;

std::span<const std::byte> bytes_of(const std::string& s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

std::string all_bytes() {
  std::string s;
  for (int c = 0; c < 256; ++c)
    s.push_back(static_cast<char>(c));
  return s;
}

bool is_unreserved(unsigned char c) {
  return std::isalnum(c) != 0 || c == '-' || c == '_' || c == '.' || c == '~';
}

// The slot encoding of `pairs`, as a publisher writes it (kept in `storage`).
Properties properties_of(const Pairs& pairs, std::vector<std::byte>& storage) {
  std::vector<Property> props;
  for (const auto& [n, v] : pairs)
    props.push_back({n, v});
  std::uint32_t size = 0;
  EXPECT_EQ(detail::encoded_size(props, size), Status::Ok);
  storage.resize(size);
  detail::encode(props, storage.data());
  return Properties(storage);
}

TEST(BridgeHeaders, MessageIdIsPrefixPlusPartitionAndOffset) {
  EXPECT_EQ(message_id_prefix("bus", "orders", 0xabc), "bus/orders/abc/");
  EXPECT_EQ(message_id("bus", "orders", 0xabc, 3, 42), "bus/orders/abc/3/42");
  EXPECT_EQ(message_id_prefix("b", "t", kU64Max), "b/t/ffffffffffffffff/");
  for (const std::uint64_t gen : {std::uint64_t{0}, std::uint64_t{0x1234}, kU64Max})
    for (const std::uint32_t p : {0u, 7u, kU32Max})
      for (const std::uint64_t o : {std::uint64_t{0}, std::uint64_t{99}, kU64Max})
        EXPECT_EQ(
            message_id("bus", "topic", gen, p, o),
            message_id_prefix("bus", "topic", gen) + std::to_string(p) + "/" + std::to_string(o));
}

TEST(BridgeHeaders, MessageIdRoundTripsEdgeValues) {
  for (const std::uint64_t gen : {std::uint64_t{0}, kU64Max})
    for (const std::uint32_t p : {0u, 1u, kU32Max})
      for (const std::uint64_t o : {std::uint64_t{0}, std::uint64_t{1}, kU64Max}) {
        std::uint32_t part = 12345;
        std::uint64_t off = 12345;
        ASSERT_TRUE(parse_message_id(message_id("bus", "t", gen, p, o), part, off));
        EXPECT_EQ(part, p);
        EXPECT_EQ(off, o);
      }
}

TEST(BridgeHeaders, ParseMessageIdRejectsMalformed) {
  for (const char* bad : {"", "/", "//", "5", "5/7", "7/", "/7"}) {
    std::uint32_t part = 0;
    std::uint64_t off = 0;
    EXPECT_FALSE(parse_message_id(bad, part, off)) << '"' << bad << '"';
  }
  // clang-format off
  static constexpr std::string_view kBadTails[] = {
      "/7", "3/", "x/7", "3/x", "-1/7", "+1/7", "3/-7", "3/+7", " 3/7", "3/7 ", "3 /7", "0x3/7",
      "3/7.0", "3/7/", "4294967296/7", "99999999999/7", "3/18446744073709551616",
      "3/123456789012345678901"};
  // clang-format on
  for (const std::string_view tail : kBadTails) {
    const std::string id = std::string("bus/t/0/").append(tail);
    std::uint32_t part = 0;
    std::uint64_t off = 0;
    EXPECT_FALSE(parse_message_id(id, part, off)) << '"' << id << '"';
  }
}

TEST(BridgeHeaders, ParseAckToken) {
  std::uint32_t part = 0;
  std::uint64_t off = 0;
  ASSERT_TRUE(parse_ack_token("3.42", part, off));
  EXPECT_EQ(part, 3u);
  EXPECT_EQ(off, 42u);
  ASSERT_TRUE(parse_ack_token("4294967295.18446744073709551615", part, off));
  EXPECT_EQ(part, kU32Max);
  EXPECT_EQ(off, kU64Max);
  ASSERT_TRUE(parse_ack_token("0.0", part, off));
  EXPECT_EQ(part, 0u);
  EXPECT_EQ(off, 0u);
  // clang-format off
  static constexpr std::string_view kBad[] = {
      "", ".", "3.", ".42", "3", "42", "3.4.5", "3..4", "-1.2", "1.-2", "+1.2", "1.+2", " 1.2",
      "1.2 ", "1 .2", "a.1", "1.a", "1,2", "0x1.2", "4294967296.0", "0.18446744073709551616",
      "0.123456789012345678901", "99999999999999999999999.1"};
  // clang-format on
  for (const std::string_view bad : kBad)
    EXPECT_FALSE(parse_ack_token(bad, part, off)) << '"' << bad << '"';
}

TEST(BridgeHeaders, ParsePubAckStored) {
  PubAck a = parse_pub_ack(R"({"stream":"S","seq":7})");
  EXPECT_TRUE(a.ok);
  EXPECT_EQ(a.seq, 7u);
  EXPECT_FALSE(a.duplicate);
  EXPECT_EQ(a.err_code, 0);

  a = parse_pub_ack(R"({"stream" : "S", "domain":"hub", "seq" : 18446744073709551615})");
  EXPECT_TRUE(a.ok);
  EXPECT_EQ(a.seq, kU64Max);

  a = parse_pub_ack(R"({"stream":"S","seq":9,"duplicate":true})");
  EXPECT_TRUE(a.ok && a.duplicate);
  EXPECT_EQ(a.seq, 9u);
  a = parse_pub_ack(R"({"stream":"S","seq":9,"duplicate" : true})");
  EXPECT_TRUE(a.ok && a.duplicate);
  a = parse_pub_ack(R"({"stream":"S","seq":9,"duplicate":false})");
  EXPECT_TRUE(a.ok);
  EXPECT_FALSE(a.duplicate);
}

TEST(BridgeHeaders, ParsePubAckErrors) {
  PubAck a = parse_pub_ack(
      R"({"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}})");
  EXPECT_FALSE(a.ok);
  EXPECT_EQ(a.err_code, 10077);
  a = parse_pub_ack(R"({"error":{"code":400, "err_code" : 10060}})");
  EXPECT_FALSE(a.ok);
  EXPECT_EQ(a.err_code, 10060);
  a = parse_pub_ack(R"({"error":{"code":503,"description":"no responders"}})");
  EXPECT_FALSE(a.ok);
  EXPECT_EQ(a.err_code, 0);
  a = parse_pub_ack(R"({"error":{"err_code":99999999999}})");  // not an int: no code
  EXPECT_FALSE(a.ok);
  EXPECT_EQ(a.err_code, 0);
  a = parse_pub_ack(R"({"error":{"err_code":-5}})");
  EXPECT_FALSE(a.ok);
  EXPECT_EQ(a.err_code, 0);
  // An error wins over a seq in the same reply.
  a = parse_pub_ack(R"({"stream":"S","seq":4,"error":{"err_code":10071}})");
  EXPECT_FALSE(a.ok);
  EXPECT_EQ(a.err_code, 10071);
}

TEST(BridgeHeaders, ParsePubAckRejectsWhatIsNotAnAck) {
  // clang-format off
  static constexpr std::string_view kNotAcks[] = {
      "", "{", "}", "{}", "[]", "null", "7", R"("seq":1)", R"([{"stream":"S","seq":1}])",
      R"( {"stream":"S","seq":1})", R"({"stream":"S","seq":1} )", R"({"stream":"S","seq":1}x)",
      R"({"stream":"S","seq":1)", R"({"stream":"S"})", R"({"seq":1})", R"({"stream":"S","seq"})",
      R"({"stream":"S","seq":})", R"({"stream":"S","seq" 1})", R"({"stream":"S","seq":-1})",
      R"({"stream":"S","seq":+1})", R"({"stream":"S","seq":"1"})", R"({"stream":"S","seq":null})",
      R"({"stream":"S","seq":18446744073709551616})",
      R"({"stream":"S","seq":99999999999999999999})"};
  // clang-format on
  for (const std::string_view json : kNotAcks) {
    const PubAck a = parse_pub_ack(json);
    EXPECT_FALSE(a.ok) << json;
    EXPECT_FALSE(a.duplicate) << json;
    EXPECT_EQ(a.err_code, 0) << json;
  }
}

TEST(BridgeHeaders, ParsePubAckSizeLimit) {
  const std::string head = R"({"stream":"S","seq":5,"pad":")", tail = R"("})";
  const std::string max = head + std::string(kMaxPubAck - head.size() - tail.size(), 'x') + tail;
  ASSERT_EQ(max.size(), kMaxPubAck);
  EXPECT_TRUE(parse_pub_ack(max).ok);
  const std::string over =
      head + std::string(kMaxPubAck + 1 - head.size() - tail.size(), 'x') + tail;
  EXPECT_FALSE(parse_pub_ack(over).ok);
  const std::string err = R"({"error":{"err_code":10077},"pad":")";
  EXPECT_EQ(parse_pub_ack(err + std::string(kMaxPubAck, 'x') + tail).err_code, 0);
}

// A seq of more digits than fit 64 bits is refused, not cut to its first 20
// (a first version did that).
TEST(BridgeHeaders, ParsePubAckRejectsSeqOfMoreThan20Digits) {
  PubAck a = parse_pub_ack(R"({"stream":"S","seq":123456789012345678901})");
  EXPECT_FALSE(a.ok) << "seq read as " << a.seq;
  a = parse_pub_ack(R"({"stream":"S","seq":184467440737095516150})");
  EXPECT_FALSE(a.ok) << "seq read as " << a.seq;
}

// Keys are matched as keys: a stream named "seq", "error" or "duplicate"
// (valid names; stream_name_for("seq") is "seq") is not taken for the key
// (a first version searched the text and read such acks as failures).
TEST(BridgeHeaders, ParsePubAckKeysAreNotMatchedInsideValues) {
  PubAck a = parse_pub_ack(R"({"stream":"seq","seq":5})");
  EXPECT_TRUE(a.ok);
  EXPECT_EQ(a.seq, 5u);
  a = parse_pub_ack(R"({"stream":"error","seq":5})");
  EXPECT_TRUE(a.ok);
  EXPECT_EQ(a.seq, 5u);
  a = parse_pub_ack(R"({"stream":"duplicate","seq":5,"duplicate":true})");
  EXPECT_TRUE(a.ok);
  EXPECT_TRUE(a.duplicate);
}

// Members the bridge does not use (a domain, fields of later servers) are
// skipped whatever their shape; junk after a value is not.
TEST(BridgeHeaders, ParsePubAckSkipsOtherMembersButNotJunk) {
  PubAck a = parse_pub_ack(
      R"({"stream":"S","domain":"hub","seq":9,"x":{"a":[1,{"b":null}],"c":-1.5e3},"y":[]})");
  EXPECT_TRUE(a.ok);
  EXPECT_EQ(a.seq, 9u);
  EXPECT_FALSE(parse_pub_ack(R"({"stream":"S","seq":5abc})").ok);
  EXPECT_FALSE(parse_pub_ack(R"({"stream":"S","seq":5,"duplicate"::true})").ok);
  EXPECT_FALSE(parse_pub_ack(R"({"stream":"S","seq":5.0})").ok);
  // Nesting deeper than the reader follows is refused, not recursed into.
  EXPECT_FALSE(parse_pub_ack(R"({"stream":"S","seq":1,"x":[[[[[[1]]]]]]})").ok);
}

TEST(BridgeHeaders, PercentEncodeKeepsOnlyUnreserved) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  int kept = 0;
  for (int c = 0; c < 256; ++c) {
    const std::string one(1, static_cast<char>(c));
    const std::string enc = percent_encode(bytes_of(one));
    if (is_unreserved(static_cast<unsigned char>(c))) {
      EXPECT_EQ(enc, one) << c;
      ++kept;
    } else {
      EXPECT_EQ(enc, (std::string{'%', kHex[c >> 4], kHex[c & 15]})) << c;
    }
  }
  EXPECT_EQ(kept, 26 + 26 + 10 + 4);
  EXPECT_EQ(percent_encode({}), "");
}

TEST(BridgeHeaders, PercentRoundTripsAllBytes) {
  const std::string all = all_bytes();
  const std::string enc = percent_encode(bytes_of(all));
  EXPECT_EQ(enc.size(), 66u + 190u * 3u);
  EXPECT_EQ(percent_decode(enc), all);
  EXPECT_EQ(percent_decode(""), "");
  EXPECT_EQ(percent_decode("%2f%2F%41a-_.~"), "//Aa-_.~");  // either case, even unreserved
  EXPECT_EQ(percent_decode("%00"), std::string(1, '\0'));
}

TEST(BridgeHeaders, PercentDecodeRejectsMalformed) {
  // Cut short, non-hex digits, bytes outside [A-Za-z0-9-_.~] (NUL and high bytes too).
  static constexpr std::string_view kBad[] = {
      "%",   "%4",  "a%4", "%%41", "%G0", "%0G", "%g0",  "%-1",  "%+1",    "% 41", "%4 ",  "%0\0"sv,
      "a b", "a+b", "a/b", "a=b",  "a&b", "a%b", "\x80", "\xff", "a\0b"sv, "abc%", "abc%F"};
  for (const std::string_view bad : kBad)
    EXPECT_FALSE(percent_decode(bad).has_value()) << '"' << bad << '"';
}

TEST(BridgeHeaders, EncodePropertiesFormat) {
  std::vector<std::byte> storage;
  EXPECT_EQ(encode_properties(Properties{}), "");
  EXPECT_EQ(
      encode_properties(properties_of({{"tag", "a b"}, {"k=1", "v&2"}, {"empty", ""}}, storage)),
      "tag=a%20b&k%3D1=v%262&empty=");
}

TEST(BridgeHeaders, PropertiesRoundTrip) {
  const Pairs pairs{{"tag", "TagA"}, {"bin", all_bytes()}, {"e", ""}, {"a&=%", "x=y&z"}};
  std::vector<std::byte> storage;
  EXPECT_EQ(decode_properties(encode_properties(properties_of(pairs, storage))), pairs);
  // At every limit at once: kMaxProperties pairs, kMaxPropertyBytes encoded.
  Pairs max;
  for (std::uint32_t i = 0; i < kMaxProperties; ++i)
    max.emplace_back(std::string("n").append(std::to_string(i)), "");
  std::size_t used = 0;
  for (const auto& [n, v] : max)
    used += 4 + n.size();
  max.back().second = std::string(kMaxPropertyBytes - used, '\xee');
  EXPECT_EQ(decode_properties(encode_properties(properties_of(max, storage))), max);
}

TEST(BridgeHeaders, DecodePropertiesAcceptsAndRejects) {
  EXPECT_EQ(decode_properties(""), Pairs{});
  EXPECT_EQ(decode_properties("a="), (Pairs{{"a", ""}}));
  EXPECT_EQ(decode_properties("a=1&a=2"), (Pairs{{"a", "1"}, {"a", "2"}}));
  for (const char* bad : {"a", "=", "=1", "a=1&", "&a=1", "&", "a=1&&b=2", "a=1&b", "a=1=2", "a==1",
                          "a=%4", "a=%zz", "a b=1", "%=1", "a=1 ", "%41%=1"}) {
    EXPECT_FALSE(decode_properties(bad).has_value()) << '"' << bad << '"';
  }
}

TEST(BridgeHeaders, DecodePropertiesLimits) {
  std::string text;
  for (std::uint32_t i = 0; i < kMaxProperties; ++i)
    text.append("p").append(std::to_string(i)).append("=v&");
  text.pop_back();
  const auto full = decode_properties(text);
  ASSERT_TRUE(full.has_value());
  EXPECT_EQ(full->size(), kMaxProperties);
  EXPECT_FALSE(decode_properties(text + "&x=y").has_value());

  const std::string name(kMaxPropertyName, 'n');
  EXPECT_TRUE(decode_properties(name + "=v").has_value());
  EXPECT_FALSE(decode_properties(name + "n=v").has_value());
  std::string encoded_name;  // the limit is on the decoded name
  for (std::uint32_t i = 0; i < kMaxPropertyName; ++i)
    encoded_name += "%41";
  EXPECT_TRUE(decode_properties(encoded_name + "=v").has_value());
  EXPECT_FALSE(decode_properties(encoded_name + "%41=v").has_value());

  const std::string value(kMaxPropertyBytes - 4 - 1, 'v');  // "n": 4 + 1 + value
  EXPECT_TRUE(decode_properties("n=" + value).has_value());
  EXPECT_FALSE(decode_properties("n=" + value + "v").has_value());
  EXPECT_FALSE(decode_properties("a=1&n=" + value).has_value());
}

}  // namespace
}  // namespace shmbus::bridge
