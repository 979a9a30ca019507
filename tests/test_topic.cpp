// Topic regions: names, creation, opening, and refusal of stale or foreign files.
#include <fcntl.h>
#include <sys/mman.h>

#include <vector>

#include "shmbus/detail/layout.hpp"
#include "test_util.hpp"

namespace shmbus::test {

namespace {

ErrorCode code_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.code();
  }
  ADD_FAILURE() << "no shmbus::Error was thrown";
  return ErrorCode::SystemError;
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return {};
}

TEST(TopicNames, RejectsInvalidNamesWithAClearMessage) {
  for (const std::string& bad : std::vector<std::string>{"", std::string(64, 'a'), "a/b", "a b",
                                                         std::string("a\x01"), "..", "ä"}) {
    EXPECT_EQ(code_of([&] { Topic::create(bad, {}); }), ErrorCode::InvalidArgument) << bad;
  }
  EXPECT_NE(message_of([] { Topic::create("a/b", {}); }).find("contains '/'"), std::string::npos);
  EXPECT_NE(message_of([] { Topic::create("", {}); }).find("is empty"), std::string::npos);
  EXPECT_NE(message_of([] { Topic::create(std::string("x\x02"), {}); }).find("non-printable"),
            std::string::npos);
  EXPECT_EQ(code_of([] { Topic::create("ok", {}, "bad/bus"); }), ErrorCode::InvalidArgument);
  EXPECT_EQ(region_name("default", "orders"), "shmbus.default.orders");
}

TEST(TopicCreate, RejectsInvalidOptions) {
  const auto with = [](auto change) {
    TopicOptions o;
    change(o);
    return code_of([&] { Topic::create(unique_name("opt"), o); });
  };
  EXPECT_EQ(with([](TopicOptions& o) { o.slot_count = 1000; }), ErrorCode::InvalidArgument);
  EXPECT_EQ(with([](TopicOptions& o) { o.slot_count = 1; }), ErrorCode::InvalidArgument);
  EXPECT_EQ(with([](TopicOptions& o) { o.slot_size = 0; }), ErrorCode::InvalidArgument);
  EXPECT_EQ(with([](TopicOptions& o) { o.max_groups = 0; }), ErrorCode::InvalidArgument);
  EXPECT_EQ(with([](TopicOptions& o) { o.policy = static_cast<Policy>(7); }),
            ErrorCode::InvalidArgument);
  EXPECT_EQ(with([](TopicOptions& o) {
              o.slot_count = 1u << 24;
              o.slot_size = 64u << 20;
            }),
            ErrorCode::InvalidArgument);
}

TEST(TopicCreate, CreateOpenRemove) {
  const std::string name = unique_name("cor");
  TopicOptions o;
  o.slot_count = 16;
  o.slot_size = 100;
  o.policy = Policy::Reject;
  {
    Topic t = Topic::create(name, o);
    EXPECT_EQ(code_of([&] { Topic::create(name, o); }), ErrorCode::AlreadyExists);
    Topic u = Topic::open(name);
    const TopicStatus i = u.status();
    EXPECT_EQ(i.name, name);
    EXPECT_EQ(i.options.slot_count, 16u);
    EXPECT_EQ(i.options.slot_size, 100u);
    EXPECT_EQ(i.options.policy, Policy::Reject);
    EXPECT_EQ(i.generation, t.status().generation);
    EXPECT_NE(i.generation, 0u);
    EXPECT_EQ(u.options().slot_count, 16u);
  }
  EXPECT_TRUE(Topic::remove(name));
  EXPECT_FALSE(Topic::remove(name));
  EXPECT_EQ(code_of([&] { Topic::open(name); }), ErrorCode::NotFound);
}

