// Issue 14, part 2: no client can resize a region shmbusd made (sealed
// memfds); and where a region can be truncated (a named one, made without a
// daemon), a truncation must not kill shmbusd: the topic is quarantined
// (Corrupt, still listed, deletable); every other topic keeps working.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "guard.hpp"
#include "in_process_daemon.hpp"
#include "os.hpp"
#include "protocol.hpp"
#include "region.hpp"

namespace shmbus::test {
namespace {

using namespace std::chrono_literals;

constexpr uid_t kOther = 65534;  // nobody: the attacker, when the test runs as root

// A shared mapping of two pages whose file is then cut to nothing: every
// access to it raises SIGBUS.
struct VanishedMapping {
  int fd = -1;
  std::size_t size = 2 * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  volatile unsigned char* p = nullptr;
  VanishedMapping() {
    fd = ::memfd_create("shmbus-test-vanished", MFD_CLOEXEC);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(size)), 0);
    void* m = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    EXPECT_NE(m, MAP_FAILED);
    p = static_cast<volatile unsigned char*>(m);
    p[0] = 1;  // backed: no fault yet
    EXPECT_EQ(::ftruncate(fd, 0), 0);
  }
  ~VanishedMapping() {
    ::munmap(const_cast<unsigned char*>(p), size);
    ::close(fd);
  }
};

// ThreadSanitizer takes SIGBUS for its own report before any handler of
// ours (handle_sigbus), so the guard is tested in the other builds only.
#if defined(__SANITIZE_THREAD__)
constexpr bool kTsan = true;
#else
constexpr bool kTsan = false;
#endif

TEST(DaemonGuard, ASigbusInsideGuardedReturnsFalseAndTheProcessLives) {
  if (kTsan) GTEST_SKIP() << "ThreadSanitizer handles SIGBUS itself";
  daemon::install_sigbus_guard();
  daemon::install_sigbus_guard();  // a second call does nothing
  VanishedMapping v;
  int reached = 0;
  EXPECT_FALSE(daemon::guarded([&] {
    reached = 1;
    v.p[0] = 2;  // SIGBUS
    reached = 2;
  }));
  EXPECT_EQ(reached, 1);
  sigset_t mask;
  ASSERT_EQ(::pthread_sigmask(SIG_BLOCK, nullptr, &mask), 0);
  EXPECT_EQ(::sigismember(&mask, SIGBUS), 0) << "SIGBUS left blocked after the jump";
  // Again (the handler left its frame and SIGBUS is unblocked), and nested:
  // the inner guard catches, the outer one completes.
  bool inner = true;
  EXPECT_TRUE(daemon::guarded([&] { inner = daemon::guarded([&] { (void)v.p[v.size - 1]; }); }));
  EXPECT_FALSE(inner);
  EXPECT_TRUE(daemon::guarded([] {}));
  // An exception leaves the guard and goes on.
  EXPECT_THROW((void)daemon::guarded([] { throw Error(ErrorCode::InvalidArgument, "x"); }), Error);
  EXPECT_FALSE(daemon::guarded([&] { (void)v.p[0]; }));
}

// The signal a fault outside any guard ends the process with: SIGBUS, or,
// under AddressSanitizer, whose report is the action the guard hands back
// to, the abort that ends its report.
#if defined(__SANITIZE_ADDRESS__)
constexpr int kFaultDeath = SIGABRT;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr int kFaultDeath = SIGABRT;
#else
constexpr int kFaultDeath = SIGBUS;
#endif
#else
constexpr int kFaultDeath = SIGBUS;
#endif

TEST(DaemonGuardDeathTest, ASigbusOutsideAnyGuardStillKills) {
  if (kTsan) GTEST_SKIP() << "ThreadSanitizer handles SIGBUS itself";
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        daemon::install_sigbus_guard();
        VanishedMapping v;
        (void)daemon::guarded([] {});  // a guard entered and left: none active now
        (void)v.p[0];
      },
      ::testing::KilledBySignal(kFaultDeath), "");
  // A SIGBUS someone sends, too.
  EXPECT_EXIT(
      {
        daemon::install_sigbus_guard();
        ::kill(::getpid(), SIGBUS);
        ::_exit(0);
      },
      ::testing::KilledBySignal(kFaultDeath), "");
}

