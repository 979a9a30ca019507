// Issue 14, part 2: shmbusd's regions are sealed memfds, which have no name a
// restarted daemon could find; the keeper (daemon/keeper.hpp) holds them so
// that a topic outlives a daemon crash, as a /dev/shm file did. Real daemons,
// real keepers, real SIGKILLs.
#include <dirent.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <initializer_list>
#include <string>

#include "daemon_util.hpp"
#include "in_process_daemon.hpp"
#include "keeper.hpp"

namespace shmbus::test {
namespace {

using namespace std::chrono_literals;

// The pid of the keeper listening for the daemon at `socket` (SO_PEERCRED of
// a connection it accepts), or -1 when none answers. The connection closes
// at once: the keeper drops a peer that sends nothing. Non-blocking: a
// stopped keeper's full backlog is -1, not a wait.
pid_t keeper_pid(const std::string& socket) {
  const int s = detail::connect_unix(daemon::keeper_path(socket), SOCK_NONBLOCK);
  if (s < 0) return -1;
  pid_t pid = -1;
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) pid = cred.pid;
  ::close(s);
  return pid;
}

// Waits (up to 20 s) for a keeper to answer that is none of `others`; its
// pid, or -1. Until the keeper has started, the socket is the daemon's
// (bound and listened on before the fork) and SO_PEERCRED names the daemon:
// pass its pid among `others`.
pid_t await_keeper(const std::string& socket, std::initializer_list<pid_t> others) {
  pid_t pid = -1;
  return wait_until(
             [&] {
               pid = keeper_pid(socket);
               return pid > 0 && std::find(others.begin(), others.end(), pid) == others.end();
             },
             20s)
             ? pid
             : -1;
}

// Whether process `pid` holds a descriptor of the memfd `name`.
bool holds_memfd(pid_t pid, const std::string& name) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return false;
  bool found = false;
  while (dirent* e = ::readdir(d)) {
    char link[512] = {};
    const std::string fd = dir + "/" + e->d_name;
    const ssize_t n = ::readlink(fd.c_str(), link, sizeof link - 1);
    if (n > 0 && std::string(link, static_cast<std::size_t>(n)) == "/memfd:" + name + " (deleted)")
      found = true;
  }
  ::closedir(d);
  return found;
}

std::string text_of(const Sample& s) {
  return std::string(reinterpret_cast<const char*>(s.data().data()), s.data().size());
}

// Publishes "m0".."m<n-1>" to `topic`, and has group "g" consume `taken` of them.
void fill(const BusOptions& opts, const std::string& topic, int n, int taken) {
  Bus bus = Bus::connect(opts);
  Topic t = bus.create_topic(topic, {});
  auto sub = t.subscriber(SubscriberOptions{.group = "g", .start = StartFrom::Earliest});
  Publisher p = t.publisher();
  for (int i = 0; i < n; ++i)
    ASSERT_EQ(p.publish(bytes_of("m" + std::to_string(i))), Status::Ok);
  for (int i = 0; i < taken; ++i) {
    Sample s;
    ASSERT_EQ(sub->receive(s, 5s), Status::Ok);
  }
}

// What group "g" of `topic` receives next: `n` messages, and then nothing.
std::vector<std::string> drain(const BusOptions& opts, const std::string& topic, int n) {
  Bus bus = Bus::connect(opts);
  auto sub = bus.subscriber(topic, SubscriberOptions{.group = "g"});
  std::vector<std::string> got;
  Sample s;
  while (static_cast<int>(got.size()) < n && sub->receive(s, 5s) == Status::Ok) {
    got.push_back(text_of(s));
    s = Sample{};
  }
  if (sub->try_receive(s) != Status::WouldBlock) got.push_back("(more)");
  return got;
}

// No client maps the topic while no daemon runs: only the keeper holds it.
TEST(Keeper, ADaemonKilledWithNoClientLosesNoTopic) {
  BusFixture f;
  {
    DaemonProcess d(f.bus, f.socket);
    ASSERT_TRUE(d.start());
    fill(f.options(), "orders", 3, 1);
    ASSERT_GT(await_keeper(f.socket, {d.pid()}), 0);
    d.kill9();
  }
  struct stat st {};
  EXPECT_NE(::stat(("/dev/shm/" + region_name(f.bus, "orders")).c_str(), &st), 0)
      << "the topic has a name in /dev/shm: it is not sealed";
  DaemonProcess d(f.bus, f.socket);
  ASSERT_TRUE(d.start());
  {
    Bus bus = Bus::connect(f.options());
    const TopicStatus s = bus.describe("orders");
    EXPECT_EQ(s.tail, 3u);
    ASSERT_EQ(s.groups.size(), 1u);
    EXPECT_EQ(s.groups[0].position, 1u);
  }
  EXPECT_EQ(drain(f.options(), "orders", 2), (std::vector<std::string>{"m1", "m2"}));
  // And again, after a clean stop.
  EXPECT_EQ(d.stop(), 0);
  DaemonProcess again(f.bus, f.socket);
  ASSERT_TRUE(again.start());
  EXPECT_EQ(Bus::connect(f.options()).describe("orders").tail, 3u);
}

