// Message properties (issue 16, first step): name/value pairs stored in the
// slot after the key, set through Route::properties on publish and loan, read
// in place through Sample::properties(), Batch::properties(i) and the copying
// reads' MessageInfo; their limits; a reader that does not trust the bytes.
#include <algorithm>
#include <array>
#include <string>
#include <vector>

#include "test_util.hpp"

namespace shmbus::test {
namespace {

constexpr auto kWait = std::chrono::seconds(10);

std::string sv(std::span<const std::byte> d) {
  return string_of(d);
}

TEST(Properties, RoundTripWithKeyInPlaceAndAligned) {
  ScopedTopic t("props", ring_options(8, 512));
  auto sub = t.topic.subscriber({.group = {}, .start = StartFrom::Earliest});
  Publisher pub = t.topic.publisher();
  const std::array<Property, 3> props{{{"tag", "TagA"}, {"trace-id", "abc123"}, {"empty", ""}}};
  Route r = Route::with_key("user-7");
  r.properties = props;
  ASSERT_EQ(pub.publish(r, bytes_of("payload")), Status::Ok);
  ASSERT_EQ(pub.publish(bytes_of("plain")), Status::Ok);

  Sample s;
  ASSERT_EQ(sub->receive(s, kWait), Status::Ok);
  EXPECT_EQ(sv(s.key()), "user-7");
  EXPECT_EQ(sv(s.data()), "payload");
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(s.data().data()) % 8, 0u) << "payload aligned";
  const Properties p = s.properties();
  EXPECT_TRUE(p.valid());
  EXPECT_EQ(p.size(), 3u);
  EXPECT_EQ(p.tag(), "TagA");
  EXPECT_EQ(p.get("trace-id"), "abc123");
  EXPECT_EQ(p.get("empty"), "");
  EXPECT_EQ(p.get("missing"), std::nullopt);
  // In the slot: between the key and the payload, not a copy.
  EXPECT_EQ(p.bytes().data(), s.key().data() + s.key().size());
  EXPECT_LE(p.bytes().data() + p.bytes().size(), s.data().data());
  std::vector<std::string> names;
  for (const Property& x : p)
    names.emplace_back(x.name);
  EXPECT_EQ(names, (std::vector<std::string>{"tag", "trace-id", "empty"}));