TEST(DaemonGuard, RegionIntactSeesAShrunkOrGrownFile) {
  BusFixture f;
  const std::string shm = region_name(f.bus, "t");
  TopicOptions o;
  o.slot_count = 8;
  o.slot_size = 64;
  auto r = detail::Region::create(shm, "t", o);
  std::string why;
  EXPECT_TRUE(daemon::region_intact(*r, why)) << why;
  struct stat st {};
  ASSERT_EQ(::fstat(r->data_fd(), &st), 0);
  ASSERT_EQ(::ftruncate(r->data_fd(), st.st_size + 4096), 0);
  EXPECT_FALSE(daemon::region_intact(*r));
  ASSERT_EQ(::ftruncate(r->data_fd(), st.st_size), 0);
  EXPECT_TRUE(daemon::region_intact(*r, why)) << why;
  struct stat cs {};
  ASSERT_EQ(::fstat(r->control_fd(), &cs), 0);
  ASSERT_EQ(::ftruncate(r->control_fd(), 0), 0);
  EXPECT_FALSE(daemon::region_intact(*r, why));
  EXPECT_NE(why.find("control segment of 0 bytes, " + std::to_string(cs.st_size) + " expected"),
            std::string::npos)
      << why;
  detail::Region::remove(shm);
}

// The descriptors of `topic` as the daemon at `socket` hands them to this
// process, with a seat in the topic first (the daemon frees it when this
// process is gone: the access that used to SIGBUS it).
struct HandedOut {
  Bus bus;
  std::shared_ptr<Subscriber> sub;
  detail::Descriptors fds;
  HandedOut(const BusOptions& opts, const std::string& socket, const std::string& topic)
      : bus(Bus::connect(opts)),
        sub(bus.open_topic(topic).subscriber()),
        fds(topic_fds(socket, topic)) {}
};

// Whether `topic` still works: a message published is received.
bool publishes_and_receives(Bus& bus, const std::string& topic) {
  Topic t = bus.open_topic(topic);
  Publisher p = t.publisher();
  auto s = t.subscriber(SubscriberOptions{.group = "", .start = StartFrom::Earliest});
  if (p.publish(bytes_of("still here")) != Status::Ok) return false;
  Sample sm;
  return s->receive(sm, 5s) == Status::Ok;
}

// The attack of issue 14 as it was reported: a client given a region's
// descriptors truncates what it can write. shmbusd's regions are sealed
// memfds: the kernel refuses every resize, to a subscriber of another uid
// and to a publisher of the daemon's own, and nothing is damaged.
TEST(SecurityTruncation, NoHolderOfADaemonsRegionCanResizeIt) {
  BusFixture f;
  const std::string cfg = f.dir.path + "/shmbusd.toml";
  std::ofstream(cfg) << "[[topic]]\nname = \"victim\"\nsubscribe = { uids = [65534] }\n";
  DaemonProcess d(f.bus, f.socket, cfg);
  ASSERT_TRUE(d.start());
  { Bus::connect(f.options()).create_topic("victim", {}); }  // closed before the forks
  const BusOptions opts = f.options();
  const std::string socket = f.socket;
  const auto attack = [&](bool drop_uid) {
    return spawn([&]() -> int {
      if (drop_uid && ::geteuid() == 0 &&
          (::setresgid(kOther, kOther, kOther) != 0 || ::setresuid(kOther, kOther, kOther) != 0))
        return 10;
      HandedOut h(opts, socket, "victim");
      if (h.fds.size() != 2) return 11;
      const bool read_only_data = ::geteuid() == kOther;
      for (std::size_t i = 0; i < 2; ++i) {
        const int fd = h.fds[i];
        struct stat st {};
        if (::fstat(fd, &st) != 0) return 12;
        // EINVAL for the read-only data descriptor of a subscriber, EPERM
        // (the seals) for every writable one.
        const int refused = i == 0 && read_only_data ? EINVAL : EPERM;
        if (::ftruncate(fd, 0) == 0 || errno != refused) return 20 + static_cast<int>(i);
        if (::ftruncate(fd, st.st_size + 4096) == 0 || errno != refused)
          return 22 + static_cast<int>(i);
        const int grown = ::posix_fallocate(fd, st.st_size, 4096);
        if (grown == 0 || grown != (refused == EINVAL ? EBADF : EPERM))
          return 24 + static_cast<int>(i);
        // The seals themselves are sealed: none can be removed or added.
        if (::fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) == 0 || errno != EPERM)
          return 26 + static_cast<int>(i);
      }
      ::_exit(0);  // gone without a word: the daemon frees the seat
    });
  };
  ASSERT_EQ(wait_child(attack(/*drop_uid=*/true), 60s), 0);
  ASSERT_EQ(wait_child(attack(/*drop_uid=*/false), 60s), 0);
  Bus bus = Bus::connect(f.options());
  // Both seats freed (the daemon touched the region), and nothing damaged.
  const auto members = [&] {
    std::uint32_t n = 0;
    for (const GroupStatus& g : bus.describe("victim").groups)
      n += g.members;
    return n;
  };
  EXPECT_TRUE(wait_until([&] { return members() == 0; }, 10s));
  EXPECT_FALSE(d.exited()) << "shmbusd died, status " << d.status();
  EXPECT_TRUE(bus.describe("victim").damage.empty());
  EXPECT_TRUE(publishes_and_receives(bus, "victim"));
  EXPECT_EQ(d.stop(), 0);
}