TEST(Keeper, AKilledKeeperIsReplacedAndHoldsEveryTopicAgain) {
  BusFixture f;
  {
    DaemonProcess d(f.bus, f.socket);
    ASSERT_TRUE(d.start());
    fill(f.options(), "a", 2, 0);
    fill(f.options(), "b", 5, 2);
    const pid_t first = await_keeper(f.socket, {d.pid()});
    ASSERT_GT(first, 0);
    ASSERT_EQ(::kill(first, SIGKILL), 0);
    // The daemon sees its keeper's end and starts another, which it gives
    // every topic again.
    const pid_t second = await_keeper(f.socket, {d.pid(), first});
    ASSERT_GT(second, 0);
    EXPECT_TRUE(wait_until([&] { return holds_memfd(second, region_name(f.bus, "b")); }, 20s));
    EXPECT_FALSE(d.exited());
    // A topic made after the replacement is held too.
    fill(f.options(), "c", 1, 0);
    d.kill9();
  }
  DaemonProcess d(f.bus, f.socket);
  ASSERT_TRUE(d.start());
  Bus bus = Bus::connect(f.options());
  const auto topics = bus.topics();
  ASSERT_EQ(topics.size(), 3u);
  EXPECT_EQ(bus.describe("a").tail, 2u);
  EXPECT_EQ(bus.describe("b").tail, 5u);
  EXPECT_EQ(bus.describe("c").tail, 1u);
  EXPECT_EQ(drain(f.options(), "b", 3), (std::vector<std::string>{"m2", "m3", "m4"}));
}

TEST(Keeper, ADeletedTopicIsNotBroughtBack) {
  BusFixture f;
  {
    DaemonProcess d(f.bus, f.socket);
    ASSERT_TRUE(d.start());
    fill(f.options(), "gone", 1, 0);
    fill(f.options(), "kept", 1, 0);
    const pid_t keeper = await_keeper(f.socket, {d.pid()});
    ASSERT_GT(keeper, 0);
    // Deposits are read once the keeper runs its loop: waited for.
    EXPECT_TRUE(wait_until([&] { return holds_memfd(keeper, region_name(f.bus, "gone")); }, 20s));
    Bus::connect(f.options()).delete_topic("gone");
    // The keeper lets go of it (its memory with it), and keeps the other.
    EXPECT_TRUE(wait_until([&] { return !holds_memfd(keeper, region_name(f.bus, "gone")); }, 20s));
    EXPECT_TRUE(holds_memfd(keeper, region_name(f.bus, "kept")));
    d.kill9();
  }
  DaemonProcess d(f.bus, f.socket);
  ASSERT_TRUE(d.start());
  Bus bus = Bus::connect(f.options());
  EXPECT_EQ(code_of([&] { bus.describe("gone"); }), ErrorCode::NotFound);
  EXPECT_EQ(bus.describe("kept").tail, 1u);
  // The name is free again.
  bus.create_topic("gone", {});
  EXPECT_EQ(bus.describe("gone").tail, 0u);
}

// Dismissing the keeper is how every topic of a stopped daemon goes at once
// (the tests' clean-up does it); so is removing its socket directory.
TEST(Keeper, ADismissedKeeperLetsGoOfEveryTopic) {
  BusFixture f;
  pid_t keeper = -1;
  {
    DaemonProcess d(f.bus, f.socket);
    ASSERT_TRUE(d.start());
    fill(f.options(), "t", 1, 0);
    keeper = await_keeper(f.socket, {d.pid()});
    ASSERT_GT(keeper, 0);
    EXPECT_EQ(d.stop(), 0);
  }
  ASSERT_TRUE(daemon::dismiss_keeper(daemon::keeper_path(f.socket)));
  EXPECT_TRUE(wait_until([&] { return process_gone(keeper); }, 20s));
  struct stat st {};
  EXPECT_NE(::lstat(daemon::keeper_path(f.socket).c_str(), &st), 0) << "its socket stayed";
  DaemonProcess d(f.bus, f.socket);
  ASSERT_TRUE(d.start());
  EXPECT_TRUE(Bus::connect(f.options()).topics().empty());
}

// Peers of the daemon's uid that connect to the keeper and say nothing (a
// probe, a confused tool) are heard alongside the new daemon, not before it:
// the hand-over goes on, and nothing is lost.
TEST(Keeper, SilentPeersDoNotHoldUpAHandOver) {
  BusFixture f;
  std::vector<int> silent;
  {
    DaemonProcess d(f.bus, f.socket);
    ASSERT_TRUE(d.start());
    fill(f.options(), "t", 2, 0);
    ASSERT_GT(await_keeper(f.socket, {d.pid()}), 0);
    d.kill9();
  }
  for (int i = 0; i < 3; ++i) {
    const int s = detail::connect_unix(daemon::keeper_path(f.socket));
    ASSERT_GE(s, 0) << detail::errno_text(errno);
    silent.push_back(s);
  }
  DaemonProcess d(f.bus, f.socket);
  ASSERT_TRUE(d.start());
  EXPECT_EQ(Bus::connect(f.options()).describe("t").tail, 2u);
  for (const int s : silent)
    ::close(s);
}

