#include <unistd.h>
#include <cstdio>
#include <shmbus/shmbus.hpp>
#include <shmbus/version.hpp>
#include <string>

// argv[1]: how it was built (find_package, pkg-config), for the report.
int main(int argc, char** argv) {
  const char* how = argc > 1 ? argv[1] : "installed";
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
  std::printf("%s consumer of shmbus %s: %s\n", how, shmbus::version(), ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
