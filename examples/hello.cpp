// The smallest shmbus program: create a topic, publish, receive zero-copy.
#include <cstdio>
#include <cstring>
#include <shmbus/shmbus.hpp>

int main() {
  using namespace std::chrono_literals;
  shmbus::Topic::remove("hello");
  shmbus::TopicOptions options;
  options.slot_count = 64;
  options.slot_size = 256;
  shmbus::Topic topic = shmbus::Topic::create("hello", options);

  auto subscriber = topic.subscriber();  // a private group, starting at the latest message
  shmbus::Publisher publisher = topic.publisher();

  const char text[] = "hello, shared memory";
  if (publisher.publish(std::as_bytes(std::span(text, sizeof text - 1))) != shmbus::Status::Ok)
    return 1;
  shmbus::Loan loan = publisher.loan(5);  // write in place
  std::memcpy(loan.data().data(), "world", 5);
  if (loan.publish() != shmbus::Status::Ok) return 1;

  shmbus::Sample sample;
  while (subscriber->receive(sample, 100ms) == shmbus::Status::Ok) {
    std::printf("#%llu %.*s\n", static_cast<unsigned long long>(sample.sequence()),
                static_cast<int>(sample.data().size()),
                reinterpret_cast<const char*>(sample.data().data()));
    sample.release();
  }
  shmbus::Topic::remove("hello");
  return 0;
}
