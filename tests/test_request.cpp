// Request-reply (issue 16): Bus::request and Sample::reply through a real
// shmbusd, real processes and a real SIGKILL. Interleavings are forced with
// flags and the topic's tail, never with sleeps.
#include <signal.h>
#include <sys/mman.h>

#include <string>
#include <vector>

#include "daemon_util.hpp"

namespace shmbus::test {
namespace {

using namespace std::chrono_literals;

constexpr auto kWait = 10s;

TopicOptions service_options() {
  TopicOptions o = ring_options(256, 256);
  o.max_members = 8;
  return o;
}

bool topic_exists(Bus& bus, const std::string& name) {
  for (const TopicStatus& t : bus.topics())
    if (t.name == name) return true;
  return false;
}

std::vector<std::string> reply_topics(Bus& bus) {
  std::vector<std::string> out;
  for (const TopicStatus& t : bus.topics())
    if (t.name.starts_with("_reply.")) out.push_back(t.name);
  return out;
}

// Serves requests on `topic` in group "svc" until `stop` is set: replies
// "<prefix>:<request>".
int serve(const BusOptions& opts, const std::string& topic, const std::string& prefix,
          std::atomic<std::uint64_t>& joined, std::atomic<std::uint64_t>& stop) {
  Bus b = Bus::connect(opts);
  auto sub = b.subscriber(topic, {.group = "svc", .start = StartFrom::Earliest});
  joined.fetch_add(1);
  Sample s;
  while (stop.load() == 0) {
    const Status st = sub->receive(s, 50ms);
    if (st == Status::Timeout) continue;
    if (st != Status::Ok) return 10;
    const std::string reply = prefix + ":" + string_of(s.data());
    const Status r = s.reply(bytes_of(reply));
    if (r != Status::Ok && r != Status::TopicDeleted && r != Status::WouldBlock) return 11;
    s.release();
  }
  return 0;
}

// A real daemon on a bus of its own, and counters shared with children.
struct Served {
  BusFixture f;
  DaemonProcess d{f.bus, f.socket};
  SharedCounters* sh = make_shared_counters();
  Served() { EXPECT_TRUE(d.start()); }
};

// Answers the next request `responder` receives with `reply`, on a thread.
std::thread answer_once(Subscriber& responder, std::string reply) {
  return std::thread([&responder, reply = std::move(reply)] {
    Sample q;
    if (responder.receive(q, kWait) == Status::Ok) (void)q.reply(bytes_of(reply));
  });
}

TEST(RequestReply, ARequestGetsItsReplyAndTheReplyTopicGoesWithTheBus) {
  Served env;
  BusFixture& f = env.f;
  SharedCounters* sh = env.sh;
  // Forked before this process has threads (TSan's rule for a child that
  // starts its own); it waits for the topic.
  const pid_t responder = spawn([&] {
    if (!wait_until([&] { return sh->value[2].load() == 1; }, 30s)) return 2;
    return serve(f.options(), "svc", "r", sh->value[0], sh->value[1]);
  });
  Bus bus = Bus::connect(f.options());
  (void)bus.create_topic("svc", service_options());
  sh->value[2].store(1);
  ASSERT_TRUE(wait_until([&] { return sh->value[0].load() == 1; }, kWait));
  {
    Bus requester = Bus::connect(f.options());
    const std::array<Property, 1> props{{{"trace", "t-1"}}};
    Route r = Route::with_key("k");
    r.properties = props;
    EXPECT_EQ(string_of(requester.request("svc", r, bytes_of("ping"), kWait)), "r:ping");
    EXPECT_EQ(string_of(requester.request("svc", bytes_of("again"), kWait)), "r:again");
    Bus copy = requester;  // copies share the reply topic
    EXPECT_EQ(string_of(copy.request("svc", bytes_of("copy"), kWait)), "r:copy");
    const auto replies = reply_topics(bus);
    ASSERT_EQ(replies.size(), 1u);
    EXPECT_EQ(replies[0].rfind("_reply." + std::to_string(::getpid()) + ".", 0), 0u);
  }
  EXPECT_TRUE(reply_topics(bus).empty()) << "the reply topic outlived its Bus";
  sh->value[1].store(1);
  EXPECT_EQ(wait_child(responder, kWait), 0);
}

TEST(RequestReply, NoResponderTimesOutAndALateReplyIsCountedStale) {
  Served env;
  BusFixture& f = env.f;
  Bus bus = Bus::connect(f.options());
  Topic t = bus.create_topic("svc", service_options());
  auto responder = t.subscriber({.group = "svc", .start = StartFrom::Earliest});
  try {
    (void)bus.request("svc", bytes_of("first"), 50ms);
    FAIL() << "a request without a responder returned";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Timeout);
    EXPECT_NE(std::string(e.what()).find("no reply within"), std::string::npos) << e.what();
  }
  // The responder answers the first request late, then the second at once.
  Sample s;
  ASSERT_EQ(responder->receive(s, kWait), Status::Ok);
  EXPECT_EQ(s.properties().get("correlation_id").value_or("").size(), 32u)
      << "a random 128-bit id, in hex";
  ASSERT_EQ(s.reply(bytes_of("late")), Status::Ok);
  s.release();
  std::thread answer = answer_once(*responder, "second");
  EXPECT_EQ(string_of(bus.request("svc", bytes_of("second"), kWait)), "second");
  answer.join();
  EXPECT_EQ(bus.stale_replies(), 1u);
}

TEST(RequestReply, RepliesOnlyToRequestsAndOnlyToReplyTopics) {
  Served env;
  BusFixture& f = env.f;
  Bus bus = Bus::connect(f.options());
  Topic t = bus.create_topic("svc", service_options());
  (void)bus.create_topic("victim", service_options());
  auto sub = t.subscriber({.group = "svc", .start = StartFrom::Earliest});
  Publisher p = t.publisher();
  ASSERT_EQ(p.publish(bytes_of("plain")), Status::Ok);
  const std::array<Property, 2> forged{{{"reply_to", "victim"}, {"correlation_id", "1"}}};
  Route r;
  r.properties = forged;
  ASSERT_EQ(p.publish(r, bytes_of("forged")), Status::Ok);
  Sample s;
  ASSERT_EQ(sub->receive(s, kWait), Status::Ok);
  EXPECT_EQ(s.reply(bytes_of("x")), Status::NotARequest);
  s.release();
  ASSERT_EQ(sub->receive(s, kWait), Status::Ok);
  EXPECT_EQ(s.reply(bytes_of("x")), Status::NotARequest)
      << "a reply into a topic not a reply topic";
  s.release();
  EXPECT_EQ(bus.describe("victim").tail, 0u);
  EXPECT_EQ(Sample{}.reply(bytes_of("x")), Status::Invalid);
  // Nobody may create another process's reply topic.
  try {
    (void)bus.create_topic("_reply.1.0", service_options());
    FAIL() << "created pid 1's reply topic";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::PermissionDenied);
  }
  // Our own: the fixed geometry, whatever was asked, and at most 16.
  const std::string own = "_reply." + std::to_string(::getpid()) + ".";
  const TopicOptions got = bus.create_topic(own + "0", service_options()).options();
  EXPECT_EQ(got.slot_count, 64u);
  EXPECT_EQ(got.slot_size, 16384u);
  EXPECT_EQ(got.policy, Policy::Reject);
  for (int i = 1; i < 16; ++i)
    (void)bus.create_topic(own + std::to_string(i), {});
  try {
    (void)bus.create_topic(own + "16", {});
    FAIL() << "a 17th reply topic of one pid was created";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::ResourceExhausted);
  }
}

