// The control protocol (src/protocol.*) on its own, no sockets: every message
// survives encode -> decode unchanged, and every kind of bad frame is refused
// with a specific code and message.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "protocol.hpp"

namespace shmbus::test {
namespace {

namespace proto = detail::proto;
using Bytes = std::vector<std::byte>;

// ---- helpers -------------------------------------------------------------------

// The body of a frame (without its length prefix), checking the prefix.
Bytes body_of(const Bytes& frame) {
  EXPECT_GE(frame.size(), 4u + proto::kHeaderSize);
  std::uint32_t n = 0;
  std::memcpy(&n, frame.data(), 4);
  EXPECT_EQ(n, frame.size() - 4);
  return {frame.begin() + 4, frame.end()};
}

template <class M>
Bytes body(const M& m, std::uint32_t id = 42) {
  return body_of(proto::frame(m, id));
}

void set_u16(Bytes& b, std::size_t at, std::uint16_t v) {
  std::memcpy(b.data() + at, &v, 2);
}

// A request that must be refused: returns why.
proto::Problem refused(const Bytes& b) {
  proto::Request q;
  proto::Problem why;
  EXPECT_FALSE(proto::parse_request(b, q, why));
  EXPECT_FALSE(why.message.empty());
  return why;
}

template <class M>
M parsed(const Bytes& b, std::uint32_t id = 42) {
  proto::Request q;
  proto::Problem why;
  EXPECT_TRUE(proto::parse_request(b, q, why)) << why.message;
  EXPECT_EQ(q.id, id);
  EXPECT_TRUE(std::holds_alternative<M>(q.message));
  return std::holds_alternative<M>(q.message) ? std::get<M>(q.message) : M{};
}

template <class M>
M replied(const Bytes& b, std::uint32_t id = 42) {
  const auto r = proto::decode_reply<M>(b);
  EXPECT_TRUE(r.message.has_value()) << r.problem.message;
  EXPECT_TRUE(r.header_ok);
  EXPECT_EQ(r.id, id);
  return r.message.value_or(M{});
}

void expect_same(const TopicOptions& a, const TopicOptions& b) {
  EXPECT_EQ(a.slot_count, b.slot_count);
  EXPECT_EQ(a.slot_size, b.slot_size);
  EXPECT_EQ(a.policy, b.policy);
  EXPECT_EQ(a.single_producer, b.single_producer);
  EXPECT_EQ(a.max_producers, b.max_producers);
  EXPECT_EQ(a.max_groups, b.max_groups);
  EXPECT_EQ(a.max_members, b.max_members);
  EXPECT_EQ(a.mode, b.mode);
  EXPECT_EQ(a.partitions, b.partitions);
  EXPECT_EQ(a.priorities, b.priorities);
}

void expect_same(const TopicStatus& a, const TopicStatus& b) {
  EXPECT_EQ(a.name, b.name);
  expect_same(a.options, b.options);
  EXPECT_EQ(a.tail, b.tail);
  EXPECT_EQ(a.producers, b.producers);
  EXPECT_EQ(a.published, b.published);
  EXPECT_EQ(a.published_bytes, b.published_bytes);
  EXPECT_EQ(a.generation, b.generation);
  EXPECT_EQ(a.abandoned, b.abandoned);
  EXPECT_EQ(a.deleted, b.deleted);
  ASSERT_EQ(a.groups.size(), b.groups.size());
  for (std::size_t i = 0; i < a.groups.size(); ++i) {
    EXPECT_EQ(a.groups[i].name, b.groups[i].name);
    EXPECT_EQ(a.groups[i].members, b.groups[i].members);
    EXPECT_EQ(a.groups[i].durable, b.groups[i].durable);
    EXPECT_EQ(a.groups[i].position, b.groups[i].position);
    EXPECT_EQ(a.groups[i].lag, b.groups[i].lag);
    EXPECT_EQ(a.groups[i].lost, b.groups[i].lost);
    EXPECT_EQ(a.groups[i].filtered, b.groups[i].filtered);
    EXPECT_EQ(a.groups[i].overrun, b.groups[i].overrun);
    ASSERT_EQ(a.groups[i].member_seats.size(), b.groups[i].member_seats.size());
    for (std::size_t k = 0; k < a.groups[i].member_seats.size(); ++k) {
      const MemberStatus &x = a.groups[i].member_seats[k], &y = b.groups[i].member_seats[k];
      EXPECT_EQ(x.seat, y.seat);
      EXPECT_EQ(x.pid, y.pid);
      EXPECT_EQ(x.session, y.session);
      EXPECT_EQ(x.held, y.held);
      EXPECT_EQ(x.received, y.received);
    }
    EXPECT_EQ(a.groups[i].mode, b.groups[i].mode);
    ASSERT_EQ(a.groups[i].partitions.size(), b.groups[i].partitions.size());
    for (std::size_t k = 0; k < a.groups[i].partitions.size(); ++k) {
      const GroupPartitionStatus &x = a.groups[i].partitions[k], &y = b.groups[i].partitions[k];
      EXPECT_EQ(x.position, y.position);
      EXPECT_EQ(x.lag, y.lag);
      EXPECT_EQ(x.owner_pid, y.owner_pid);
      EXPECT_EQ(x.target_seat, y.target_seat);
    }
  }
  ASSERT_EQ(a.partitions.size(), b.partitions.size());
  for (std::size_t i = 0; i < a.partitions.size(); ++i) {
    EXPECT_EQ(a.partitions[i].tail, b.partitions[i].tail);
    EXPECT_EQ(a.partitions[i].abandoned, b.partitions[i].abandoned);
  }
  ASSERT_EQ(a.producer_seats.size(), b.producer_seats.size());
  for (std::size_t i = 0; i < a.producer_seats.size(); ++i) {
    const ProducerStatus &x = a.producer_seats[i], &y = b.producer_seats[i];
    EXPECT_EQ(x.seat, y.seat);
    EXPECT_EQ(x.pid, y.pid);
    EXPECT_EQ(x.session, y.session);
    EXPECT_EQ(x.published, y.published);
    EXPECT_EQ(x.published_bytes, y.published_bytes);
  }
}

// Non-default values in every field, so a field that is not carried shows.
TopicOptions odd_options() {
  TopicOptions o;
  o.slot_count = 4096;
  o.slot_size = 333;
  o.policy = Policy::Overwrite;
  o.single_producer = true;
  o.max_producers = 3;
  o.max_groups = 5;
  o.max_members = 7;
  o.mode = 0640;
  o.partitions = 12;
  o.priorities = 3;
  return o;
}

TopicStatus odd_status(const std::string& name) {
  TopicStatus t;
  t.name = name;
  t.options = odd_options();
  t.tail = 1'000'000'000'123ULL;
  t.producers = 2;
  t.published = 99;
  t.published_bytes = 1ULL << 40;
  t.generation = 0x0123456789abcdefULL;
  t.groups = {{"billing",
               3,
               true,
               10,
               5,
               2,
               7,
               {{1, 99, 5, 9, 40}, {2, 98, 6, ~0ULL, 1}},
               GroupMode::Partitioned,
               {{4, 6, 1234, 2}, {8, 0, 0, -1}},
               21},
              {"", 1, false, 15, 0, 0, 0, {}}};
  t.partitions = {{7, 1}, {3, 0}};
  t.abandoned = 13;
  t.deleted = true;
  t.producer_seats = {{0, 1234, 77, 50, 500}, {2, 4321, 78, 49, 1ULL << 35}};
  return t;
}

// ---- round trips ---------------------------------------------------------------

TEST(Protocol, EveryRequestRoundTrips) {
  EXPECT_EQ(parsed<proto::Hello>(body(proto::Hello{"cli 1.2"})).client, "cli 1.2");
  {
    const auto m = parsed<proto::CreateTopic>(body(proto::CreateTopic{"orders", odd_options()}));
    EXPECT_EQ(m.name, "orders");
    expect_same(m.options, odd_options());
  }
  EXPECT_EQ(parsed<proto::OpenTopic>(body(proto::OpenTopic{"a.b-c_d"})).name, "a.b-c_d");
  EXPECT_EQ(parsed<proto::DeleteTopic>(body(proto::DeleteTopic{"gone"})).name, "gone");
  EXPECT_TRUE(parsed<proto::DeleteTopic>(body(proto::DeleteTopic{"gone", true})).if_unused);
  {
    const auto m = parsed<proto::DeleteGroup>(body(proto::DeleteGroup{"t", "g"}));
    EXPECT_EQ(m.topic, "t");
    EXPECT_EQ(m.group, "g");
  }
  {
    const auto m =
        parsed<proto::ResetGroup>(body(proto::ResetGroup{"t", "g", {StartFrom::Offset, 1234}}));
    EXPECT_EQ(m.group, "g");
    EXPECT_EQ(m.to.from, StartFrom::Offset);
    EXPECT_EQ(m.to.offset, 1234u);
    EXPECT_EQ(parsed<proto::ResetGroup>(body(proto::ResetGroup{"t", "g", {StartFrom::Earliest, 0}}))
                  .to.from,
              StartFrom::Earliest);
  }
  (void)parsed<proto::ListTopics>(body(proto::ListTopics{}));
  EXPECT_EQ(parsed<proto::Describe>(body(proto::Describe{"what"})).name, "what");
  EXPECT_EQ(parsed<proto::AttachProducer>(body(proto::AttachProducer{"t", 15}, 7), 7),
            (proto::AttachProducer{"t", 15}));
  EXPECT_EQ(parsed<proto::AttachMember>(body(proto::AttachMember{"t", 3, 0xfffffffe}, 0xffffffff),
                                        0xffffffff),
            (proto::AttachMember{"t", 3, 0xfffffffe}));
  (void)parsed<proto::Shutdown>(body(proto::Shutdown{}));
}

TEST(Protocol, EveryReplyRoundTrips) {
  (void)replied<proto::Ok>(body(proto::Ok{}));
  {
    const auto m = replied<proto::HelloReply>(body(proto::HelloReply{"plant", 4242}));
    EXPECT_EQ(m.bus, "plant");
    EXPECT_EQ(m.pid, 4242u);
  }
  {
    const auto m = replied<proto::TopicReply>(body(proto::TopicReply{"orders", odd_options()}));
    EXPECT_EQ(m.name, "orders");
    expect_same(m.options, odd_options());
  }
  {
    const proto::TopicList list{{odd_status("a"), TopicStatus{}, odd_status("c")}};
    const auto m = replied<proto::TopicList>(body(list));
    ASSERT_EQ(m.topics.size(), 3u);
    for (std::size_t i = 0; i < 3; ++i)
      expect_same(m.topics[i], list.topics[i]);
    EXPECT_TRUE(replied<proto::TopicList>(body(proto::TopicList{})).topics.empty());
  }
  expect_same(replied<proto::Description>(body(proto::Description{odd_status("d")})).status,
              odd_status("d"));
}

TEST(Protocol, AnErrorReplyIsTheDaemonsWhateverReplyWasExpected) {
  const Bytes e = body(proto::ErrorReply{ErrorCode::PermissionDenied, "uid 7 may not"}, 9);
  const auto r = proto::decode_reply<proto::TopicReply>(e);
  EXPECT_FALSE(r.message);
  EXPECT_TRUE(r.from_daemon);
  EXPECT_EQ(r.id, 9u);
  EXPECT_EQ(r.problem.code, ErrorCode::PermissionDenied);
  EXPECT_EQ(r.problem.message, "uid 7 may not");
  // A code this build does not know reads as SystemError.
  Bytes unknown = e;
  unknown[proto::kHeaderSize] = std::byte{200};
  EXPECT_EQ(proto::decode_reply<proto::Ok>(unknown).problem.code, ErrorCode::SystemError);
  // Another version's Error reply is still read: its message says what is wrong.
  Bytes other = e;
  set_u16(other, 0, proto::kVersion + 1);
  EXPECT_EQ(proto::decode_reply<proto::Ok>(other).problem.message, "uid 7 may not");
}

TEST(Protocol, TheRequestIdIsWrittenByFinish) {
  proto::Writer w(proto::Type::OpenTopic);
  w.str("x");
  const Bytes a = w.finish(1), b = w.finish(0xabcdef01);
  ASSERT_EQ(a.size(), b.size());
  std::uint32_t id = 0;
  std::memcpy(&id, b.data() + 4 + 4, 4);
  EXPECT_EQ(id, 0xabcdef01u);
  EXPECT_EQ(parsed<proto::OpenTopic>(body_of(b), 0xabcdef01).name, "x");
}

// ---- refusals: requests --------------------------------------------------------

TEST(Protocol, TruncatedRequestsAreRefusedSayingWhere) {
  const std::vector<Bytes> requests = {body(proto::Hello{"me"}),
                                       body(proto::CreateTopic{"orders", odd_options()}),
                                       body(proto::OpenTopic{"orders"}),
                                       body(proto::DeleteTopic{"orders"}),
                                       body(proto::Describe{"orders"}),
                                       body(proto::AttachProducer{"orders", 1}),
                                       body(proto::AttachMember{"o", 1, 2})};
  for (const Bytes& full : requests) {
    for (std::size_t n = 0; n < full.size(); ++n) {
      const Bytes cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
      const proto::Problem why = refused(cut);
      EXPECT_EQ(why.code, ErrorCode::InvalidArgument);
      if (n < proto::kHeaderSize)
        EXPECT_EQ(why.message, "frame shorter than its 8-byte header");
      else
        EXPECT_TRUE(why.message.find("is malformed: frame truncated at byte") !=
                        std::string::npos ||
                    why.message.find("overruns the frame") != std::string::npos)
            << why.message;
    }
  }
}

TEST(Protocol, TrailingBytesAreRefused) {
  for (Bytes b : {body(proto::ListTopics{}), body(proto::Shutdown{}), body(proto::OpenTopic{"t"}),
                  body(proto::AttachMember{"t", 0, 0})}) {
    b.push_back(std::byte{0});
    const proto::Problem why = refused(b);
    EXPECT_EQ(why.code, ErrorCode::InvalidArgument);
    EXPECT_NE(why.message.find("has trailing bytes"), std::string::npos) << why.message;
  }
}

TEST(Protocol, OversizedStringsAreRefusedAndNeverWritten) {
  // A length over the limit, with the bytes present: refused for its length.
  proto::Writer w(proto::Type::OpenTopic);
  w.u16(static_cast<std::uint16_t>(proto::kMaxString + 1));
  Bytes b = body_of(w.finish(1));
  b.resize(b.size() + proto::kMaxString + 1, std::byte{'a'});
  const proto::Problem why = refused(b);
  EXPECT_EQ(why.code, ErrorCode::InvalidArgument);
  EXPECT_NE(why.message.find("string of 1025 bytes is over the 1024-byte limit"), std::string::npos)
      << why.message;
  // The writer cuts a longer string at the limit (and decoders take that).
  const std::string long_text(5000, 'x');
  const auto e =
      proto::decode_reply<proto::Ok>(body(proto::ErrorReply{ErrorCode::Corrupt, long_text}));
  EXPECT_EQ(e.problem.message, long_text.substr(0, proto::kMaxString));
}

TEST(Protocol, AnotherVersionIsRefusedAsAVersionMismatch) {
  Bytes b = body(proto::Hello{"old"});
  set_u16(b, 0, 99);
  const proto::Problem why = refused(b);
  EXPECT_EQ(why.code, ErrorCode::VersionMismatch);
  EXPECT_NE(why.message.find("protocol version 99 is not spoken here"), std::string::npos);
  Bytes r = body(proto::HelloReply{"bus", 1});
  set_u16(r, 0, 1);
  const auto reply = proto::decode_reply<proto::HelloReply>(r);
  EXPECT_FALSE(reply.message);
  EXPECT_FALSE(reply.from_daemon);
  EXPECT_EQ(reply.problem.code, ErrorCode::VersionMismatch);
  EXPECT_NE(reply.problem.message.find("protocol version 1"), std::string::npos);
}

TEST(Protocol, UnknownAndReplyTypesAreNotRequests) {
  Bytes b = body(proto::ListTopics{});
  set_u16(b, 2, 999);
  EXPECT_EQ(refused(b).message, "unknown request type 999");
  set_u16(b, 2, 22);  // once Detach, never sent, now deleted
  EXPECT_EQ(refused(b).message, "unknown request type 22");
  EXPECT_NE(refused(body(proto::Ok{})).message.find("is a reply, not a request"),
            std::string::npos);
  EXPECT_NE(refused(body(proto::TopicList{})).message.find("is a reply"), std::string::npos);
}

TEST(Protocol, FieldsOutsideTheirRangeAreRefused) {
  // A flag byte other than 0 or 1 (single_producer is the 5th field).
  Bytes b = body(proto::CreateTopic{"t", odd_options()});
  const std::size_t flag_at = proto::kHeaderSize + 2 + 1 + 4 + 4 + 1;
  ASSERT_EQ(b[flag_at], std::byte{1});
  b[flag_at] = std::byte{2};
  EXPECT_NE(refused(b).message.find("flag byte 2 is neither 0 nor 1"), std::string::npos);
  // Names are validated: the daemon never sees "../etc" as a topic.
  const proto::Problem why = refused(body(proto::OpenTopic{"../etc"}));
  EXPECT_EQ(why.code, ErrorCode::InvalidArgument);
  EXPECT_EQ(refused(body(proto::AttachProducer{"", 0})).code, ErrorCode::InvalidArgument);
}

// ---- refusals: replies ---------------------------------------------------------

TEST(Protocol, BadRepliesAreSystemErrorsSayingWhy) {
  const auto problem = [](const Bytes& b) {
    const auto r = proto::decode_reply<proto::Description>(b);
    EXPECT_FALSE(r.message);
    EXPECT_FALSE(r.from_daemon);
    EXPECT_EQ(r.problem.code, ErrorCode::SystemError);
    return r.problem.message;
  };
  const Bytes full = body(proto::Description{odd_status("d")});
  for (std::size_t n = proto::kHeaderSize; n < full.size(); ++n)
    EXPECT_NE(problem(Bytes(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n)))
                  .find("is malformed"),
              std::string::npos);
  EXPECT_NE(problem(Bytes(full.begin(), full.begin() + 3)).find("shorter than its 8-byte header"),
            std::string::npos);
  Bytes trailing = full;
  trailing.push_back(std::byte{1});
  EXPECT_NE(problem(trailing).find("has trailing bytes"), std::string::npos);
  EXPECT_NE(problem(body(proto::Ok{})).find("unexpected reply (type 1, expected 17)"),
            std::string::npos);
  // A count no daemon sends is refused before anything is allocated for it.
  proto::Writer w(proto::Type::TopicList);
  w.u32(0xffffffff);
  const auto list = proto::decode_reply<proto::TopicList>(body_of(w.finish(1)));
  EXPECT_NE(list.problem.message.find("count 4294967295 is over the limit"), std::string::npos);
}

// ---- component reports ---------------------------------------------------------

proto::Report some_report(std::size_t counters = 3) {
  proto::Report r{"bridge-1", "bridge", {}};
  for (std::size_t i = 0; i < counters; ++i)
    r.counters.push_back({std::string("c").append(std::to_string(i)), (1ULL << 63) + i});
  return r;
}

ComponentReport some_entry(const std::string& name, std::uint32_t pid) {
  return {name,
          "bridge",
          pid,
          1000,
          1'700'000'000'123'456'789ULL,
          {{"forwarded", 123}, {"in_flight", 0}, {"acked", ~0ULL}}};
}

TEST(ProtocolReports, ReportAndListRoundTrip) {
  EXPECT_EQ(parsed<proto::Report>(body(some_report())), some_report());
  EXPECT_EQ(parsed<proto::Report>(body(some_report(0))), some_report(0));  // no counters
  EXPECT_EQ(parsed<proto::Report>(body(some_report(kMaxReportCounters))),
            some_report(kMaxReportCounters));
  (void)parsed<proto::ListReports>(body(proto::ListReports{}));
  const proto::ReportList list{
      {some_entry("a", 1), some_entry("b", 0xffffffff), {"empty", "x", 7, 0, 0, {}}}};
  EXPECT_EQ(replied<proto::ReportList>(body(list)).reports, list.reports);
  EXPECT_TRUE(replied<proto::ReportList>(body(proto::ReportList{})).reports.empty());
  // The wire format, byte for byte: name, kind, u32 count, (string, u64) each.
  const Bytes b = body(proto::Report{"n", "k", {{"v", 5}}}, 1);
  const Bytes fields(b.begin() + proto::kHeaderSize, b.end());
  const Bytes expect = {std::byte{1},   std::byte{0}, std::byte{'n'}, std::byte{1}, std::byte{0},
                        std::byte{'k'}, std::byte{1}, std::byte{0},   std::byte{0}, std::byte{0},
                        std::byte{1},   std::byte{0}, std::byte{'v'}, std::byte{5}, std::byte{0},
                        std::byte{0},   std::byte{0}, std::byte{0},   std::byte{0}, std::byte{0},
                        std::byte{0}};
  EXPECT_EQ(fields, expect);
  std::uint16_t type = 0;
  std::memcpy(&type, b.data() + 2, 2);
  EXPECT_EQ(type, 50);
}

TEST(ProtocolReports, EncodedSizeIsWhatAnEntryTakesInTheList) {
  const ComponentReport a = some_entry("a", 1), b = some_entry(std::string(63, 'b'), 2);
  EXPECT_EQ(body(proto::ReportList{{a, b}}).size(),
            proto::kHeaderSize + 4 + proto::encoded_size(a) + proto::encoded_size(b));
  EXPECT_EQ(proto::encoded_size({"n", "k", 0, 0, 0, {}}), 2u + 1 + 2 + 1 + 4 + 4 + 8 + 4);
}

TEST(ProtocolReports, TruncatedReportsAndListsAreRefusedSayingWhere) {
  const Bytes full = body(some_report());
  for (std::size_t n = proto::kHeaderSize; n < full.size(); ++n) {
    const proto::Problem why =
        refused(Bytes(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n)));
    EXPECT_EQ(why.code, ErrorCode::InvalidArgument);
    EXPECT_TRUE(why.message.find("is malformed: frame truncated at byte") != std::string::npos ||
                why.message.find("overruns the frame") != std::string::npos)
        << why.message;
  }
  const Bytes list = body(proto::ReportList{{some_entry("a", 1), some_entry("b", 2)}});
  for (std::size_t n = proto::kHeaderSize; n < list.size(); ++n) {
    const auto r = proto::decode_reply<proto::ReportList>(
        Bytes(list.begin(), list.begin() + static_cast<std::ptrdiff_t>(n)));
    EXPECT_FALSE(r.message);
    EXPECT_EQ(r.problem.code, ErrorCode::SystemError);
    EXPECT_NE(r.problem.message.find("is malformed"), std::string::npos) << r.problem.message;
  }
}

