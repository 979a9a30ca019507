#include <unistd.h>
#include <cstdio>
#include <shmbus/shmbus.hpp>
#include <string>

int main() {
  const std::string name = "install-check-" + std::to_string(getpid());
  shmbus::Topic topic = shmbus::Topic::create(name);
  auto sub = topic.subscriber();
  shmbus::Publisher pub = topic.publisher();
  const char msg[] = "installed";
  bool ok = pub.publish(std::as_bytes(std::span(msg, 9))) == shmbus::Status::Ok;
  shmbus::Sample s;
  ok = ok && sub->try_receive(s) == shmbus::Status::Ok && s.data().size() == 9;
  s.release();
  shmbus::Topic::remove(name);
  std::puts(ok ? "find_package(shmbus) consumer: ok" : "find_package(shmbus) consumer: FAILED");
  return ok ? 0 : 1;
}