// 3 requester processes, 10,000 requests each, 2 responder processes in a
// shared group: every reply is the one to its request.
TEST(RequestReply, ThreeRequestersTwoRespondersEveryReplyMatched) {
  constexpr int kRequests = 10000;
  Served env;
  BusFixture& f = env.f;
  SharedCounters* sh = env.sh;
  // The children first: this process has no threads yet (TSan's rule for
  // children that start their own).
  std::vector<pid_t> responders;
  for (int k = 0; k < 2; ++k)
    responders.push_back(spawn([&, k] {
      if (!wait_until([&] { return sh->value[2].load() == 1; }, 30s)) return 2;
      return serve(f.options(), "svc", "r" + std::to_string(k), sh->value[0], sh->value[1]);
    }));
  std::vector<pid_t> requesters;
  for (int k = 0; k < 3; ++k)
    requesters.push_back(spawn([&, k] {
      if (!wait_until([&] { return sh->value[0].load() == 2; }, 30s)) return 2;
      Bus b = Bus::connect(f.options());
      for (int i = 0; i < kRequests; ++i) {
        const std::string q = std::to_string(k) + "/" + std::to_string(i);
        const std::string a = string_of(b.request("svc", bytes_of(q), 30s));
        if (a != "r0:" + q && a != "r1:" + q) {
          std::fprintf(stderr, "request %s got %s\n", q.c_str(), a.c_str());
          return 3;
        }
        sh->value[3].fetch_add(1);
      }
      return 0;
    }));
  {
    Bus bus = Bus::connect(f.options());
    (void)bus.create_topic("svc", service_options());
  }
  sh->value[2].store(1);
  for (const pid_t r : requesters)
    EXPECT_EQ(wait_child(r, 280s), 0);
  EXPECT_EQ(sh->value[3].load(), 3u * kRequests);
  sh->value[1].store(1);
  for (const pid_t r : responders)
    EXPECT_EQ(wait_child(r, kWait), 0);
}