TEST(ProtocolReports, LeftoversAreRefused) {
  Bytes b = body(some_report());
  b.push_back(std::byte{0});
  EXPECT_NE(refused(b).message.find("has trailing bytes"), std::string::npos);
  Bytes l = body(proto::ListReports{});
  l.push_back(std::byte{0});
  EXPECT_NE(refused(l).message.find("has trailing bytes"), std::string::npos);
  Bytes r = body(proto::ReportList{{some_entry("a", 1)}});
  r.push_back(std::byte{0});
  EXPECT_NE(proto::decode_reply<proto::ReportList>(r).problem.message.find("has trailing bytes"),
            std::string::npos);
}

TEST(ProtocolReports, TooManyCountersOrEntriesAreRefusedBeforeAnythingIsRead) {
  // 33 counters, every one present: refused for the count.
  const proto::Problem why = refused(body(some_report(kMaxReportCounters + 1)));
  EXPECT_EQ(why.code, ErrorCode::InvalidArgument);
  EXPECT_NE(why.message.find("count 33 is over the limit of 32"), std::string::npos) << why.message;
  // A count no one sends, with nothing behind it.
  proto::Writer w(proto::Type::Report);
  w.str("n").str("k").u32(0xffffffff);
  EXPECT_NE(refused(body_of(w.finish(1))).message.find("count 4294967295 is over the limit"),
            std::string::npos);
  proto::Writer l(proto::Type::ReportList);
  l.u32(kMaxReports + 1);
  const auto r = proto::decode_reply<proto::ReportList>(body_of(l.finish(1)));
  EXPECT_NE(r.problem.message.find("count 257 is over the limit of 256"), std::string::npos)
      << r.problem.message;
  // An entry of too many counters inside a list.
  ComponentReport big = some_entry("big", 1);
  for (std::size_t i = 0; i < kMaxReportCounters; ++i)
    big.counters.push_back({std::string("x").append(std::to_string(i)), i});
  const auto rb = proto::decode_reply<proto::ReportList>(body(proto::ReportList{{big}}));
  EXPECT_FALSE(rb.message);
  EXPECT_NE(rb.problem.message.find("is over the limit of 32"), std::string::npos);
}