TEST(TopicCreate, RegionHasTheRequestedMode) {
  ScopedTopic t("mode", [] {
    TopicOptions o;
    o.mode = 0640;
    return o;
  }());
  struct stat st {};
  ASSERT_EQ(::stat(("/dev/shm/" + region_name("default", t.name)).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
}

// Writes `bytes` as a file under /dev/shm with a topic's region name.
void write_foreign(const std::string& name, const std::string& bytes) {
  const std::string path = "/dev/shm/" + region_name("default", name);
  const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  ::close(fd);
}

TEST(TopicOpen, RefusesForeignAndStaleFiles) {
  const std::string name = unique_name("foreign");
  write_foreign(name, "hello");
  EXPECT_EQ(code_of([&] { Topic::open(name); }), ErrorCode::Corrupt);
  EXPECT_NE(message_of([&] { Topic::open(name); }).find("too small"), std::string::npos);
  write_foreign(name, std::string(4096, 'x'));
  EXPECT_EQ(code_of([&] { Topic::open(name); }), ErrorCode::Corrupt);
  EXPECT_NE(message_of([&] { Topic::open(name); }).find("not a shmbus topic"), std::string::npos);
  Topic::remove(name);
}

// Copies a real region, changes one header field, and opens the copy.
template <class Change>
ErrorCode open_tampered(Change change) {
  TopicOptions o;
  o.slot_count = 8;
  o.slot_size = 64;
  ScopedTopic t("tamper", o);
  const std::string path = "/dev/shm/" + region_name("default", t.name);
  const int fd = ::open(path.c_str(), O_RDWR);
  EXPECT_GE(fd, 0);
  struct stat st {};
  ::fstat(fd, &st);
  void* p =
      ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  change(*static_cast<detail::TopicHeader*>(p), path);
  ::munmap(p, static_cast<size_t>(st.st_size));
  return code_of([&] { Topic::open(t.name); });
}

TEST(TopicOpen, RefusesTamperedHeaders) {
  EXPECT_EQ(open_tampered([](detail::TopicHeader& h, auto&) { h.layout_version = 99; }),
            ErrorCode::VersionMismatch);
  EXPECT_EQ(open_tampered([](detail::TopicHeader& h, auto&) { h.slot_count = 12; }),
            ErrorCode::Corrupt);
  EXPECT_EQ(open_tampered([](detail::TopicHeader& h, auto&) { h.slot_count = 1u << 20; }),
            ErrorCode::Corrupt);
  EXPECT_EQ(open_tampered([](detail::TopicHeader& h, auto&) { h.slots_offset += 64; }),
            ErrorCode::Corrupt);
  EXPECT_EQ(open_tampered([](detail::TopicHeader& h, auto&) { h.stride = 8; }), ErrorCode::Corrupt);
  EXPECT_EQ(open_tampered([](detail::TopicHeader& h, auto&) { h.max_members = 100000; }),
            ErrorCode::Corrupt);
  EXPECT_EQ(open_tampered([](detail::TopicHeader&, const std::string& path) {
              ASSERT_EQ(::truncate(path.c_str(), 1024), 0);  // over the header, under the slots
            }),
            ErrorCode::Corrupt);
}

TEST(TopicSeats, SingleProducerRefusesASecondPublisher) {
  TopicOptions o;
  o.single_producer = true;
  ScopedTopic t("sp", o);
  Publisher first = t.topic.publisher();
  EXPECT_EQ(code_of([&] { (void)t.topic.publisher(); }), ErrorCode::ResourceExhausted);
  EXPECT_NE(message_of([&] { (void)t.topic.publisher(); }).find("single-producer"),
            std::string::npos);
}

TEST(TopicSeats, SeatsRunOutWithAClearErrorAndAreReused) {
  TopicOptions o;
  o.max_producers = 2;
  o.max_groups = 2;
  o.max_members = 1;
  ScopedTopic t("seats", o);
  {
    Publisher a = t.topic.publisher(), b = t.topic.publisher();
    EXPECT_EQ(code_of([&] { (void)t.topic.publisher(); }), ErrorCode::ResourceExhausted);
  }
  Publisher c = t.topic.publisher();  // freed seats are reused
  SubscriberOptions g;
  g.group = "g";
  auto m1 = t.topic.subscriber(g);
  EXPECT_EQ(code_of([&] { (void)t.topic.subscriber(g); }), ErrorCode::ResourceExhausted);
  auto p1 = t.topic.subscriber();
  EXPECT_EQ(code_of([&] { (void)t.topic.subscriber(); }), ErrorCode::ResourceExhausted);
  p1.reset();
  auto p2 = t.topic.subscriber();  // the private group's entry was freed
  SubscriberOptions bad;
  bad.group = "no/slash";
  EXPECT_EQ(code_of([&] { (void)t.topic.subscriber(bad); }), ErrorCode::InvalidArgument);
}

TEST(TopicSeats, AReusedSeatGetsANewSessionAndFreshCounters) {
  TopicOptions o;
  o.max_producers = 1;  // the second publisher must take the first one's seat
  ScopedTopic t("session", o);
  std::uint64_t first = 0;
  {
    Publisher a = t.topic.publisher();
    ASSERT_EQ(a.publish(bytes_of("abc")), Status::Ok);
    const TopicStatus s = t.topic.status();
    ASSERT_EQ(s.producer_seats.size(), 1u);
    first = s.producer_seats[0].session;
    EXPECT_NE(first, 0u);
    EXPECT_EQ(s.producer_seats[0].published, 1u);
    EXPECT_EQ(s.producer_seats[0].published_bytes, 3u);
  }
  Publisher b = t.topic.publisher();
  const TopicStatus s = t.topic.status();
  ASSERT_EQ(s.producer_seats.size(), 1u);
  EXPECT_EQ(s.producer_seats[0].seat, 0u);
  EXPECT_GT(s.producer_seats[0].session, first);  // `shmbus stat` tells the two apart
  EXPECT_EQ(s.producer_seats[0].published, 0u);
}

TEST(TopicStatusReport, AGroupBehindTheRingIsShownOverrunBeforeItReads) {
  TopicOptions o;
  o.slot_count = 8;
  ScopedTopic t("overrun", o);
  SubscriberOptions g;
  g.group = "slow";
  g.start = StartFrom::Earliest;
  { auto joined_and_left = t.topic.subscriber(g); }  // the group stays, with no members
  Publisher pub = t.topic.publisher();
  for (int i = 0; i < 20; ++i)  // no member: the group gates nothing
    ASSERT_EQ(pub.publish(bytes_of("m")), Status::Ok);
  TopicStatus st = t.topic.status();
  ASSERT_EQ(st.groups.size(), 1u);
  EXPECT_EQ(st.groups[0].position, 0u);
  EXPECT_EQ(st.groups[0].lag, 20u);
  EXPECT_EQ(st.groups[0].lost, 0u);
  EXPECT_EQ(st.groups[0].overrun, 12u);  // 0..11 are gone: the ring keeps 12..19
  auto back = t.topic.subscriber(g);
  Sample s;
  ASSERT_EQ(back->try_receive(s), Status::Ok);
  EXPECT_EQ(s.sequence(), 12u);
  s.release();
  st = t.topic.status();
  EXPECT_EQ(st.groups[0].lost, 12u);  // what was pending is now counted
  EXPECT_EQ(st.groups[0].overrun, 0u);
}

}  // namespace
}  // namespace shmbus::test
