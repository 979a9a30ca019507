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

}  // namespace
}  // namespace shmbus::test