// A region made without a daemon has a name in /dev/shm and no seals (tmpfs
// files cannot be sealed); a daemon adopts it, but hands its descriptors
// only to its own uid and root, who could truncate it by name anyway.
TEST(SecurityTruncation, ANamedRegionIsServedOnlyToTheDaemonsUid) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to switch uid";
  BusFixture f;
  (void)Topic::create("named", {}, f.bus);  // mode 0600, ours: adopted
  const std::string cfg = f.dir.path + "/shmbusd.toml";
  std::ofstream(cfg) << "[[topic]]\nname = \"named\"\nsubscribe = { uids = [65534] }\n";
  DaemonProcess d(f.bus, f.socket, cfg);
  ASSERT_TRUE(d.start());
  const BusOptions opts = f.options();
  const pid_t other = spawn([&]() -> int {
    if (::setresgid(kOther, kOther, kOther) != 0 || ::setresuid(kOther, kOther, kOther) != 0)
      return 10;
    Bus bus = Bus::connect(opts);
    try {
      (void)bus.subscriber("named");
      return 11;
    } catch (const Error& e) {
      if (e.code() != ErrorCode::PermissionDenied) return 12;
      const std::string what = e.what();
      if (what.find("cannot be sealed") == std::string::npos ||
          what.find("create it again through shmbusd") == std::string::npos)
        return 13;
    }
    return bus.describe("named").name == "named" ? 0 : 14;  // it may still look
  });
  EXPECT_EQ(wait_child(other, 60s), 0);
  Bus bus = Bus::connect(f.options());
  auto sub = bus.subscriber("named");  // root: served
  EXPECT_TRUE(sub != nullptr);
}

// The daemon's side, for a region that can be truncated: a named one it
// adopted, cut by a client of its own uid that holds a seat there. The
// topic is quarantined (Corrupt, still listed, deletable); the daemon lives
// and every other topic keeps working.
TEST(SecurityTruncation, ATruncatedRegionIsQuarantinedTheDaemonLivesOthersWork) {
  BusFixture f;
  (void)Topic::create("victim", {}, f.bus);
  DaemonProcess d(f.bus, f.socket);
  ASSERT_TRUE(d.start());
  { Bus::connect(f.options()).create_topic("bystander", {}); }
  const BusOptions opts = f.options();
  const std::string socket = f.socket;
  const pid_t attacker = spawn([&]() -> int {
    HandedOut h(opts, socket, "victim");
    if (h.fds.size() != 2) return 11;
    if (::ftruncate(h.fds[1], 0) != 0) return 14;  // no seals on a tmpfs file
    ::_exit(0);  // the subscriber's destructor would touch the region
  });
  ASSERT_EQ(wait_child(attacker, 60s), 0);
  Bus bus = Bus::connect(f.options());
  // The daemon touched the region when the attacker's connection dropped
  // (freeing its seat: the SIGBUS of issue 14); it quarantined it instead.
  EXPECT_TRUE(wait_until(
      [&] { return code_of([&] { bus.describe("victim"); }) == ErrorCode::Corrupt; }, 10s));
  EXPECT_FALSE(d.exited()) << "shmbusd died, status " << d.status();
  std::string message;
  try {
    (void)bus.open_topic("victim");
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Corrupt);
    message = e.what();
  }
  EXPECT_NE(message.find("quarantined"), std::string::npos) << message;
  EXPECT_NE(message.find("shmbus topic delete victim"), std::string::npos) << message;
  EXPECT_NE(message.find("control segment of 0 bytes"), std::string::npos) << message;
  EXPECT_NE(message.find("/dev/shm/" + region_name(f.bus, "victim")), std::string::npos) << message;
  EXPECT_EQ(code_of([&] { (void)bus.subscriber("victim"); }), ErrorCode::Corrupt);
  EXPECT_EQ(code_of([&] { bus.delete_group("victim", "g"); }), ErrorCode::Corrupt);
  // Listed, and told apart by what the daemon found.
  const auto topics = bus.topics();
  ASSERT_EQ(topics.size(), 2u);
  for (const TopicStatus& t : topics)
    EXPECT_EQ(t.damage.empty(), t.name != "victim") << t.name << ": " << t.damage;
  EXPECT_TRUE(publishes_and_receives(bus, "bystander"));
  EXPECT_FALSE(d.exited());
  bus.delete_topic("victim", /*if_unused=*/true);  // no users to ask about
  EXPECT_EQ(code_of([&] { bus.describe("victim"); }), ErrorCode::NotFound);
  struct stat st {};
  EXPECT_NE(::stat(("/dev/shm/" + region_name(f.bus, "victim")).c_str(), &st), 0);
  bus.create_topic("victim", {});  // and it can be made again, sealed
  EXPECT_EQ(bus.describe("victim").name, "victim");
  EXPECT_EQ(d.stop(), 0);
}

