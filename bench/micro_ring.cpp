// Micro-benchmarks of shmbus's hot path in one process and one thread: what a
// publish, a loan, a claim and a receive cost when nothing waits. Cross-process
// figures (the ones that matter for users) are in shmbus-compare (bench/compare).
//
// Every benchmark creates its own topic, named with the pid so that parallel
// runs do not collide, and removes it when done.

#include <benchmark/benchmark.h>
#include <time.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "shmbus/shmbus.hpp"

namespace {

std::atomic<int> g_counter{0};

// A topic that exists for one benchmark run.
class ScratchTopic {
 public:
  explicit ScratchTopic(const shmbus::TopicOptions& o)
      : name_("micro-" + std::to_string(::getpid()) + "-" +
              std::to_string(g_counter.fetch_add(1, std::memory_order_relaxed))) {
    topic_.push_back(shmbus::Topic::create(name_, o));
  }
  ~ScratchTopic() {
    topic_.clear();
    (void)shmbus::Topic::remove(name_);
  }
  ScratchTopic(const ScratchTopic&) = delete;
  ScratchTopic& operator=(const ScratchTopic&) = delete;
  const shmbus::Topic& operator*() const { return topic_.front(); }
  const shmbus::Topic* operator->() const { return &topic_.front(); }

 private:
  std::string name_;
  std::vector<shmbus::Topic> topic_;  // exactly one; Topic has no default constructor
};

shmbus::TopicOptions topic_options(std::size_t slot_size, bool single_producer = false) {
  shmbus::TopicOptions o;
  o.slot_count = 1024;
  o.slot_size = static_cast<std::uint32_t>(slot_size);
  o.policy = shmbus::Policy::Block;
  o.single_producer = single_producer;
  return o;
}

shmbus::PublisherOptions busy_publisher() {
  shmbus::PublisherOptions o;
  o.wait = shmbus::WaitStrategy::BusySpin;
  return o;
}

std::uint64_t seq_of(std::span<const std::byte> d) {
  std::uint64_t v = 0;
  std::memcpy(&v, d.data(), sizeof v);
  return v;
}

// One message through the whole ring per iteration, producer and consumer
// side: publish() (or try_publish()) of it, then try_receive() on a
// private-group subscriber, so the gate (consumer cursor) is live as in real use.
void publish_then_receive(benchmark::State& state, bool single_producer, bool try_variant) {
  const auto size = static_cast<std::size_t>(state.range(0));
  ScratchTopic topic(topic_options(size, single_producer));
  shmbus::Publisher pub = topic->publisher(busy_publisher());
  auto sub = topic->subscriber();
  std::vector<std::byte> msg(size, std::byte{0x5a});
  std::uint64_t seq = 0;
  shmbus::Sample s;
  for (auto _ : state) {
    std::memcpy(msg.data(), &seq, sizeof seq);
    if ((try_variant ? pub.try_publish(msg) : pub.publish(msg)) != shmbus::Status::Ok) {
      state.SkipWithError(try_variant ? "try_publish failed" : "publish failed");
      break;
    }
    if (sub->try_receive(s) != shmbus::Status::Ok || seq_of(s.data()) != seq) {
      state.SkipWithError("try_receive did not return the message just published");
      break;
    }
    s.release();
    ++seq;
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(size));
}

void BM_PublishTryReceive(benchmark::State& state) {
  publish_then_receive(state, false, false);
}
BENCHMARK(BM_PublishTryReceive)->Arg(64);

// loan() + write the sequence number + publish(), no subscriber: the producer's
// cost alone (with no gating group the ring never fills).
void BM_LoanPublish(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  ScratchTopic topic(topic_options(size));
  shmbus::Publisher pub = topic->publisher(busy_publisher());
  std::uint64_t seq = 0;
  for (auto _ : state) {
    shmbus::Loan loan = pub.loan(size);
    if (!loan) {
      state.SkipWithError("loan failed");
      break;
    }
    std::memcpy(loan.data().data(), &seq, sizeof seq);
    if (loan.publish() != shmbus::Status::Ok) {
      state.SkipWithError("publish of a loan failed");
      break;
    }
    ++seq;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_LoanPublish)->Arg(64)->Arg(4096);

// loan() + publish() followed by try_receive() + release(): the zero-copy round.
void BM_LoanPublishTryReceive(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  ScratchTopic topic(topic_options(size));
  shmbus::Publisher pub = topic->publisher(busy_publisher());
  auto sub = topic->subscriber();
  std::uint64_t seq = 0;
  shmbus::Sample s;
  for (auto _ : state) {
    shmbus::Loan loan = pub.loan(size);
    if (!loan) {
      state.SkipWithError("loan failed");
      break;
    }
    std::memcpy(loan.data().data(), &seq, sizeof seq);
    if (loan.publish() != shmbus::Status::Ok) {
      state.SkipWithError("publish of a loan failed");
      break;
    }
    if (sub->try_receive(s) != shmbus::Status::Ok || seq_of(s.data()) != seq) {
      state.SkipWithError("try_receive did not return the message just published");
      break;
    }
    s.release();
    ++seq;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_LoanPublishTryReceive)->Arg(64);

// try_publish() of 64 B with no subscriber, on a multi-producer topic (claim by
// CAS) and on a single_producer topic (claim by a plain store).
void try_publish_bench(benchmark::State& state, bool single_producer) {
  const auto size = static_cast<std::size_t>(state.range(0));
  ScratchTopic topic(topic_options(size, single_producer));
  shmbus::Publisher pub = topic->publisher(busy_publisher());
  std::vector<std::byte> msg(size, std::byte{0x5a});
  std::uint64_t seq = 0;
  for (auto _ : state) {
    std::memcpy(msg.data(), &seq, sizeof seq);
    if (pub.try_publish(msg) != shmbus::Status::Ok) {
      state.SkipWithError("try_publish failed");
      break;
    }
    ++seq;
  }
  state.SetItemsProcessed(state.iterations());
}
void BM_TryPublish_MultiProducer(benchmark::State& state) {
  try_publish_bench(state, false);
}
void BM_TryPublish_SingleProducer(benchmark::State& state) {
  try_publish_bench(state, true);
}
BENCHMARK(BM_TryPublish_MultiProducer)->Arg(64);
BENCHMARK(BM_TryPublish_SingleProducer)->Arg(64);

// try_publish() with a subscriber draining every message (see publish_then_receive).
void BM_TryPublishDrained_MultiProducer(benchmark::State& state) {
  publish_then_receive(state, false, true);
}
void BM_TryPublishDrained_SingleProducer(benchmark::State& state) {
  publish_then_receive(state, true, true);
}
BENCHMARK(BM_TryPublishDrained_MultiProducer)->Arg(64);
BENCHMARK(BM_TryPublishDrained_SingleProducer)->Arg(64);

constexpr std::size_t kBatch = 16;

// Publishes sequences seq .. seq + kBatch - 1; false (the error reported) on a failure.
bool publish_run(benchmark::State& state, shmbus::Publisher& pub, std::vector<std::byte>& msg,
                 std::uint64_t seq) {
  for (std::size_t k = 0; k < kBatch; ++k) {
    const std::uint64_t v = seq + k;
    std::memcpy(msg.data(), &v, sizeof v);
    if (pub.try_publish(msg) != shmbus::Status::Ok) {
      state.SkipWithError("try_publish failed");
      return false;
    }
  }
  return true;
}

// 16 publishes, then receive_batch(16): one claim for 16 messages. Items are messages.
void BM_ReceiveBatch16(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  ScratchTopic topic(topic_options(size, true));
  shmbus::Publisher pub = topic->publisher(busy_publisher());
  auto sub = topic->subscriber();
  std::vector<std::byte> msg(size, std::byte{0x5a});
  std::uint64_t seq = 0;
  shmbus::Batch b;
  for (auto _ : state) {
    if (!publish_run(state, pub, msg, seq)) return;
    if (sub->receive_batch(b, kBatch, std::chrono::nanoseconds(0)) != shmbus::Status::Ok ||
        b.size() != kBatch) {
      state.SkipWithError("receive_batch did not return the 16 messages just published");
      return;
    }
    for (std::size_t k = 0; k < kBatch; ++k) {
      if (seq_of(b.data(k)) != seq + k) {
        state.SkipWithError("receive_batch returned a wrong sequence");
        return;
      }
    }
    b.release();
    seq += kBatch;
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(kBatch));
}
BENCHMARK(BM_ReceiveBatch16)->Arg(64);

// The comparison for BM_ReceiveBatch16: the same 16 messages taken one by one.
void BM_TryReceive16(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  ScratchTopic topic(topic_options(size, true));
  shmbus::Publisher pub = topic->publisher(busy_publisher());
  auto sub = topic->subscriber();
  std::vector<std::byte> msg(size, std::byte{0x5a});
  std::uint64_t seq = 0;
  shmbus::Sample s;
  for (auto _ : state) {
    if (!publish_run(state, pub, msg, seq)) return;
    for (std::size_t k = 0; k < kBatch; ++k) {
      if (sub->try_receive(s) != shmbus::Status::Ok || seq_of(s.data()) != seq + k) {
        state.SkipWithError("try_receive returned a wrong or no message");
        return;
      }
      s.release();
    }
    seq += kBatch;
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(kBatch));
}
BENCHMARK(BM_TryReceive16)->Arg(64);

// Floors, to read the rows above against: every publish reads CLOCK_MONOTONIC
// (the slot's timestamp) and issues a seq_cst fence (notify()'s StoreLoad).
void BM_Floor_ClockMonotonic(benchmark::State& state) {
  for (auto _ : state) {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    benchmark::DoNotOptimize(ts);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Floor_ClockMonotonic);

void BM_Floor_SeqCstFence(benchmark::State& state) {
  std::atomic<std::uint64_t> word{0};
  std::uint64_t v = 0;
  for (auto _ : state) {
    // The shape of a publish's tail: a release store, a full fence, a load.
    word.store(++v, std::memory_order_release);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    benchmark::DoNotOptimize(word.load(std::memory_order_relaxed));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Floor_SeqCstFence);

}  // namespace

BENCHMARK_MAIN();
