// The README's C++ example, as a whole program. Run it twice: the second run
// finds the topic and the group there and reads the two new messages.
#include <cstdio>
#include <cstring>
#include <shmbus/shmbus.hpp>
using namespace std::chrono_literals;

int main(int argc, char** argv) {
  shmbus::BusOptions bo;                       // bus "default", socket $SHMBUS_SOCKET or its own
  if (argc > 1) bo.bus = argv[1];              // readme [BUS]
  shmbus::Bus bus = shmbus::Bus::connect(bo);  // starts shmbusd if none answers

  shmbus::TopicOptions options;  // 1024 slots of 1 KiB, policy block
  options.slot_size = 256;
  bus.create_topic("orders", options, /*if_not_exists=*/true);  // or bus.open_topic("orders")

  // Producer: copy in, or loan a slot and write in place.
  shmbus::Publisher pub = bus.publisher("orders");
  if (pub.publish(std::as_bytes(std::span("hello", 5))) != shmbus::Status::Ok) return 1;
  shmbus::Loan loan = pub.loan(64);
  if (!loan) return 1;  // no slot: loan.status() says why
  std::memcpy(loan.data().data(), "in place", 8);
  if (loan.publish(8) != shmbus::Status::Ok) return 1;  // dropping a loan publishes nothing

  // Consumer: a member of group "billing", reading in place.
  shmbus::SubscriberOptions so;
  so.group = "billing";
  so.start = shmbus::StartFrom::Earliest;  // where a new group starts
  auto sub = bus.subscriber("orders", so);
  shmbus::Sample s;
  while (sub->receive(s, 100ms) == shmbus::Status::Ok) {
    std::printf("#%llu %.*s\n", static_cast<unsigned long long>(s.sequence()),
                static_cast<int>(s.data().size()),  // a view into the slot
                reinterpret_cast<const char*>(s.data().data()));
    s.release();  // or let it go out of scope
  }
  return 0;
}