  ASSERT_EQ(sub->receive(s, kWait), Status::Ok);
  EXPECT_EQ(sv(s.data()), "plain");
  EXPECT_TRUE(s.properties().empty());
  EXPECT_TRUE(s.properties().valid());
  EXPECT_EQ(s.properties().tag(), std::nullopt);
  EXPECT_TRUE(s.key().empty());
}

TEST(Properties, LimitsAreCheckedAndNothingIsPublishedPastThem) {
  ScopedTopic t("limits", ring_options(8, 2048));
  Publisher pub = t.topic.publisher();
  const auto publish = [&](std::span<const Property> props) {
    return pub.publish(Route::with_properties(props), bytes_of("x"));
  };
  std::vector<Property> many(kMaxProperties + 1, Property{"n", "v"});
  EXPECT_EQ(publish(many), Status::InvalidProperties);
  many.pop_back();
  EXPECT_EQ(publish(many), Status::Ok) << "exactly kMaxProperties";
  EXPECT_EQ(publish(std::array<Property, 1>{{{"", "v"}}}), Status::InvalidProperties);
  const std::string long_name(kMaxPropertyName + 1, 'n');
  EXPECT_EQ(publish(std::array<Property, 1>{{{long_name, "v"}}}), Status::InvalidProperties);
  const std::string name(kMaxPropertyName, 'n');
  EXPECT_EQ(publish(std::array<Property, 1>{{{name, "v"}}}), Status::Ok);
  // Encoded: 4 bytes per pair + name + value; exactly kMaxPropertyBytes fits.
  const std::string fill(kMaxPropertyBytes - 4 - 1, 'v');
  EXPECT_EQ(publish(std::array<Property, 1>{{{"a", fill}}}), Status::Ok);
  EXPECT_EQ(publish(std::array<Property, 1>{{{"ab", fill}}}), Status::InvalidProperties);
  EXPECT_EQ(std::string(to_string(Status::InvalidProperties)), "InvalidProperties");
  // Key + properties + payload must fit the slot.
  ScopedTopic small("small", ring_options(8, 64));
  Publisher sp = small.topic.publisher();
  const std::string v35(35, 'v');                   // outlives the view of it
  const std::array<Property, 1> p40{{{"k", v35}}};  // 40 bytes encoded
  EXPECT_EQ(sp.publish(Route::with_properties(p40),
                       std::span<const std::byte>(std::vector<std::byte>(24))),
            Status::Ok);  // 40 + 24 = 64
  EXPECT_EQ(sp.publish(Route::with_properties(p40),
                       std::span<const std::byte>(std::vector<std::byte>(25))),
            Status::TooLarge);
  EXPECT_EQ(sp.try_loan(Route::with_properties(p40), 25).status(), Status::TooLarge);
  EXPECT_EQ(small.topic.status().tail, 1u) << "the refused ones took no sequence";
  EXPECT_EQ(t.topic.status().tail, 3u);
}

TEST(Properties, LoansBatchesAndCopiesCarryThem) {
  ScopedTopic t("loans", ring_options(8, 256));
  auto sub = t.topic.subscriber({.group = {}, .start = StartFrom::Earliest});
  Publisher pub = t.topic.publisher();
  const std::array<Property, 2> props{{{"tag", "TagB"}, {"id", "42"}}};
  Route r = Route::with_key("k");
  r.properties = props;
  for (int i = 0; i < 3; ++i) {
    Loan l = pub.loan(r, 8);
    ASSERT_TRUE(l);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(l.data().data()) % 8, 0u);
    const std::uint64_t v = 100 + i;
    std::memcpy(l.data().data(), &v, sizeof v);
    ASSERT_EQ(l.publish(), Status::Ok);
  }
  Batch b;
  ASSERT_EQ(sub->receive_batch(b, 2, kWait), Status::Ok);
  ASSERT_EQ(b.size(), 2u);
  for (std::size_t i = 0; i < b.size(); ++i) {
    EXPECT_EQ(sv(b.key(i)), "k");
    EXPECT_EQ(b.properties(i).get("id"), "42");
    EXPECT_EQ(b.properties(i).tag(), "TagB");
    const MessageInfo m = b.info(i);
    EXPECT_EQ(m.key_size, 1u);
    EXPECT_EQ(m.properties_size, b.properties(i).bytes().size());
    std::uint64_t v = 0;
    std::memcpy(&v, b.data(i).data(), sizeof v);
    EXPECT_EQ(v, 100 + i);
  }
  b.release();
  std::array<std::byte, 256> buf{};
  MessageInfo info;
  ASSERT_EQ(sub->receive_copy(buf, info, kWait), Status::Ok);
  EXPECT_EQ(info.size, 8u) << "the copy is the payload alone";
  EXPECT_EQ(info.key_size, 1u);
  EXPECT_EQ(info.properties_size, 4u + 3 + 4 + 4u + 2 + 2);
  std::uint64_t v = 0;
  std::memcpy(&v, buf.data(), sizeof v);
  EXPECT_EQ(v, 102u);
}

TEST(Properties, CrossProcess) {
  ScopedTopic t("xproc", ring_options(8, 256));
  auto sub = t.topic.subscriber({.group = {}, .start = StartFrom::Earliest});
  const std::string name = t.name;
  const pid_t child = spawn([&]() -> int {
    Topic topic = Topic::open(name);
    Publisher pub = topic.publisher();
    const std::string pid = std::to_string(getpid());  // outlives the views of it
    const std::array<Property, 2> props{{{"tag", "FromChild"}, {"pid", pid}}};
    return pub.publish(Route::with_properties(props), bytes_of("hello")) == Status::Ok ? 0 : 1;
  });
  Sample s;
  ASSERT_EQ(sub->receive(s, kWait), Status::Ok);
  EXPECT_EQ(sv(s.data()), "hello");
  EXPECT_EQ(s.properties().tag(), "FromChild");
  EXPECT_EQ(s.properties().get("pid"), std::to_string(child));
  EXPECT_EQ(wait_child(child, kWait), 0);
}