// A keeper that stops reading (SIGSTOP) must not stop the daemon, which
// serves from one thread: deposits never wait; once the keeper's socket is
// full the daemon replaces it and deposits every topic in the new one.
TEST(Keeper, AStoppedKeeperStallsNothingAndIsReplaced) {
  BusFixture f;
  constexpr int kTopics = 600;  // more deposits than a socket buffer holds
  TopicOptions small;
  small.slot_count = 8;
  small.slot_size = 64;
  {
    DaemonProcess d(f.bus, f.socket);
    ASSERT_TRUE(d.start());
    const pid_t stopped = await_keeper(f.socket, {d.pid()});
    ASSERT_GT(stopped, 0);
    ASSERT_EQ(::kill(stopped, SIGSTOP), 0);
    {
      Bus bus = Bus::connect(f.options());
      for (int i = 0; i < kTopics; ++i)
        bus.create_topic("t" + std::to_string(i), small);
      EXPECT_EQ(bus.topics().size(), static_cast<std::size_t>(kTopics));
    }
    const pid_t fresh = await_keeper(f.socket, {d.pid(), stopped});
    EXPECT_GT(fresh, 0);
    EXPECT_TRUE(wait_until(
        [&] { return holds_memfd(fresh, region_name(f.bus, "t" + std::to_string(kTopics - 1))); },
        20s));
    ASSERT_EQ(::kill(stopped, SIGCONT), 0);
    // Its socket is another's now: it lets go and exits.
    EXPECT_TRUE(wait_until([&] { return process_gone(stopped); }, 20s));
    d.kill9();
  }
  DaemonProcess d(f.bus, f.socket);
  ASSERT_TRUE(d.start());
  EXPECT_EQ(Bus::connect(f.options()).topics().size(), static_cast<std::size_t>(kTopics));
}

// A keeper that listens but does not hand over (stopped) holds topics no
// one else may: a new daemon refuses to start, saying so, rather than
// replacing it and losing them; once the keeper runs again, it starts.
TEST(Keeper, ADaemonDoesNotReplaceAKeeperThatHoldsTopics) {
  BusFixture f;
  pid_t keeper = -1;
  {
    DaemonProcess d(f.bus, f.socket);
    ASSERT_TRUE(d.start());
    fill(f.options(), "t", 1, 0);
    keeper = await_keeper(f.socket, {d.pid()});
    ASSERT_GT(keeper, 0);
    d.kill9();
  }
  ASSERT_EQ(::kill(keeper, SIGSTOP), 0);
  {
    DaemonProcess d(f.bus, f.socket);
    EXPECT_EQ(d.run_expecting_exit(), 1);
  }
  ASSERT_EQ(::kill(keeper, SIGCONT), 0);
  DaemonProcess d(f.bus, f.socket);
  ASSERT_TRUE(d.start());
  EXPECT_EQ(Bus::connect(f.options()).describe("t").tail, 1u);
  EXPECT_EQ(keeper_pid(f.socket), keeper);
}

// The keeper hands every region to whoever asks: only the daemon's uid may.
TEST(Keeper, AnotherUidCannotReachTheKeeper) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to switch uid";
  BusFixture f;
  DaemonProcess d(f.bus, f.socket);
  ASSERT_TRUE(d.start());
  fill(f.options(), "secret", 1, 0);
  ASSERT_GT(await_keeper(f.socket, {d.pid()}), 0);
  const std::string path = daemon::keeper_path(f.socket);
  struct stat st {};
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const pid_t other = spawn([&]() -> int {
    if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) return 10;
    if (detail::connect_unix(path) >= 0 || errno != EACCES) return 11;
    // Nor can it dismiss it.
    if (daemon::dismiss_keeper(path)) return 12;
    return 0;
  });
  EXPECT_EQ(wait_child(other, 60s), 0);
  EXPECT_GT(keeper_pid(f.socket), 0);
  EXPECT_EQ(Bus::connect(f.options()).describe("secret").tail, 1u);
}

// A daemon in a test's thread has no keeper program: it serves, and its
// topics die with it (documented in Config::keeper_program).
TEST(Keeper, ADaemonWithoutAKeeperServesAndKeepsNothing) {
  BusFixture f;
  {
    InProcessDaemon d(config_for(f));
    fill(f.options(), "t", 1, 0);
    EXPECT_EQ(keeper_pid(f.socket), -1);
  }
  InProcessDaemon d(config_for(f));
  EXPECT_TRUE(Bus::connect(f.options()).topics().empty());
}

}  // namespace
}  // namespace shmbus::test