// A topic with a schedule has a mover thread holding a producer seat: its
// quarantine stops the mover and leaves the seat instead of freeing it
// through the vanished pages (which would kill the daemon).
TEST(SecurityTruncation, QuarantiningATopicWithAScheduleKeepsTheDaemonAlive) {
  BusFixture f;
  TopicOptions o;
  o.slot_size = 64;
  o.delay_slots = 8;
  (void)Topic::create("delayed", o, f.bus);
  DaemonProcess d(f.bus, f.socket);
  ASSERT_TRUE(d.start());
  Bus bus = Bus::connect(f.options());
  {
    Publisher p = bus.publisher("delayed");
    ASSERT_EQ(p.publish_after(std::chrono::milliseconds(0), bytes_of("x")), Status::Ok);
  }
  // The mover has moved it: it holds its producer seat now.
  ASSERT_TRUE(wait_until([&] { return bus.describe("delayed").moved == 1; }, 10s));
  const BusOptions opts = f.options();
  const std::string socket = f.socket;
  const pid_t attacker = spawn([&]() -> int {
    HandedOut h(opts, socket, "delayed");
    if (h.fds.size() != 2) return 11;
    if (::ftruncate(h.fds[0], 0) != 0) return 14;  // the data segment, schedule and all
    ::_exit(0);
  });
  ASSERT_EQ(wait_child(attacker, 60s), 0);
  EXPECT_TRUE(wait_until(
      [&] { return code_of([&] { bus.describe("delayed"); }) == ErrorCode::Corrupt; }, 10s));
  EXPECT_FALSE(d.exited()) << "shmbusd died, status " << d.status();
  bus.delete_topic("delayed");
  EXPECT_FALSE(d.exited()) << "shmbusd died, status " << d.status();
  EXPECT_EQ(d.stop(), 0);
}

// The housekeeping pass itself (no request in between): the daemon runs in
// this process, so a SIGBUS there would end the test binary.
TEST(SecurityTruncation, HousekeepingQuarantinesATruncatedRegion) {
  BusFixture f;
  (void)Topic::create("cut", {}, f.bus);  // a named region, adopted at start
  daemon::Config c = config_for(f);
  c.log_level = "error";
  c.housekeeping_ms = 20;
  InProcessDaemon d(c);
  const int fd = ::shm_open(("/" + region_name(f.bus, "cut")).c_str(), O_RDWR, 0);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 0), 0);
  ::close(fd);
  const std::uint64_t seen = d.d.housekeeping_rounds();
  ASSERT_TRUE(wait_until([&] { return d.d.housekeeping_rounds() >= seen + 2; }, 10s));
  Bus bus = Bus::connect(f.options());
  EXPECT_EQ(code_of([&] { bus.describe("cut"); }), ErrorCode::Corrupt);
  bus.delete_topic("cut");
}

}  // namespace
}  // namespace shmbus::test