TEST(ProtocolReports, BadNamesAndOverlongStringsAreRefusedSayingWhat) {
  const auto refusal = [](proto::Report r) {
    const proto::Problem why = refused(body(r));
    EXPECT_EQ(why.code, ErrorCode::InvalidArgument);
    return why.message;
  };
  proto::Report r = some_report();
  r.name = "my bridge";
  EXPECT_EQ(refusal(r),
            "component name 'my bridge' contains ' '; use 1 to 63 characters from A-Z a-z 0-9 . "
            "_ -");
  r = some_report();
  r.name = "";
  EXPECT_NE(refusal(r).find("component name '' is empty"), std::string::npos);
  r = some_report();
  r.name = std::string(64, 'n');
  EXPECT_NE(refusal(r).find("is too long (64)"), std::string::npos);
  r = some_report();
  r.kind = "bri\tdge";
  EXPECT_NE(refusal(r).find("component 'bridge-1': kind 'bri\tdge' contains a non-printable"),
            std::string::npos);
  r = some_report();
  r.counters[1].name = "in/flight";
  EXPECT_NE(refusal(r).find("component 'bridge-1': counter name 'in/flight' contains '/'"),
            std::string::npos);
  r = some_report();
  r.counters[2].name = r.counters[0].name;
  EXPECT_NE(refusal(r).find("component 'bridge-1': counter 'c0' is reported twice"),
            std::string::npos);
  // A string over the protocol's limit, its bytes present: refused for its length.
  proto::Writer w(proto::Type::Report);
  w.str("n");
  Bytes b = body_of(w.finish(1));
  const auto n = static_cast<std::uint16_t>(proto::kMaxString + 1);
  b.push_back(static_cast<std::byte>(n & 0xff));
  b.push_back(static_cast<std::byte>(n >> 8));
  b.resize(b.size() + n, std::byte{'k'});
  b.resize(b.size() + 4, std::byte{0});  // no counters
  EXPECT_NE(refused(b).message.find("string of 1025 bytes is over the 1024-byte limit"),
            std::string::npos);
  // A reply's entries are checked as a request's: a bad name never reaches a terminal.
  ComponentReport bad = some_entry("ok", 1);
  bad.counters[0].name = "\x1b[2J";
  const auto rb = proto::decode_reply<proto::ReportList>(body(proto::ReportList{{bad}}));
  EXPECT_FALSE(rb.message);
  EXPECT_EQ(rb.problem.code, ErrorCode::SystemError);
  EXPECT_NE(rb.problem.message.find("report 0: component 'ok': counter name"), std::string::npos)
      << rb.problem.message;
  EXPECT_NE(refused(body(proto::ReportList{})).message.find("is a reply"), std::string::npos);
}