// The reader trusts nothing: truncated or overlong entries end the
// iteration, valid() says so, and nothing reads outside the bytes.
TEST(Properties, DamagedBytesAreReadSafely) {
  const auto make = [](std::initializer_list<int> v) {
    std::vector<std::byte> out;
    for (const int b : v)
      out.push_back(static_cast<std::byte>(b));
    return out;
  };
  // name "a", value "bc", then a second entry whose value runs past the end.
  const auto overlong = make({1, 0, 2, 0, 'a', 'b', 'c', 1, 0, 9, 0, 'x'});
  Properties p(overlong);
  EXPECT_FALSE(p.valid());
  EXPECT_EQ(p.size(), 1u);
  EXPECT_EQ(p.get("a"), "bc");
  EXPECT_EQ(p.get("x"), std::nullopt);
  const auto truncated_header = make({1, 0, 0});
  EXPECT_FALSE(Properties(truncated_header).valid());
  EXPECT_EQ(Properties(truncated_header).size(), 0u);
  const auto empty_name = make({0, 0, 1, 0, 'v'});
  EXPECT_FALSE(Properties(empty_name).valid());
  EXPECT_EQ(Properties(empty_name).begin(), Properties(empty_name).end());
  const auto huge = make({0xff, 0xff, 0xff, 0xff, 'a'});
  EXPECT_FALSE(Properties(huge).valid());
  EXPECT_EQ(Properties(huge).get("a"), std::nullopt);
  const auto good = make({1, 0, 0, 0, 'a'});
  EXPECT_TRUE(Properties(good).valid());
  EXPECT_EQ(Properties(good).get("a"), "");
  EXPECT_TRUE(Properties().valid());
  EXPECT_NE(tag_hash(""), 0u);
  EXPECT_EQ(tag_hash("TagA"), tag_hash("TagA"));
  EXPECT_NE(tag_hash("TagA"), tag_hash("TagB"));
}

// Tag filters (RocketMQ's subscription expressions): a message whose tag is
// not in the filter is taken, not returned, and counted in filtered().
Status publish_tagged(Publisher& pub, std::string_view tag, std::string_view payload) {
  if (tag.empty()) return pub.publish(bytes_of(std::string(payload)));
  const std::array<Property, 2> props{{{"trace", "t"}, {"tag", tag}}};
  return pub.publish(Route::with_properties(props), bytes_of(std::string(payload)));
}

TEST(TagFilter, ReturnsOnlyMatchingTagsAndCountsTheRest) {
  ScopedTopic t("tags", ring_options(16, 128));
  auto sub =
      t.topic.subscriber({.group = "g", .start = StartFrom::Earliest, .tags = " TagA ||TagB "});
  auto all = t.topic.subscriber({.group = "all", .start = StartFrom::Earliest, .tags = "*"});
  Publisher pub = t.topic.publisher();
  const std::vector<std::pair<std::string, std::string>> msgs{
      {"TagA", "1"}, {"TagC", "2"}, {"", "3"}, {"TagB", "4"}, {"TagAB", "5"}, {"TagA", "6"}};
  for (const auto& [tag, v] : msgs)
    ASSERT_EQ(publish_tagged(pub, tag, v), Status::Ok);
  std::vector<std::string> got;
  Sample s;
  while (sub->try_receive(s) == Status::Ok)
    got.push_back(sv(s.data()));
  s.release();
  EXPECT_EQ(got, (std::vector<std::string>{"1", "4", "6"}));
  EXPECT_EQ(sub->filtered(), 3u);
  EXPECT_EQ(sub->lost(), 0u);
  EXPECT_EQ(sub->lag(), 0u) << "filtered messages are consumed";
  std::size_t n = 0;
  while (all->try_receive(s) == Status::Ok)
    ++n;
  EXPECT_EQ(n, msgs.size()) << "'*' takes everything";
  EXPECT_EQ(all->filtered(), 0u);
  for (const GroupStatus& g : t.topic.status().groups)
    EXPECT_EQ(g.filtered, g.name == "g" ? 3u : 0u) << g.name;
}