// A requester SIGKILLed while its request waits: shmbusd removes its reply
// topic, and the responder's reply is dropped and counted, without waiting.
TEST(RequestReply, ARequesterKilledMidRequestDoesNotStallTheResponder) {
  Served env;
  BusFixture& f = env.f;
  SharedCounters* sh = env.sh;
  const pid_t requester = spawn([&] {
    if (!wait_until([&] { return sh->value[0].load() == 1; }, 30s)) return 2;
    Bus b = Bus::connect(f.options());
    (void)b.request("svc", bytes_of("never answered"), 60s);
    return 1;
  });
  Bus bus = Bus::connect(f.options());
  Topic t = bus.create_topic("svc", service_options());
  auto responder = t.subscriber({.group = "svc", .start = StartFrom::Earliest});
  sh->value[0].store(1);
  // The request is published (not only claimed: a claim the kill cut short
  // would be abandoned, and no request would come): the requester waits for
  // its reply.
  ASSERT_TRUE(wait_until([&] { return responder->ready(); }, kWait));
  ::kill(requester, SIGKILL);
  EXPECT_EQ(wait_child(requester, kWait), 128 + SIGKILL);
  EXPECT_TRUE(wait_until([&] { return reply_topics(bus).empty(); }, kWait))
      << "the dead requester's reply topic was not removed";
  Sample s;
  ASSERT_EQ(responder->receive(s, kWait), Status::Ok);
  const auto to = s.properties().get("reply_to");
  ASSERT_TRUE(to.has_value());
  EXPECT_FALSE(topic_exists(bus, std::string(*to)));
  EXPECT_EQ(s.reply(bytes_of("too late")), Status::TopicDeleted);
  EXPECT_EQ(responder->replies_dropped(), 1u);
  // And the responder goes on serving others.
  s.release();
  std::thread answer = answer_once(*responder, "served");
  EXPECT_EQ(string_of(bus.request("svc", bytes_of("next"), kWait)), "served");
  answer.join();
}

}  // namespace
}  // namespace shmbus::test
