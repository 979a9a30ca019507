// The publish timestamp (detail::StampClock): CLOCK_MONOTONIC, read with a
// bare TSC between exact anchors. It must stay within the clock and never go
// back, through many anchors and once it extrapolates.
#include <vector>

#include "shmbus/detail/clock.hpp"
#include "test_util.hpp"

namespace shmbus::test {
namespace {

using namespace std::chrono_literals;

// Each value lies between two clock reads taken around it, give or take the
// error of the anchor's pair (half its width, ~15 ns) and of the rate over
// 20 us (10 ns at most): 100 ns allowed. A rate off by 0.5% would be 100 ns
// off at the end of an anchor.
void expect_tracks_the_clock(detail::StampClock& c, std::uint64_t for_ns) {
  constexpr std::uint64_t kTolerance = 100;
  const std::uint64_t t0 = detail::now_ns();
  std::uint64_t prev = 0, n = 0, outside = 0, backwards = 0;
  for (;; ++n) {
    const std::uint64_t before = detail::now_ns();
    const std::uint64_t v = c.now();
    const std::uint64_t after = detail::now_ns();
    if (v + kTolerance < before || v > after + kTolerance) {
      if (outside++ == 0)
        ADD_FAILURE() << "value " << v << " outside [" << before << ", " << after
                      << "] by more than " << kTolerance << " ns";
    }
    if (v < prev && backwards++ == 0) ADD_FAILURE() << "went back from " << prev << " to " << v;
    prev = v;
    if (after - t0 >= for_ns) break;
  }
  EXPECT_EQ(outside, 0u) << "of " << n;
  EXPECT_EQ(backwards, 0u) << "of " << n;
}

// Where the TSC is not the clocksource every call reads the clock, and these
// two tests would compare the clock with itself: they say so and skip.
TEST(StampClock, TracksTheClockAndNeverGoesBack) {
  if (!detail::StampClock::tsc_usable()) GTEST_SKIP() << "the TSC is not the clocksource here";
  detail::StampClock::prepare();  // as a publisher does: the first anchor has a rate
  detail::StampClock c;
  expect_tracks_the_clock(c, 20'000'000);
  EXPECT_TRUE(c.extrapolating()) << "the TSC is the clocksource, yet every call read the clock";
  expect_tracks_the_clock(c, 20'000'000);
}

// Spaced calls: each one past its anchor's window takes a new anchor, and a
// pause longer than two windows takes the clock as it is.
TEST(StampClock, SpacedCallsStayOnTheClock) {
  if (!detail::StampClock::tsc_usable()) GTEST_SKIP() << "the TSC is not the clocksource here";
  detail::StampClock::prepare();
  detail::StampClock c;
  expect_tracks_the_clock(c, 20'000'000);
  for (const std::chrono::microseconds pause : {30us, 100us, 2000us}) {
    // A gap in the caller's use of the clock, exactly as long as asked (a sleep
    // would overshoot 30 us by the timer slack and miss the just-past-the-window case).
    const std::uint64_t from = detail::now_ns();
    while (detail::now_ns() - from < static_cast<std::uint64_t>(pause.count()) * 1000) {
    }
    expect_tracks_the_clock(c, 100'000);
  }
}

// Publish timestamps come from the clock: between a read before the publish
// and one after the receive.
TEST(StampClock, PublishedTimestampsLieBetweenPublishAndReceive) {
  ScopedTopic t("stamps", ring_options(8, 64));
  auto sub = t.topic.subscriber();
  Publisher pub = t.topic.publisher();
  const std::uint64_t t0 = detail::now_ns();
  for (std::uint64_t i = 0; detail::now_ns() - t0 < 20'000'000; ++i) {
    const std::uint64_t before = detail::now_ns();
    ASSERT_EQ(pub.publish(std::as_bytes(std::span(&i, 1))), Status::Ok);
    Sample s;
    ASSERT_EQ(sub->try_receive(s), Status::Ok);
    const std::uint64_t after = detail::now_ns();
    ASSERT_GE(s.timestamp_ns() + 100, before) << "message " << i;
    ASSERT_LE(s.timestamp_ns(), after + 100) << "message " << i;
  }
}

}  // namespace
}  // namespace shmbus::test
