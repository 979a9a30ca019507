// The lifecycle of topics through the real daemon: deleting a topic under its
// publishers and subscribers tells them (after the subscribers drained what
// was published), delete --if-unused refuses while seats are attached.
#include <atomic>
#include <thread>
#include <vector>

#include "in_process_daemon.hpp"

namespace shmbus::test {
namespace {

using namespace std::chrono_literals;

TopicOptions small(Policy p = Policy::Block) {
  TopicOptions o;
  o.slot_count = 16;
  o.slot_size = 64;
  o.policy = p;
  return o;
}

std::string text_of(const Sample& s) {
  return {reinterpret_cast<const char*>(s.data().data()), s.data().size()};
}

TEST(TopicDelete, SubscribersDrainThenSeeTopicDeletedPublishersAtOnce) {
  for (const WaitStrategy w :
       {WaitStrategy::SpinFutex, WaitStrategy::SpinYield, WaitStrategy::BusySpin}) {
    SCOPED_TRACE(to_string(w));
    BusFixture f;
    InProcessDaemon d(config_for(f));
    Bus bus = Bus::connect(f.options());
    Topic t = bus.create_topic("t", small());
    SubscriberOptions so;
    so.wait = w;
    auto sub = t.subscriber(so);
    SubscriberOptions go = so;
    go.group = "g";
    auto member = t.subscriber(go);
    Publisher pub = t.publisher();
    ASSERT_EQ(pub.publish(bytes_of("m1")), Status::Ok);
    // A receive that would wait for ever, in another thread: whether it is
    // asleep, spinning or not yet started when the delete comes, it must get
    // m1, m2 and then TopicDeleted.
    std::vector<std::string> got;
    Status last = Status::Ok;
    std::thread reader([&] {
      Sample s;
      while ((last = sub->receive(s, std::chrono::hours(24 * 3650))) == Status::Ok) {
        got.push_back(text_of(s));
        s.release();
      }
    });
    ASSERT_EQ(pub.publish(bytes_of("m2")), Status::Ok);
    bus.delete_topic("t");
    reader.join();
    EXPECT_EQ(last, Status::TopicDeleted);
    EXPECT_EQ(got, (std::vector<std::string>{"m1", "m2"}));
    // Nothing accepted after the delete, and the publisher is told.
    EXPECT_EQ(pub.publish(bytes_of("late")), Status::TopicDeleted);
    EXPECT_EQ(pub.try_publish(bytes_of("late")), Status::TopicDeleted);
    EXPECT_FALSE(pub.loan(4));
    // The named group drains too, with every call.
    Sample s;
    ASSERT_EQ(member->try_receive(s), Status::Ok);
    EXPECT_EQ(text_of(s), "m1");
    Batch b;
    ASSERT_EQ(member->receive_batch(b, 8, 1s), Status::Ok);
    EXPECT_EQ(b.size(), 1u);
    b.release();
    s.release();
    EXPECT_EQ(member->try_receive(s), Status::TopicDeleted);
    std::byte buf[64];
    MessageInfo info;
    EXPECT_EQ(member->receive_copy(buf, info, 1s), Status::TopicDeleted);
    // A topic created again under the name is another topic: the old handles
    // stay told, the new one works.
    Topic again = bus.create_topic("t", small());
    Publisher fresh = again.publisher();
    ASSERT_EQ(fresh.publish(bytes_of("new")), Status::Ok);
    EXPECT_EQ(sub->receive(s, 10ms), Status::TopicDeleted);
    EXPECT_EQ(bus.describe("t").published, 1u);
  }
}

TEST(TopicDelete, APublisherWaitingOnAFullRingIsToldAndOverwriteTopicsToo) {
  BusFixture f;
  InProcessDaemon d(config_for(f));
  Bus bus = Bus::connect(f.options());
  {
    Topic t = bus.create_topic("full", small());
    auto sub = t.subscriber();  // gates, never reads: the ring fills
    PublisherOptions po;
    po.timeout = std::chrono::hours(24);
    Publisher pub = t.publisher(po);
    for (int i = 0; i < 16; ++i)
      ASSERT_EQ(pub.publish(bytes_of("x")), Status::Ok);
    Status st = Status::Ok;
    std::thread writer([&] { st = pub.publish(bytes_of("waits")); });
    bus.delete_topic("full");
    writer.join();
    EXPECT_EQ(st, Status::TopicDeleted);
  }
  {
    Topic t = bus.create_topic("ow", small(Policy::Overwrite));
    Publisher pub = t.publisher();
    ASSERT_EQ(pub.publish(bytes_of("x")), Status::Ok);
    bus.delete_topic("ow");
    EXPECT_EQ(pub.publish(bytes_of("y")), Status::TopicDeleted);
  }
}

TEST(TopicDelete, IfUnusedRefusesWhileSeatsAreAttached) {
  BusFixture f;
  InProcessDaemon d(config_for(f));
  Bus bus = Bus::connect(f.options());
  Topic t = bus.create_topic("busy", small());
  {
    auto sub = t.subscriber();
    EXPECT_EQ(code_of([&] { bus.delete_topic("busy", /*if_unused=*/true); }), ErrorCode::InUse);
  }
  {
    Publisher pub = t.publisher();
    EXPECT_EQ(code_of([&] { bus.delete_topic("busy", true); }), ErrorCode::InUse);
  }
  bus.delete_topic("busy", true);  // nothing attached any more
  EXPECT_EQ(code_of([&] { bus.describe("busy"); }), ErrorCode::NotFound);
}

TEST(Groups, DescribeDeleteAndResetAsKafkaConsumerGroupsDoes) {
  BusFixture f;
  InProcessDaemon d(config_for(f));
  Bus bus = Bus::connect(f.options());
  TopicOptions o = small();
  o.slot_count = 8;
  o.max_groups = 2;
  Topic t = bus.create_topic("orders", o);
  Publisher pub = t.publisher();
  SubscriberOptions billing;
  billing.group = "billing";
  billing.start = StartFrom::Earliest;
  {
    auto member = t.subscriber(billing);
    for (int i = 0; i < 5; ++i)
      ASSERT_EQ(pub.publish(bytes_of("m")), Status::Ok);
    Sample s;
    ASSERT_EQ(member->try_receive(s), Status::Ok);  // holds 0
    const GroupStatus g = bus.describe_group("orders", "billing");
    ASSERT_EQ(g.member_seats.size(), 1u);
    EXPECT_EQ(g.member_seats[0].pid, static_cast<std::uint32_t>(::getpid()));
    EXPECT_EQ(g.member_seats[0].held, 0u);
    EXPECT_EQ(g.member_seats[0].received, 1u);
    EXPECT_EQ(g.position, 1u);
    EXPECT_EQ(g.lag, 4u);
    // Its members' positions are theirs: refused while one lives.
    EXPECT_EQ(code_of([&] { bus.delete_group("orders", "billing"); }), ErrorCode::InUse);
    EXPECT_EQ(code_of([&] {
                bus.reset_group("orders", "billing", {StartFrom::Latest, 0});
              }),
              ErrorCode::InUse);
    {
      auto p = t.subscriber();  // a private group: the topic's second
      EXPECT_EQ(bus.describe("orders").groups.size(), 2u);
    }
    // A private group goes with its last member.
    EXPECT_EQ(bus.describe("orders").groups.size(), 1u);
  }
  // Member gone: the named group stays, with its position.
  EXPECT_EQ(bus.describe_group("orders", "billing").position, 1u);
  EXPECT_EQ(bus.describe_group("orders", "billing").members, 0u);
  bus.reset_group("orders", "billing", {StartFrom::Latest, 0});
  EXPECT_EQ(bus.describe_group("orders", "billing").position, 5u);
  bus.reset_group("orders", "billing", {StartFrom::Offset, 2});
  EXPECT_EQ(bus.describe_group("orders", "billing").position, 2u);
  EXPECT_EQ(code_of([&] {
              bus.reset_group("orders", "billing", {StartFrom::Offset, 6});
            }),
            ErrorCode::InvalidArgument);  // past the tail
  for (int i = 0; i < 10; ++i)            // no member: the group gates nothing, the ring moves on
    ASSERT_EQ(pub.publish(bytes_of("m")), Status::Ok);
  bus.reset_group("orders", "billing", {StartFrom::Earliest, 0});
  EXPECT_EQ(bus.describe_group("orders", "billing").position, 15u - 8u);
  {
    auto back = t.subscriber(billing);  // goes on from the reset position
    Sample s;
    ASSERT_EQ(back->try_receive(s), Status::Ok);
    EXPECT_EQ(s.sequence(), 7u);
  }
  // Groups run out (max_groups 2) until one is deleted.
  SubscriberOptions audit;
  audit.group = "audit";
  { auto a = t.subscriber(audit); }
  SubscriberOptions third;
  third.group = "third";
  EXPECT_EQ(code_of([&] { (void)t.subscriber(third); }), ErrorCode::ResourceExhausted);
  bus.delete_group("orders", "audit");
  EXPECT_EQ(code_of([&] { bus.describe_group("orders", "audit"); }), ErrorCode::NotFound);
  EXPECT_EQ(code_of([&] { bus.delete_group("orders", "audit"); }), ErrorCode::NotFound);
  auto now_fits = t.subscriber(third);
  EXPECT_EQ(bus.describe("orders").groups.size(), 2u);
}

}  // namespace
}  // namespace shmbus::test