TEST(ProtocolReports, ValidateReportIsWhatTheBusChecksBeforeSending) {
  std::vector<ReportCounter> c(kMaxReportCounters + 1);
  for (std::size_t i = 0; i < c.size(); ++i)
    c[i].name = std::string("k").append(std::to_string(i));
  try {
    validate_report("bridge-1", "bridge", c);
    FAIL() << "33 counters accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("has 33 counters; at most 32"), std::string::npos);
  }
  c.pop_back();
  validate_report("bridge-1", "bridge", c);  // 32 are fine
  validate_report("a", "b", {});
}

// ---- the splitter --------------------------------------------------------------

TEST(Protocol, FrameBufferSplitsAStreamFedInAnyPieces) {
  Bytes stream;
  for (const Bytes& f : {proto::frame(proto::Hello{"a"}, 1), proto::frame(proto::ListTopics{}, 2),
                         proto::frame(proto::OpenTopic{"topic"}, 3)})
    stream.insert(stream.end(), f.begin(), f.end());
  for (std::size_t piece : {std::size_t{1}, std::size_t{3}, std::size_t{7}, stream.size()}) {
    proto::FrameBuffer fb;
    std::vector<std::uint32_t> ids;
    for (std::size_t at = 0; at < stream.size(); at += piece) {
      fb.feed(stream.data() + at, std::min(piece, stream.size() - at));
      while (auto b = fb.next()) {
        proto::Request q;
        proto::Problem why;
        ASSERT_TRUE(proto::parse_request(*b, q, why)) << why.message;
        ids.push_back(q.id);
      }
    }
    EXPECT_EQ(ids, (std::vector<std::uint32_t>{1, 2, 3})) << "pieces of " << piece;
    EXPECT_FALSE(fb.bad());
    EXPECT_EQ(fb.buffered(), 0u);
  }
}

