// A consumer's stall check (detail::check_stalled, issue 14) against healthy
// topics: a claim that a live producer holds for many timed-out waits, however
// long, is never taken for damage. Each test holds the claim open until the
// consumers have timed out (and so checked) several times, a condition, never
// a sleep, then publishes it and checks that it arrives intact, exactly once,
// with corrupt() and lost() at 0. Daemonless: nothing repairs anything here.
#include <algorithm>
#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "test_util.hpp"

namespace shmbus::test {
namespace {

using namespace std::chrono_literals;

constexpr std::uint32_t kSlots = 8;
constexpr auto kDeadline = 20s;  // for every wait on a condition below

std::array<std::uint64_t, 2> payload_of(std::uint64_t s) {
  return {s * 0x9e3779b97f4a7c15ULL + 1, ~s};
}

Status publish_seq(Publisher& p, std::uint64_t s, std::chrono::nanoseconds timeout = 0ns) {
  const auto v = payload_of(s);
  return p.publish(std::as_bytes(std::span(v)), timeout);
}

// Subscribers that receive on their own threads with timeout `wait`, counting
// the receives that timed out; each records what it received and any status
// other than Ok and Timeout.
class Consumers {
 public:
  Consumers(std::vector<Subscriber*> subs, std::chrono::nanoseconds wait) : wait_(wait) {
    for (Subscriber* s : subs)
      threads_.emplace_back([this, s] { run(*s); });
  }
  ~Consumers() { stop(); }
  void stop() {
    stop_.store(true, std::memory_order_relaxed);  // relaxed: a flag; join() orders the rest
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }
  // How many times the consumer that timed out least did so.
  int timeouts() const {
    int n = timeouts_[0].load(std::memory_order_relaxed);  // relaxed: counters
    for (std::size_t i = 1; i < threads_.size(); ++i)
      n = std::min(n, timeouts_[i].load(std::memory_order_relaxed));
    return n;
  }
  bool timed_out(int n) const { return timeouts() >= n; }
  std::size_t received() const {
    std::lock_guard lock(mu_);
    return got_.size();
  }
  std::vector<std::uint64_t> sequences() const {
    std::lock_guard lock(mu_);
    return got_;
  }
  int bad() const { return bad_.load(std::memory_order_relaxed); }  // relaxed: a counter

 private:
  void run(Subscriber& s) {
    const std::size_t me = next_.fetch_add(1, std::memory_order_relaxed);  // relaxed: an index
    while (!stop_.load(std::memory_order_relaxed)) {                       // relaxed: a flag
      Sample m;
      const Status st = s.receive(m, wait_);
      if (st == Status::Timeout) {
        timeouts_[me].fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
        continue;
      }
      if (st != Status::Ok || m.data().size() != sizeof(std::array<std::uint64_t, 2>) ||
          std::memcmp(m.data().data(), payload_of(m.sequence()).data(), m.data().size()) != 0) {
        std::fprintf(stderr, "consumer %zu: %s\n", me, std::string(to_string(st)).c_str());
        bad_.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
        continue;
      }
      std::lock_guard lock(mu_);
      got_.push_back(m.sequence());
    }
  }

