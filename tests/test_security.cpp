// Issue 14: a subscriber must not be able to write messages (part 1), and
// another user must not squat a user's bus (part 3). Each attack is staged as
// root (CI runs as root) with processes, directories and sockets of other
// uids, and must now be refused with an error that names what to do.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <string>

#include "in_process_daemon.hpp"
#include "os.hpp"
#include "protocol.hpp"
#include "region.hpp"

namespace shmbus::test {
namespace {

using namespace std::chrono_literals;

constexpr uid_t kOther = 65534;   // nobody: the attacker
constexpr uid_t kSecond = 65533;  // a second unprivileged uid: a legitimate publisher

// Drops this (child) process to `uid` for good; false on failure.
bool become(uid_t uid) {
  return ::setresgid(uid, uid, uid) == 0 && ::setresuid(uid, uid, uid) == 0;
}

// The message of the Error `f` throws, with its code in `code`.
std::string error_of(const std::function<void()>& f, ErrorCode& code) {
  try {
    f();
  } catch (const Error& e) {
    code = e.code();
    return e.what();
  }
  code = static_cast<ErrorCode>(255);
  return {};
}

BusOptions options_for(const std::string& bus, const std::string& socket) {
  BusOptions o;
  o.bus = bus;
  o.socket_path = socket;
  o.autospawn = false;
  o.timeout = 5s;
  return o;
}

TEST(Squatting, ASocketDirectoryAnotherUserControlsIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to stage another user's directory";
  TempDir base;
  // As the attacker does: a world-writable directory of their own, where the
  // victim's socket would go (the /tmp/shmbus-<uid> fallback).
  const std::string planted = base.path + "/planted";
  ASSERT_EQ(::mkdir(planted.c_str(), 0777), 0);
  ASSERT_EQ(::chown(planted.c_str(), kOther, kOther), 0);
  ASSERT_EQ(::chmod(planted.c_str(), 0777), 0);
  const std::string bus = unique_name("sq");
  ErrorCode code{};
  std::string m = error_of([&] { Bus::connect(options_for(bus, planted + "/bus.sock")); }, code);
  EXPECT_EQ(code, ErrorCode::PermissionDenied) << m;
  EXPECT_NE(m.find(planted), std::string::npos) << m;
  EXPECT_NE(m.find("uid 65534"), std::string::npos) << m;
  // The daemon refuses it too.
  daemon::Config c;
  c.bus = bus;
  c.socket_path = planted + "/bus.sock";
  c.log_level = "off";
  daemon::Daemon d(c);
  m = error_of([&] { d.start(); }, code);
  EXPECT_EQ(code, ErrorCode::PermissionDenied) << m;
  EXPECT_NE(m.find("refusing the socket directory"), std::string::npos) << m;
  // A directory of our own that others may write to: refused as well.
  const std::string loose = base.path + "/loose";
  ASSERT_EQ(::mkdir(loose.c_str(), 0700), 0);
  ASSERT_EQ(::chmod(loose.c_str(), 0775), 0);
  m = error_of([&] { Bus::connect(options_for(bus, loose + "/bus.sock")); }, code);
  EXPECT_EQ(code, ErrorCode::PermissionDenied) << m;
  EXPECT_NE(m.find("mode 0775"), std::string::npos) << m;
  // And a symbolic link to a good directory is not followed.
  const std::string good = base.path + "/good", link = base.path + "/link";
  ASSERT_EQ(::mkdir(good.c_str(), 0700), 0);
  ASSERT_EQ(::symlink(good.c_str(), link.c_str()), 0);
  EXPECT_NE(detail::untrusted_dir(link), "");
  EXPECT_EQ(detail::untrusted_dir(good), "");
  EXPECT_EQ(detail::untrusted_dir("/tmp"), "");  // root-owned and sticky
}

TEST(Squatting, SymlinkedLockAndLogAreNotFollowed) {
  TempDir dir;
  const std::string target = dir.path + "/target";
  // The daemon's lock: a planted link must not make it create a file elsewhere.
  ASSERT_EQ(::symlink(target.c_str(), (dir.path + "/bus.sock.lock").c_str()), 0);
  daemon::Config c;
  c.bus = unique_name("ln");
  c.socket_path = dir.path + "/bus.sock";
  c.log_level = "off";
  {
    daemon::Daemon d(c);
    ErrorCode code{};
    const std::string m = error_of([&] { d.start(); }, code);
    EXPECT_EQ(code, ErrorCode::PermissionDenied) << m;
    EXPECT_NE(m.find("symbolic link"), std::string::npos) << m;
  }
  struct stat st {};
  EXPECT_NE(::lstat(target.c_str(), &st), 0) << "the lock's link was followed";
  // The autospawn log, likewise.
  ASSERT_EQ(::unlink((dir.path + "/bus.sock.lock").c_str()), 0);
  ASSERT_EQ(::symlink(target.c_str(), (dir.path + "/bus.sock.log").c_str()), 0);
  BusOptions o = options_for(c.bus, c.socket_path);
  o.autospawn = true;
  o.daemon_path = SHMBUSD_PATH;
  ErrorCode code{};
  const std::string m = error_of([&] { Bus::connect(o); }, code);
  EXPECT_EQ(code, ErrorCode::DaemonUnavailable) << m;
  EXPECT_NE(m.find("symbolic link"), std::string::npos) << m;
  EXPECT_NE(::lstat(target.c_str(), &st), 0) << "the log's link was followed";
}

TEST(Squatting, ASocketServedByAnotherUserIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to listen as another user";
  // A directory anyone may use, as /tmp: root's and sticky. The attacker
  // listens there first, under the name the victim will use.
  TempDir dir;
  ASSERT_EQ(::chmod(dir.path.c_str(), 01777), 0);
  const std::string socket = dir.path + "/bus.sock";
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t squatter = spawn([&]() -> int {
    ::close(ready[0]);
    if (::setresgid(kOther, kOther, kOther) != 0 || ::setresuid(kOther, kOther, kOther) != 0)
      return 10;
    const int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", socket.c_str());
    if (s < 0 || ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(s, 8) != 0)
      return 11;
    if (::write(ready[1], "r", 1) != 1) return 12;
    ::pause();  // killed by the parent
    return 0;
  });
  ::close(ready[1]);
  char r = 0;
  // The child says when it listens (a blocking read; it writes or exits).
  ASSERT_EQ(::read(ready[0], &r, 1), 1) << "the squatter did not start";
  ::close(ready[0]);
  ErrorCode code{};
  const std::string m =
      error_of([&] { Bus::connect(options_for(unique_name("pc"), socket)); }, code);
  ::kill(squatter, SIGKILL);
  (void)wait_child(squatter, 10s);
  EXPECT_EQ(code, ErrorCode::DaemonUnavailable) << m;
  EXPECT_NE(m.find("uid 65534"), std::string::npos) << m;
  EXPECT_NE(m.find("squatting"), std::string::npos) << m;
}

// A bus shared through a service account: its daemon runs as another uid,
// which a client trusts only when told to (BusOptions::daemon_uid).
TEST(Squatting, AServiceAccountsDaemonIsTrustedOnlyWhenNamed) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a daemon as another user";
  TempDir dir;
  ASSERT_EQ(::chmod(dir.path.c_str(), 01777), 0);  // as /tmp: the service account may bind
  const std::string socket = dir.path + "/shared.sock", bus = unique_name("sh");
  const pid_t daemon = ::fork();
  if (daemon == 0) {
    if (::setresgid(kOther, kOther, kOther) != 0 || ::setresuid(kOther, kOther, kOther) != 0)
      ::_exit(10);
    ::execl(SHMBUSD_PATH, "shmbusd", "--bus", bus.c_str(), "--socket", socket.c_str(),
            "--log-level", "warn", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ASSERT_GT(daemon, 0);
  const bool up = wait_until([&] { return detail::socket_answers(socket); }, 20s);
  BusOptions o = options_for(bus, socket);
  ErrorCode code{};
  const std::string m = up ? error_of([&] { Bus::connect(o); }, code) : std::string();
  o.daemon_uid = kOther;
  int pid = 0;
  std::size_t topics = 1;
  if (up) {
    Bus shared = Bus::connect(o);
    pid = shared.daemon_pid();
    topics = shared.topics().size();
  }
  ::kill(daemon, SIGTERM);
  EXPECT_EQ(wait_child(daemon, 20s), 0);
  ASSERT_TRUE(up) << "the service account's daemon did not start";
  EXPECT_EQ(code, ErrorCode::DaemonUnavailable) << m;
  EXPECT_NE(m.find("uid 65534"), std::string::npos) << m;
  EXPECT_EQ(pid, daemon);
  EXPECT_EQ(topics, 0u);
}

// One user's flood of connections, each holding a half-sent frame, leaves the
// daemon serving everyone else: the per-uid limit refuses the surplus with a
// reason, and each connection buffers at most one frame (64 KiB).
TEST(Flooding, ConnectionsPerUidAreBoundedAndOthersAreServed) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to connect as another user";
  BusFixture f;
  // A daemon process, not a thread of ours: the child below is forked from a
  // single-threaded parent, as fork() without exec wants.
  const std::string cfg = f.dir.path + "/shmbusd.toml";
  std::ofstream(cfg) << "max_connections_per_uid = 8\n";
  DaemonProcess d(f.bus, f.socket, cfg);
  ASSERT_TRUE(d.start());
  int report[2], done[2];
  ASSERT_EQ(::pipe(report), 0);
  ASSERT_EQ(::pipe(done), 0);
  const std::string socket = f.socket;
  const pid_t flooder = spawn([&]() -> int {
    ::close(report[0]);
    ::close(done[1]);
    if (::setresgid(kOther, kOther, kOther) != 0 || ::setresuid(kOther, kOther, kOther) != 0)
      return 10;
    namespace proto = detail::proto;
    int accepted = 0, refused = 0;
    for (int i = 0; i < 64 && refused == 0; ++i) {
      const int fd = detail::connect_unix(socket);
      if (fd < 0) return 11;
      // A whole hello, and its answer: served, or refused with the reason.
      // A refused connection may be closed before the hello goes out (the
      // send then fails); its reason is queued for us all the same.
      (void)detail::send_frame(fd, proto::frame(proto::Hello{"flood"}, 1), {}, true);
      const detail::Received r = detail::recv_frame(fd, std::chrono::seconds(10));
      const auto hello = proto::decode_reply<proto::HelloReply>(r.body);
      if (hello.message) {
        ++accepted;
        // Then half a frame, which the daemon must buffer (and no more).
        const std::uint32_t len = 60000;
        std::byte half[4 + 1000] = {};
        std::memcpy(half, &len, 4);
        if (::send(fd, half, sizeof half, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof half))
          return 13;
        continue;  // kept open until the parent is done
      }
      if (!hello.from_daemon || hello.problem.code != ErrorCode::ResourceExhausted ||
          hello.problem.message.find("max_connections_per_uid") == std::string::npos)
        return 14;
      ++refused;
      ::close(fd);
    }
    const int counts[2] = {accepted, refused};
    if (::write(report[1], counts, sizeof counts) != static_cast<ssize_t>(sizeof counts)) return 15;
    char x = 0;
    (void)::read(done[0], &x, 1);  // the parent closes it when done
    return 0;
  });
  ::close(report[1]);
  ::close(done[0]);
  int counts[2] = {-1, -1};
  // A blocking read: the child writes its counts or exits (then 0 bytes).
  ASSERT_EQ(::read(report[0], counts, sizeof counts), static_cast<ssize_t>(sizeof counts));
  ::close(report[0]);
  EXPECT_EQ(counts[0], 8) << "connections the flooding uid got";
  EXPECT_EQ(counts[1], 1) << "the ninth is refused, with the reason";
  {
    // Meanwhile another user (root) is served as usual.
    Bus bus = Bus::connect(f.options());
    Topic t = bus.create_topic("calm", {});
    EXPECT_EQ(bus.describe("calm").name, "calm");
    Publisher p = t.publisher();
    auto s = t.subscriber(SubscriberOptions{.group = "", .start = StartFrom::Earliest});
    ASSERT_EQ(p.publish(bytes_of("ok")), Status::Ok);
    Sample sm;
    EXPECT_EQ(s->receive(sm, 5s), Status::Ok);
  }
  ::close(done[1]);
  EXPECT_EQ(wait_child(flooder, 30s), 0);
}

// Part 1: rights hold in the kernel. A uid the rules admit only to subscribe
// talks the protocol itself (whatever library code it runs) and gets the
// topic's data segment as a descriptor no mapping or call can write through.
TEST(Forging, ASubscribeOnlyUidCannotWriteAMessage) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to switch uid";
  BusFixture f;
  const std::string cfg = f.dir.path + "/shmbusd.toml";
  std::ofstream(cfg) << "[[topic]]\nname = \"pub.*\"\nsubscribe = \"*\"\n"
                        "publish = { uids = [65533] }\n";
  DaemonProcess d(f.bus, f.socket, cfg);
  ASSERT_TRUE(d.start());
  {
    Bus owner = Bus::connect(f.options());
    owner.create_topic("pub.a", {});
  }
  const BusOptions opts = f.options();
  const std::string socket = f.socket;
  const pid_t attacker = spawn([&]() -> int {
    if (!become(kOther)) return 10;
    namespace proto = detail::proto;
    const int sock = detail::connect_unix(socket);
    if (sock < 0) return 11;
    if (!detail::send_frame(sock, proto::frame(proto::Hello{"forger"}, 1)) ||
        !proto::decode_reply<proto::HelloReply>(detail::recv_frame(sock, 10s).body).message)
      return 12;
    if (!detail::send_frame(sock, proto::frame(proto::OpenTopic{"pub.a"}, 2))) return 13;
    detail::Received r = detail::recv_frame(sock, 10s);
    if (!proto::decode_reply<proto::TopicReply>(r.body).message || r.fds.size() != 2) return 14;
    const int data = r.fds[0];
    struct stat st {};
    if (::fstat(data, &st) != 0 || st.st_size <= 0) return 15;
    const auto size = static_cast<std::size_t>(st.st_size);
    // No writable shared mapping...
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, data, 0);
    if (p != MAP_FAILED || errno != EACCES) return 16;
    // ...nor a read-only one made writable later...
    p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, data, 0);
    if (p == MAP_FAILED) return 17;
    if (::mprotect(p, size, PROT_READ | PROT_WRITE) == 0 || errno != EACCES) return 18;
    ::munmap(p, size);
    // ...nor a write, a truncation, or a read-write re-open through /proc.
    if (::pwrite(data, "x", 1, 0) >= 0 || errno != EBADF) return 19;
    if (::ftruncate(data, 0) == 0 || errno != EINVAL) return 20;
    // The control segment it must write: sealed, so not resizable either.
    if (::ftruncate(r.fds[1], 0) == 0 || errno != EPERM) return 24;
    const std::string again = "/proc/self/fd/" + std::to_string(data);
    if (::open(again.c_str(), O_RDWR) >= 0 || errno != EACCES) return 21;
    // The library refuses before it writes anything (the mapping would fault).
    Bus bus = Bus::connect(opts);
    try {
      (void)bus.open_topic("pub.a").publisher();
      return 22;
    } catch (const Error& e) {
      if (e.code() != ErrorCode::PermissionDenied ||
          std::string(e.what()).find("subscribe rights only") == std::string::npos)
        return 23;
    }
    // It still subscribes.
    auto sub = bus.subscriber("pub.a");
    return 0;
  });
  EXPECT_EQ(wait_child(attacker, 60s), 0);
  // A second unprivileged uid with the publish right gets a writable topic.
  // (Forked before this process connects: a child of a single-threaded parent.)
  const pid_t publisher = spawn([&]() -> int {
    if (!become(kSecond)) return 10;
    Bus bus = Bus::connect(opts);
    Publisher p = bus.publisher("pub.a");
    return p.publish(bytes_of("legit")) == Status::Ok ? 0 : 11;
  });
  EXPECT_EQ(wait_child(publisher, 60s), 0);
  // A root subscriber from the start has exactly what was published: nothing forged.
  Bus root = Bus::connect(f.options());
  auto sub = root.subscriber("pub.a", SubscriberOptions{.group = "", .start = StartFrom::Earliest});
  Sample sm;
  ASSERT_EQ(sub->receive(sm, 5s), Status::Ok);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(sm.data().data()), sm.data().size()),
            "legit");
  sm = Sample{};
  EXPECT_EQ(sub->receive(sm, 100ms), Status::Timeout);
  EXPECT_EQ(root.describe("pub.a").tail, 1u);
  // The rules let another uid write pub.a's control segment, so its producers
  // do not trust the gate scan's proof (TopicHeader::shared_control); a topic
  // only its owner may use keeps the shortcut.
  root.create_topic("private", {});
  EXPECT_EQ(
      region_of(f.socket, f.bus, "pub.a")->header().shared_control.load(std::memory_order_relaxed),
      1);
  EXPECT_EQ(region_of(f.socket, f.bus, "private")
                ->header()
                .shared_control.load(std::memory_order_relaxed),
            0);
}

}  // namespace
}  // namespace shmbus::test
