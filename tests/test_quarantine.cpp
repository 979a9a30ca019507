// Issue 14, part 2 (the daemon's side): a client that truncates a region it
// was handed must not kill shmbusd. The topic is quarantined (Corrupt, still
// listed, deletable); every other topic keeps working.
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

// The attack of issue 14 as it was reported: a client given a region's
// descriptors (uid 65534 with the subscribe right when we are root) holds a
// seat in it, truncates what it can write (the control segment: its data
// segment is read-only) to 0 and exits.
TEST(SecurityTruncation, ATruncatedRegionIsQuarantinedTheDaemonLivesOthersWork) {
  BusFixture f;
  const std::string cfg = f.dir.path + "/shmbusd.toml";
  std::ofstream(cfg) << "[[topic]]\nname = \"victim\"\nsubscribe = { uids = [65534] }\n";
  DaemonProcess d(f.bus, f.socket, cfg);
  ASSERT_TRUE(d.start());
  {
    // Closed again before the fork (a child forked from a single-threaded parent).
    Bus owner = Bus::connect(f.options());
    owner.create_topic("victim", {});
    owner.create_topic("bystander", {});
  }
  const BusOptions opts = f.options();
  const std::string socket = f.socket;
  const pid_t attacker = spawn([&]() -> int {
    if (::geteuid() == 0 &&
        (::setresgid(kOther, kOther, kOther) != 0 || ::setresuid(kOther, kOther, kOther) != 0))
      return 10;
    // A seat in the region: the daemon frees it when this process is gone.
    Bus bus = Bus::connect(opts);
    auto sub = bus.open_topic("victim").subscriber();
    // The descriptor the daemon hands out, through the protocol itself.
    namespace proto = detail::proto;
    const int fd = detail::connect_unix(socket);
    if (fd < 0) return 11;
    if (!detail::send_frame(fd, proto::frame(proto::OpenTopic{"victim"}, 1), {}, true)) return 12;
    const detail::Received r = detail::recv_frame(fd, 10s);
    const auto reply = proto::decode_reply<proto::TopicReply>(r.body);
    if (!reply.message || r.fds.size() != 2) return 13;
    if (::geteuid() == kOther && ::ftruncate(r.fds[0], 0) == 0) return 15;  // read-only
    if (::ftruncate(r.fds[1], 0) != 0) return 14;
    // Gone without a word: the subscriber's destructor would touch the region.
    ::_exit(0);
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
  EXPECT_EQ(code_of([&] { (void)bus.subscriber("victim"); }), ErrorCode::Corrupt);
  EXPECT_EQ(code_of([&] { bus.delete_group("victim", "g"); }), ErrorCode::Corrupt);
  // Listed, and told apart by what the daemon found.
  const auto topics = bus.topics();
  ASSERT_EQ(topics.size(), 2u);
  for (const TopicStatus& t : topics)
    EXPECT_EQ(t.damage.empty(), t.name != "victim") << t.name << ": " << t.damage;
  // Further housekeeping passes leave it be.
  EXPECT_FALSE(d.exited());
  {
    Topic t = bus.open_topic("bystander");
    Publisher p = t.publisher();
    auto s = t.subscriber(SubscriberOptions{.group = "", .start = StartFrom::Earliest});
    ASSERT_EQ(p.publish(bytes_of("still here")), Status::Ok);
    Sample sm;
    EXPECT_EQ(s->receive(sm, 5s), Status::Ok);
  }
  bus.delete_topic("victim", /*if_unused=*/true);  // no users to ask about
  EXPECT_EQ(code_of([&] { bus.describe("victim"); }), ErrorCode::NotFound);
  struct stat st {};
  EXPECT_NE(::stat(("/dev/shm/" + region_name(f.bus, "victim")).c_str(), &st), 0);
  bus.create_topic("victim", {});  // and it can be made again
  EXPECT_EQ(bus.describe("victim").name, "victim");
  EXPECT_EQ(d.stop(), 0);
}

// The housekeeping pass itself (no request in between): the daemon runs in
// this process, so a SIGBUS there would end the test binary.
TEST(SecurityTruncation, HousekeepingQuarantinesATruncatedRegion) {
  BusFixture f;
  daemon::Config c = config_for(f);
  c.log_level = "error";
  c.housekeeping_ms = 20;
  InProcessDaemon d(c);
  { Bus::connect(f.options()).create_topic("cut", {}); }  // unmapped again here
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