TEST(TagFilter, AGroupThatMatchesNothingDoesNotHoldProducersBack) {
  ScopedTopic t("none", ring_options(8, 128));
  auto sub = t.topic.subscriber({.group = "g", .start = StartFrom::Earliest, .tags = "Never"});
  Publisher pub = t.topic.publisher();
  for (int round = 0; round < 4; ++round) {
    // The ring is full after 8 under block; the filtering group takes them.
    for (int i = 0; i < 8; ++i) {
      const std::array<Property, 1> props{{{"tag", "Other"}}};
      ASSERT_EQ(pub.try_publish(Route::with_properties(props), bytes_of("x")), Status::Ok)
          << "round " << round << " message " << i;
    }
    Sample s;
    EXPECT_EQ(sub->try_receive(s), Status::WouldBlock);
  }
  EXPECT_EQ(sub->filtered(), 32u);
  EXPECT_EQ(sub->position(), 32u);
}

TEST(TagFilter, BatchesCopiesAndPartitionsFilterToo) {
  ScopedTopic t("mixed", [] {
    TopicOptions o = ring_options(16, 128);
    o.partitions = 4;
    return o;
  }());
  auto sub = t.topic.subscriber({.group = "g", .start = StartFrom::Earliest, .tags = "Keep"});
  Publisher pub = t.topic.publisher();
  for (int i = 0; i < 24; ++i) {
    const std::array<Property, 1> props{{{"tag", i % 3 == 0 ? "Keep" : "Drop"}}};
    Route r = Route::with_properties(props);
    r.partition = static_cast<std::uint32_t>(i % 4);
    ASSERT_EQ(pub.publish(r, bytes_of(std::to_string(i))), Status::Ok);
  }
  std::vector<int> got;
  Batch b;
  for (int k = 0; k < 4; ++k) {
    ASSERT_EQ(sub->receive_batch(b, 8, kWait), Status::Ok);
    ASSERT_EQ(b.size(), 1u) << "a filtering batch is one message";
    EXPECT_EQ(b.properties(0).tag(), "Keep");
    got.push_back(std::stoi(sv(b.data(0))));
    b.release();
  }
  std::array<std::byte, 128> buf{};
  MessageInfo info;
  while (sub->receive_copy(buf, info, std::chrono::milliseconds(0)) == Status::Ok)
    got.push_back(std::stoi(std::string(reinterpret_cast<const char*>(buf.data()), info.size)));
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<int>{0, 3, 6, 9, 12, 15, 18, 21}));
  EXPECT_EQ(sub->filtered(), 16u);
}

TEST(TagFilter, BadExpressionsAreRefused) {
  ScopedTopic t("bad", ring_options(8, 64));
  for (const char* bad : {"TagA ||", "|| TagA", "TagA | TagB", "TagA || *", "TagA |||| B", "||"}) {
    try {
      (void)t.topic.subscriber({.group = "g", .start = StartFrom::Earliest, .tags = bad});
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::InvalidArgument) << bad;
      EXPECT_NE(std::string(e.what()).find("is not TAG || TAG"), std::string::npos) << e.what();
    }
  }
  EXPECT_NO_THROW((void)t.topic.subscriber({.group = "g", .tags = "  *  "}));
}

}  // namespace
}  // namespace shmbus::test