TEST(Protocol, FrameBufferRefusesALengthOverItsLimit) {
  proto::FrameBuffer fb(16);
  const Bytes ok = proto::frame(proto::OpenTopic{"abcdef"}, 1);  // 8 + 2 + 6 = 16 bytes
  fb.feed(ok.data(), ok.size());
  ASSERT_TRUE(fb.next().has_value());
  const Bytes big = proto::frame(proto::OpenTopic{"abcdefg"}, 2);  // 17
  fb.feed(big.data(), 4);  // the prefix alone is enough to know
  EXPECT_FALSE(fb.next().has_value());
  EXPECT_TRUE(fb.bad());
  EXPECT_EQ(fb.bad_length(), 17u);
  fb.feed(ok.data(), ok.size());  // and the stream stays bad
  EXPECT_FALSE(fb.next().has_value());
  proto::FrameBuffer daemon_side;  // the daemon's limit
  const std::uint32_t huge = proto::kMaxFrame + 1;
  Bytes prefix(4);
  std::memcpy(prefix.data(), &huge, 4);
  daemon_side.feed(prefix.data(), 4);
  EXPECT_FALSE(daemon_side.next().has_value());
  EXPECT_EQ(daemon_side.bad_length(), huge);
}

}  // namespace
}  // namespace shmbus::test