  std::chrono::nanoseconds wait_;
  std::atomic<bool> stop_{false};
  std::atomic<std::size_t> next_{0};
  std::array<std::atomic<int>, 4> timeouts_{};
  std::atomic<int> bad_{0};
  mutable std::mutex mu_;
  std::vector<std::uint64_t> got_;
  std::vector<std::thread> threads_;
};

// Consumers that received exactly [first, first + n), each once, undamaged.
void expect_exactly(const Consumers& c, std::uint64_t first, std::uint64_t n) {
  EXPECT_EQ(c.bad(), 0);
  std::vector<std::uint64_t> got = c.sequences();
  std::sort(got.begin(), got.end());
  std::vector<std::uint64_t> want(n);
  for (std::uint64_t i = 0; i < n; ++i)
    want[i] = first + i;
  EXPECT_EQ(got, want);
}

// One producer's loan sits on `next` while other producers fill the ring
// behind it up to the last sequence it allows (tail = next + slot_count, the
// bound check_stalled allows a live claim), under every policy, for a private
// group and for a named group of two competing members, single-producer or
// not, in the ring's first lap and in a later one. `wait` is the consumers'
// receive timeout: short ones check often, kStallCheck-long ones check after
// whole slices.
void loan_behind(Policy policy, bool named, bool single, std::uint64_t before,
                 std::chrono::nanoseconds wait, int timeouts) {
  SCOPED_TRACE(::testing::Message()
               << "policy " << to_string(policy) << (named ? " named" : " private")
               << (single ? " single-producer" : "") << ", " << before << " published before, wait "
               << wait.count() << " ns");
  TopicOptions to = ring_options(kSlots, 64, policy);
  to.single_producer = single;
  ScopedTopic t("stall", to);
  SubscriberOptions so;
  if (named) so.group = "g";
  std::vector<std::unique_ptr<Subscriber>> subs;
  subs.push_back(t.topic.subscriber(so));
  if (named) subs.push_back(t.topic.subscriber(so));
  PublisherOptions po;
  po.timeout = 0ms;
  Publisher pub = t.topic.publisher(po);
  std::optional<Publisher> other;
  if (!single) other.emplace(t.topic.publisher(po));
  for (std::uint64_t s = 0; s < before; ++s) {
    ASSERT_EQ(publish_seq(pub, s), Status::Ok);
    Sample m;
    ASSERT_EQ(subs[s % subs.size()]->try_receive(m), Status::Ok);
  }
  const std::uint64_t next = before;
  Loan slow = pub.loan(sizeof(std::array<std::uint64_t, 2>));  // claims `next`, and sits on it
  ASSERT_TRUE(slow);
  ASSERT_EQ(slow.sequence(), next);
  std::uint64_t behind = 0;  // published behind the loan, by the other producer
  if (other) {
    // A later claim that commits first: a loan of next + 1, published at once.
    Loan quick = other->loan(sizeof(std::array<std::uint64_t, 2>));
    ASSERT_TRUE(quick);
    const auto v = payload_of(next + 1);
    std::memcpy(quick.data().data(), v.data(), sizeof v);
    ASSERT_EQ(quick.publish(), Status::Ok);
    for (behind = 2; behind < kSlots; ++behind)
      ASSERT_EQ(publish_seq(*other, next + behind), Status::Ok);
    // The ring is full: next + slot_count waits for the loan's slot.
    EXPECT_NE(publish_seq(*other, next + kSlots), Status::Ok);
    EXPECT_EQ(t.topic.status().tail, next + kSlots);
  }
  std::vector<Subscriber*> raw;
  for (auto& s : subs)
    raw.push_back(s.get());
  Consumers c(raw, wait);
  ASSERT_TRUE(wait_until([&] { return c.timed_out(timeouts); }, kDeadline));
  EXPECT_EQ(c.received(), 0u);
  EXPECT_EQ(subs[0]->position(), next);
  EXPECT_EQ(subs[0]->corrupt(), 0u);
  const auto v = payload_of(next);
  std::memcpy(slow.data().data(), v.data(), sizeof v);
  ASSERT_EQ(slow.publish(), Status::Ok);
  const std::uint64_t n = other ? kSlots : 1;
  EXPECT_TRUE(wait_until([&] { return c.received() >= n; }, kDeadline));
  if (other) {
    // The ring moved on once the consumers let go of what they took: a
    // consumer counts a message before its sample is released, so the first
    // try may still find the slot held (WouldBlock, nothing claimed).
    EXPECT_TRUE(
        wait_until([&] { return publish_seq(*other, next + kSlots) == Status::Ok; }, kDeadline));
  }
  EXPECT_TRUE(wait_until([&] { return c.received() >= n + (other ? 1 : 0); }, kDeadline));
  c.stop();
  expect_exactly(c, next, n + (other ? 1 : 0));
  EXPECT_EQ(subs[0]->corrupt(), 0u);
  EXPECT_EQ(subs[0]->lost(), 0u);
}

TEST(Stall, ALoanWithTheRingFullBehindItIsNeverTakenForDamage) {
  for (const Policy policy : {Policy::Block, Policy::Reject, Policy::Overwrite})
    for (const bool named : {false, true})
      for (const bool single : {false, true})
        for (const std::uint64_t before : {std::uint64_t{0}, std::uint64_t{3 * kSlots + 3}})
          loan_behind(policy, named, single, before, 2ms, 10);
}

// The same across whole kStallCheck slices (a receive of 1.2 s checks after
// its first 1 s slice and after the 0.2 s rest), twice each.
TEST(Stall, ALoanHeldAcrossWholeSecondSlicesIsNeverTakenForDamage) {
  loan_behind(Policy::Block, true, false, kSlots + 5, 1200ms, 2);
  loan_behind(Policy::Overwrite, false, false, kSlots + 5, 1200ms, 2);
}

// Groups whose cursors jumped (a start at the latest, a seek back onto the
// loan, a seek past it): none of them takes the loan for damage, and a group
// that sought past it does not let producers write over it (the gate's
// "proven floor" shortcut does not cover a jump).
TEST(Stall, GroupsThatJumpedAroundALoanWaitForIt) {
  for (const bool keep_back : {false, true}) {
    SCOPED_TRACE(keep_back ? "a group sought back onto the loan" : "only groups past the loan");
    ScopedTopic t("stalljump", ring_options(kSlots, 64, Policy::Block));
    PublisherOptions po;
    po.timeout = 0ms;
    Publisher pub = t.topic.publisher(po);
    Publisher other = t.topic.publisher(po);
    auto first = t.topic.subscriber();  // gates until the other groups exist
    for (std::uint64_t s = 0; s < kSlots + 2; ++s) {
      ASSERT_EQ(publish_seq(pub, s), Status::Ok);
      Sample m;
      ASSERT_EQ(first->try_receive(m), Status::Ok);
    }
    const std::uint64_t next = kSlots + 2;
    Loan slow = pub.loan(sizeof(std::array<std::uint64_t, 2>));
    ASSERT_TRUE(slow);
    for (std::uint64_t s = next + 1; s < next + 4; ++s)
      ASSERT_EQ(publish_seq(other, s), Status::Ok);
    auto latest = t.topic.subscriber();  // starts at the tail, next + 4
    auto past = t.topic.subscriber();
    past->seek(next + 1);
    std::unique_ptr<Subscriber> back;
    if (keep_back) {
      back = t.topic.subscriber();
      back->seek(next);
    }
    first.reset();  // the loan is now held back only by its own stamp (and `back`)
    {
      Sample m;
      for (std::uint64_t s = next + 1; s < next + 4; ++s) {
        ASSERT_EQ(past->try_receive(m), Status::Ok);
        EXPECT_EQ(m.sequence(), s);
      }
    }
    // Everything up to next + slot_count - 1 may be written; next + slot_count not.
    for (std::uint64_t s = next + 4; s < next + kSlots; ++s)
      ASSERT_EQ(publish_seq(other, s), Status::Ok);
    EXPECT_NE(publish_seq(other, next + kSlots), Status::Ok);
    std::vector<Subscriber*> raw{latest.get(), past.get()};
    if (back) raw.push_back(back.get());
    Consumers c(raw, 2ms);
    // `past` and `latest` take next + 4 .. next + slot_count - 1, then wait at the tail.
    ASSERT_TRUE(
        wait_until([&] { return c.received() >= 2 * (kSlots - 4) && c.timed_out(10); }, kDeadline));
    EXPECT_EQ(c.bad(), 0);
    if (back) {
      EXPECT_EQ(back->position(), next);
    }
    EXPECT_NE(publish_seq(other, next + kSlots), Status::Ok);
    const auto v = payload_of(next);
    std::memcpy(slow.data().data(), v.data(), sizeof v);
    ASSERT_EQ(slow.publish(), Status::Ok);
    // `back` may still hold the ring up to next + 3: wait for it to move on.
    EXPECT_TRUE(
        wait_until([&] { return publish_seq(other, next + kSlots) == Status::Ok; }, kDeadline));
    const std::size_t want = 2 * (kSlots - 4 + 1) + (back ? kSlots + 1 : 0);
    EXPECT_TRUE(wait_until([&] { return c.received() >= want; }, kDeadline));
    c.stop();
    EXPECT_EQ(c.bad(), 0);
    EXPECT_EQ(c.received(), want);
    for (Subscriber* s : raw) {
      EXPECT_EQ(s->corrupt(), 0u);
      EXPECT_EQ(s->lost(), 0u);
      EXPECT_EQ(s->position(), next + kSlots + 1);
    }
  }
}

// A producer whose claim met a group that joined under it (Publisher::after_join):
// while it waits for that group to make room, the claimed slot still shows
// the previous occupant, which the new group has yet to take; a group already
// at the claim waits for it. Given up instead (no wait), the claim is
// abandoned: skipped, not counted as corrupt.
TEST(Stall, AClaimWaitingForAGroupThatJoinedUnderItIsNotDamage) {
  for (const bool gives_up : {false, true}) {
    SCOPED_TRACE(gives_up ? "the claim is given up" : "the claim waits for room");
    ScopedTopic t("stalljoin", ring_options(kSlots, 64, Policy::Block));
    PublisherOptions po;
    po.timeout = 0ms;
    Publisher pub = t.topic.publisher(po);
    // slot_count + 1 messages with nothing gating: the last one rescanned the
    // gate and cached "nothing gates", so the next claims need no rescan.
    for (std::uint64_t s = 0; s <= kSlots; ++s)
      ASSERT_EQ(publish_seq(pub, s), Status::Ok);
    const std::uint64_t next = kSlots + 1;
    SubscriberOptions early;
    early.start = StartFrom::Earliest;
    auto oldest = t.topic.subscriber(early);  // at 1: needs every slot
    auto latest = t.topic.subscriber();       // at the tail, `next`
    Consumers c({latest.get()}, 2ms);
    ASSERT_TRUE(wait_until([&] { return c.timed_out(3); }, kDeadline));
    if (gives_up) {
      // Claimed, found the join, and gave the claim up rather than wait.
      const auto v = payload_of(next);
      EXPECT_EQ(pub.try_publish(std::as_bytes(std::span(v))), Status::WouldBlock);
      EXPECT_EQ(t.topic.status().tail, next + 1);
      EXPECT_EQ(t.topic.status().abandoned, 1u);
    } else {
      std::atomic<int> result{-1};
      std::thread late([&] {
        // Relaxed: polled as a flag, and read after join() below.
        result.store(static_cast<int>(publish_seq(pub, next, 20s)), std::memory_order_relaxed);
      });
      // The claim is made (the tail passed it) and waits for `oldest`, while
      // `latest` times out (and checks) on it again and again.
      EXPECT_TRUE(wait_until([&] { return t.topic.status().tail == next + 1; }, kDeadline));
      const int seen = c.timeouts();
      EXPECT_TRUE(wait_until([&] { return c.timed_out(seen + 10); }, kDeadline));
      EXPECT_EQ(result.load(std::memory_order_relaxed), -1);  // relaxed: as above
      EXPECT_EQ(c.received(), 0u);
      Sample m;
      ASSERT_EQ(oldest->try_receive(m), Status::Ok);  // makes room for `next`
      m.release();
      late.join();
      EXPECT_EQ(result.load(std::memory_order_relaxed), static_cast<int>(Status::Ok));
    }
    {
      Sample m;
      while (oldest->try_receive(m) == Status::Ok) {
      }
    }
    ASSERT_EQ(publish_seq(pub, next + 1), Status::Ok);
    EXPECT_TRUE(wait_until([&] { return c.received() >= (gives_up ? 1u : 2u); }, kDeadline));
    c.stop();
    if (gives_up)
      expect_exactly(c, next + 1, 1);
    else
      expect_exactly(c, next, 2);
    EXPECT_EQ(latest->corrupt(), 0u);
    EXPECT_EQ(latest->lost(), 0u);
    EXPECT_EQ(oldest->corrupt(), 0u);
  }
}

}  // namespace
}  // namespace shmbus::test
