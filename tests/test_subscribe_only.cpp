// Issue 14, part 1, from the subscriber's side: a client the rules admit only
// to subscribe maps the topic's data segment read-only, so any library path
// it runs that writes that segment dies of SIGSEGV. A whole subscriber
// workload as such a uid (uid 65534, daemon and publisher root) must work:
// joins of private and named groups, receive, receive_batch, receive_copy,
// seeks, the overrun and abandoned-skip paths under overwrite, the block
// policy's wake-ups, close and re-join, status(), and the end of a deleted
// topic.
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>

#include "in_process_daemon.hpp"
#include "os.hpp"
#include "protocol.hpp"
#include "region.hpp"

namespace shmbus::test {
namespace {

using namespace std::chrono_literals;

constexpr uid_t kOther = 65534;  // nobody: subscribe rights only

// Steps of the handshake between the subscriber child and the root parent,
// in an anonymous shared mapping made before the fork.
struct Steps {
  std::atomic<std::uint32_t> child{0};   // the last step the child finished
  std::atomic<std::uint32_t> parent{0};  // the last step the parent finished
};

Steps* make_steps() {
  void* p =
      ::mmap(nullptr, sizeof(Steps), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::runtime_error("mmap of the handshake failed");
  return new (p) Steps{};
}

// Waits (up to 30 s) until `side` reached `step`.
bool reached(const std::atomic<std::uint32_t>& side, std::uint32_t step) {
  // Acquire: pairs with the release store of the other side's step.
  return wait_until([&] { return side.load(std::memory_order_acquire) >= step; }, 30s);
}
void finish(std::atomic<std::uint32_t>& side, std::uint32_t step) {
  side.store(step, std::memory_order_release);  // release: see reached()
}

// "<prefix><i>" (appended: GCC 12's -Wrestrict misfires on "literal" + string).
std::string numbered(const char* prefix, int i) {
  std::string s = prefix;
  s += std::to_string(i);
  return s;
}

// Drops this (child) process to kOther for good; false on failure.
bool become_other() {
  return ::setresgid(kOther, kOther, kOther) == 0 && ::setresuid(kOther, kOther, kOther) == 0;
}

// A bus whose shmbusd (a process of root's) runs with the access rules `rules`.
struct RuledBus {
  BusFixture f;
  std::string cfg = f.dir.path + "/shmbusd.toml";
  DaemonProcess d{f.bus, f.socket, cfg};
  explicit RuledBus(const std::string& rules) { std::ofstream(cfg) << rules; }
};

// Talks the protocol itself, as a hostile client would: hello, then `request`
// (whose reply brings the region's descriptors). Empty fds on any failure.
template <class Request>
detail::Received raw_request(const std::string& socket, const Request& request) {
  namespace proto = detail::proto;
  const int sock = detail::connect_unix(socket);
  if (sock < 0) return {};
  detail::Received r;
  if (detail::send_frame(sock, proto::frame(proto::Hello{"raw"}, 1)) &&
      proto::decode_reply<proto::HelloReply>(detail::recv_frame(sock, 10s).body).message &&
      detail::send_frame(sock, proto::frame(request, 2)))
    r = detail::recv_frame(sock, 10s);
  ::close(sock);  // the descriptors received stay open
  return r;
}

std::string text(const Sample& s) {
  return string_of(s.data());
}

// The child's side; returns 0, or the number of the check that failed.
int subscribe_only_workload(const BusOptions& opts, Steps& steps) {
  if (!become_other()) return 10;
  Bus bus = Bus::connect(opts);
  Topic over = bus.open_topic("ro.over");
  try {
    (void)over.publisher();
    return 11;
  } catch (const Error& e) {
    if (e.code() != ErrorCode::PermissionDenied) return 12;
  }
  if (over.status().tail != 0) return 13;
  auto named = over.subscriber({.group = "g", .start = StartFrom::Earliest});
  auto priv = over.subscriber({.group = "", .start = StartFrom::Latest});
  finish(steps.child, 1);

  // Step 1: four messages m0..m3.
  if (!reached(steps.parent, 1)) return 14;
  Sample s;
  if (named->receive(s, 10s) != Status::Ok || text(s) != "m0" || !s.intact()) return 15;
  Batch b;
  if (named->receive_batch(b, 8, 10s) != Status::Ok || b.size() != 3 || !b.intact()) return 16;
  b = Batch{};
  s = Sample{};
  std::vector<std::byte> buf(64);
  MessageInfo info;
  for (int i = 0; i < 4; ++i)
    if (priv->receive_copy(buf, info, 10s) != Status::Ok || info.sequence != std::uint64_t(i))
      return 17;
  finish(steps.child, 2);

  // Step 2: forty more (the ring has 8 slots: both groups are lapped), one
  // loan dropped (an abandoned sequence), then "last".
  if (!reached(steps.parent, 2)) return 18;
  std::string got;
  while (got != "last") {
    if (named->receive(s, 10s) != Status::Ok) return 19;
    got = text(s);
  }
  if (named->lost() == 0) return 20;
  got.clear();
  while (got != "last") {
    if (priv->receive(s, 10s) != Status::Ok) return 21;
    got = text(s);
  }
  s = Sample{};
  if (priv->lost() == 0) return 22;
  // Seeks back over overwritten messages: the lapped path again, up to
  // "last" once more.
  const std::uint64_t named_lost = named->lost(), priv_lost = priv->lost();
  named->seek(0);
  priv->seek(1);
  for (Subscriber* sub : {named.get(), priv.get()}) {
    got.clear();
    while (got != "last") {
      if (sub->receive(s, 10s) != Status::Ok) return 23;
      got = text(s);
    }
  }
  s = Sample{};
  if (named->lost() <= named_lost || priv->lost() <= priv_lost) return 24;
  if (named->receive(s, 50ms) != Status::Timeout) return 25;
  (void)over.status();
  // Close (frees the member seats) and join again.
  named.reset();
  priv.reset();
  named = over.subscriber({.group = "g"});
  priv = over.subscriber({.group = ""});
  finish(steps.child, 3);

  // Step 3: "again", to both re-joined groups.
  if (!reached(steps.parent, 3)) return 26;
  if (named->receive(s, 10s) != Status::Ok || text(s) != "again") return 27;
  if (priv->receive(s, 10s) != Status::Ok || text(s) != "again") return 28;
  s = Sample{};

  // Block policy: the parent fills the ring and waits for room that our
  // releases make (and announce in the control segment).
  auto blocked = bus.subscriber("ro.block", {.group = "b", .start = StartFrom::Earliest});
  finish(steps.child, 4);
  for (int i = 0; i < 24; ++i) {
    if (blocked->receive(s, 10s) != Status::Ok || text(s) != numbered("b", i)) return 29;
    s = Sample{};
  }
  finish(steps.child, 5);

  // Step 5: the parent deleted ro.over after one more message.
  if (!reached(steps.parent, 5)) return 30;
  if (named->receive(s, 10s) != Status::Ok || text(s) != "bye") return 31;
  s = Sample{};
  if (named->receive(s, 10s) != Status::TopicDeleted) return 32;
  if (priv->receive(s, 10s) != Status::Ok || text(s) != "bye") return 33;
  s = Sample{};
  if (priv->receive(s, 10s) != Status::TopicDeleted) return 34;
  return 0;
}

TEST(SubscribeOnly, AWholeSubscriberWorkloadNeverWritesTheReadOnlyDataSegment) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to switch uid";
  RuledBus rb("[[topic]]\nname = \"ro.*\"\nsubscribe = \"*\"\n");
  const BusFixture& f = rb.f;
  DaemonProcess& d = rb.d;
  ASSERT_TRUE(d.start());
  {
    Bus owner = Bus::connect(f.options());
    owner.create_topic("ro.over", {.slot_count = 8, .slot_size = 64, .policy = Policy::Overwrite});
    owner.create_topic("ro.block", {.slot_count = 8, .slot_size = 64, .policy = Policy::Block});
  }
  Steps& steps = *make_steps();
  const BusOptions opts = f.options();
  // Forked before this process starts any thread (a Bus's monitor).
  const pid_t child = spawn([&] { return subscribe_only_workload(opts, steps); });
  Bus bus = Bus::connect(f.options());
  Publisher p = bus.publisher("ro.over");
  const auto publish = [&](Publisher& to, const std::string& m) {
    return to.publish(bytes_of(m), 10s);
  };
  // The child's exit status once it ended (-1 while it runs): 139 is SIGSEGV,
  // a write to the read-only data segment.
  int status = -1;
  const auto child_reached = [&](std::uint32_t step) {
    (void)wait_until(
        [&] {
          int st = 0;
          if (::waitpid(child, &st, WNOHANG) == child)
            status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
          return status >= 0 || steps.child.load(std::memory_order_acquire) >= step;
        },
        30s);
    return status < 0 && steps.child.load(std::memory_order_acquire) >= step;
  };
  ASSERT_TRUE(child_reached(1)) << "subscriber exited with " << status;
  for (int i = 0; i < 4; ++i)
    ASSERT_EQ(publish(p, numbered("m", i)), Status::Ok);
  finish(steps.parent, 1);
  ASSERT_TRUE(child_reached(2)) << "subscriber exited with " << status;
  for (int i = 0; i < 40; ++i)
    ASSERT_EQ(publish(p, numbered("x", i)), Status::Ok);
  {
    Loan dropped = p.loan(8);
    ASSERT_TRUE(dropped);
  }
  ASSERT_EQ(publish(p, "last"), Status::Ok);
  finish(steps.parent, 2);
  ASSERT_TRUE(child_reached(3)) << "subscriber exited with " << status;
  ASSERT_EQ(publish(p, "again"), Status::Ok);
  finish(steps.parent, 3);
  ASSERT_TRUE(child_reached(4)) << "subscriber exited with " << status;
  Publisher pb = bus.publisher("ro.block");
  // Blocks on the full ring until the child takes.
  for (int i = 0; i < 24; ++i)
    ASSERT_EQ(publish(pb, numbered("b", i)), Status::Ok);
  ASSERT_TRUE(child_reached(5)) << "subscriber exited with " << status;
  ASSERT_EQ(publish(p, "bye"), Status::Ok);
  bus.delete_topic("ro.over");
  finish(steps.parent, 5);
  EXPECT_EQ(status < 0 ? wait_child(child, 120s) : status, 0);
  EXPECT_EQ(d.stop(), 0) << "shmbusd did not exit cleanly";
}

// What a subscribe-only client can still do through the control segment it
// must write: move other groups' cursors. Producers then skip the slot-free
// check (P0) that the gate scan "proves" from those cursors (slot_free in
// ring.hpp, docs/memory-ordering.md), and a producer laps another one's open
// loan: the victim group, which never moved, receives sequence 0 with the
// other producer's payload, and the message of sequence 4, accepted with Ok,
// is never delivered (its slot's stamp went back to sequence 0's). Hence a
// topic that others may map (here: mode 0660, its group may subscribe) is
// marked shared_control, and its producers always take P0.
TEST(SubscribeOnly, ForgedCursorsDoNotLetAProducerLapAnOpenLoan) {
  TopicOptions shared = ring_options(4, 64, Policy::Block);
  shared.mode = 0660;
  ScopedTopic t("forged-cursor", shared);
  auto victim = t.topic.subscriber({.group = "", .start = StartFrom::Earliest});
  Publisher slow = t.topic.publisher();
  Loan loan = slow.loan(8);  // sequence 0, being written
  ASSERT_TRUE(loan);
  const std::uint64_t mine = 1000;
  std::memcpy(loan.data().data(), &mine, 8);
  Publisher fast = t.topic.publisher();
  for (std::uint64_t i = 1; i < 4; ++i)
    ASSERT_EQ(fast.publish(std::as_bytes(std::span(&i, 1))), Status::Ok);
  // The attacker's writes: every group's cursor far ahead (the control
  // segment, which a subscriber maps read-write).
  auto attacker = detail::Region::open(region_name("default", t.name));
  for (std::uint32_t g = 0; g < attacker->max_groups(); ++g)
    attacker->group(g).cursor.store(1u << 20, std::memory_order_release);
  const std::uint64_t four = 4;
  // Honest P0 says no: sequence 0 is unpublished. (Today: Ok, over the loan.)
  EXPECT_EQ(fast.try_publish(std::as_bytes(std::span(&four, 1))), Status::WouldBlock);
  ASSERT_EQ(loan.publish(), Status::Ok);
  Sample s;
  ASSERT_EQ(victim->try_receive(s), Status::Ok);
  std::uint64_t got = 0;
  std::memcpy(&got, s.data().data(), 8);
  EXPECT_EQ(got, mine) << "sequence 0 carries another producer's payload";
}

// A uid with only the create right was handed the new topic's descriptors
// with the create reply, so it could read every message later published
// there, which it may not subscribe to, and write the control segment. The
// create reply of a client without publish or subscribe rights carries none;
// the library's Topic then refuses publisher/subscriber/status.
TEST(SubscribeOnly, ACreateOnlyUidCannotReadTheTopicItCreated) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to switch uid";
  RuledBus rb("[[topic]]\nname = \"c.*\"\ncreate = { uids = [65534] }\n");
  const BusFixture& f = rb.f;
  ASSERT_TRUE(rb.d.start());
  Steps& steps = *make_steps();
  const std::string socket = f.socket;
  const pid_t creator = spawn([&]() -> int {
    // Every ending says so first: the parent waits for step 1.
    const auto end = [&](int rc) {
      finish(steps.child, 1);
      return rc;
    };
    if (!become_other()) return end(10);
    detail::Received r = raw_request(socket, detail::proto::CreateTopic{"c.a", {}});
    if (!detail::proto::decode_reply<detail::proto::TopicReply>(r.body).message) return end(14);
    if (r.fds.size() == 0) {  // nothing to read through: as it should be
      BusOptions o = rb.f.options();
      Bus bus = Bus::connect(o);
      Topic made = bus.create_topic("c.b", {});
      if (made.options().slot_count == 0) return end(18);
      for (const auto& use : std::initializer_list<std::function<void()>>{
               [&] { (void)made.publisher(); }, [&] { (void)made.subscriber(); },
               [&] { (void)made.status(); }})
        if (code_of(use) != ErrorCode::PermissionDenied) return end(19);
      return end(0);
    }
    struct stat st {};
    if (::fstat(r.fds[0], &st) != 0) return end(15);
    const auto size = static_cast<std::size_t>(st.st_size);
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, r.fds[0], 0);
    if (p == MAP_FAILED) return end(0);
    finish(steps.child, 1);
    if (!reached(steps.parent, 1)) return 16;
    const auto* bytes = static_cast<const char*>(p);
    return std::string(bytes, size).find("victim-password=hunter2") != std::string::npos ? 17 : 0;
  });
  // Root publishes a secret once the creator holds its mapping (or ended).
  ASSERT_TRUE(reached(steps.child, 1));
  {
    Bus root = Bus::connect(f.options());
    Publisher p = root.publisher("c.a");
    ASSERT_EQ(p.publish(bytes_of("victim-password=hunter2")), Status::Ok);
  }
  finish(steps.parent, 1);
  EXPECT_EQ(wait_child(creator, 60s), 0) << "17: the create-only uid read the secret";
}

// A region file another uid planted in /dev/shm under the bus's prefix is not
// mapped by a (root) daemon at start: adoption checks its owner first. It
// used to map and read it before that check, waiting up to 1 s for a magic
// the planter never writes, and a truncation then killed it with SIGBUS.
TEST(SubscribeOnly, APlantedRegionIsNotMappedByTheAdoptingDaemon) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to plant another uid's file";
  BusFixture f;
  const std::string planted = "shmbus." + f.bus + ".planted";
  const int fd = ::shm_open(planted.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::fchown(fd, kOther, kOther), 0);
  ASSERT_EQ(::ftruncate(fd, 1 << 16), 0);  // big enough, and no magic
  DaemonProcess d(f.bus, f.socket);
  ASSERT_TRUE(d.start());
  // Adoption runs before the daemon answers its first request.
  std::atomic<bool> answered{false};
  std::thread client([&] {
    try {
      (void)Bus::connect(f.options()).topics();
    } catch (const Error&) {
      // The daemon died: the checks below say so.
    }
    answered.store(true, std::memory_order_release);  // release: read by the loop below
  });
  const auto holds_planted = [&] {
    const std::string dir = "/proc/" + std::to_string(d.pid()) + "/fd";
    DIR* fds = ::opendir(dir.c_str());
    if (fds == nullptr) return false;
    bool found = false;
    while (dirent* e = ::readdir(fds)) {
      char target[256] = {};
      const std::string link = dir + "/" + e->d_name;
      if (::readlink(link.c_str(), target, sizeof target - 1) > 0 &&
          std::string(target) == "/dev/shm/" + planted)
        found = true;
    }
    ::closedir(fds);
    return found;
  };
  bool mapped = false;
  ASSERT_TRUE(wait_until(
      [&] {
        mapped = mapped || holds_planted();
        return mapped || answered.load(std::memory_order_acquire);  // acquire: see above
      },
      30s));
  if (mapped) {
    EXPECT_EQ(::ftruncate(fd, 0), 0);  // the planter's move
  }
  client.join();
  ::close(fd);
  EXPECT_FALSE(mapped) << "shmbusd opened another uid's region file";
  // Still serving (it would have died of SIGBUS reading the truncated file).
  EXPECT_NO_THROW((void)Bus::connect(f.options()).topics()) << "status " << d.stop();
  shm_unlink(planted.c_str());
}

// A daemon that may only read a region of its own (data segment 0400, not root)
// maps it read-only; adopting it would let a delete or a repair write through
// that mapping (SIGSEGV, which no guard catches). It is not adopted.
TEST(SubscribeOnly, ARegionTheDaemonMayNotWriteIsNotAdopted) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a daemon as another uid";
  BusFixture f;
  const std::string bus = f.bus;
  const pid_t owner = spawn([&]() -> int {
    if (!become_other()) return 10;
    char dir[] = "/tmp/shmbus-ro-XXXXXX";  // 0700 and ours: a directory the daemon trusts
    if (::mkdtemp(dir) == nullptr) return 11;
    const std::string socket = std::string(dir) + "/bus.sock";
    (void)Topic::create("mine", {.slot_count = 8, .slot_size = 64}, bus);
    // The data segment only made read-only (its owner may): the control
    // segment, which open wants writable, stays 0600.
    if (::chmod(("/dev/shm/" + region_name(bus, "mine")).c_str(), 0400) != 0) return 13;
    int rc = 0;
    {
      DaemonProcess d(bus, socket);
      if (!d.start()) return 12;
      BusOptions o;
      o.bus = bus;
      o.socket_path = socket;
      o.autospawn = false;
      Bus b = Bus::connect(o);
      try {
        b.delete_topic("mine");
      } catch (const Error&) {
        // NotFound: not adopted.
      }
      try {
        (void)b.topics();
      } catch (const Error&) {
        rc = 20;  // the daemon died deleting it
      }
    }
    (void)Topic::remove("mine", bus);
    for (const char* left : {"", ".lock", ".log"})  // what the daemon leaves
      ::unlink((socket + left).c_str());
    ::rmdir(dir);
    return rc;
  });
  EXPECT_EQ(wait_child(owner, 60s), 0) << "20: shmbusd died deleting a read-only region";
}

// A subscribe-only client writes the control lock (it is in the control
// segment) as held by a live process it cannot be, pid 1, then leaves with a
// member seat registered. shmbusd, one thread for every topic of the bus,
// used to wait the lock's full 10 s to free that seat, answering nobody
// meanwhile (a root client's request timed out), and again at every
// housekeeping pass. It now waits kLockPatience (300 ms) and retries later.
TEST(SubscribeOnly, AControlLockHeldByASubscriberDoesNotStallTheDaemon) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to switch uid";
  RuledBus rb("[[topic]]\nname = \"ro.*\"\nsubscribe = \"*\"\n");
  const BusFixture& f = rb.f;
  ASSERT_TRUE(rb.d.start());
  Bus::connect(f.options()).create_topic("ro.lock", {.slot_count = 8, .slot_size = 64});
  const BusOptions opts = f.options();
  const pid_t attacker = spawn([&]() -> int {
    if (!become_other()) return 10;
    Bus bus = Bus::connect(opts);
    auto sub = bus.subscriber("ro.lock");  // a seat the daemon frees when we go
    const detail::Received r = raw_request(opts.socket_path, detail::proto::OpenTopic{"ro.lock"});
    if (r.fds.size() != 2) return 14;
    void* c = ::mmap(nullptr, sizeof(detail::ControlHeader), PROT_READ | PROT_WRITE, MAP_SHARED,
                     r.fds[1], 0);
    if (c == MAP_FAILED) return 15;
    // Relaxed: the attacker's scribble.
    static_cast<detail::ControlHeader*>(c)->control_lock.store(1, std::memory_order_relaxed);
    ::_exit(0);  // the seat stays registered: the daemon frees it
  });
  ASSERT_EQ(wait_child(attacker, 30s), 0);
  // Served within the client's 5 s timeout while the lock is held, across
  // several housekeeping passes (every 250 ms) that each try to free the seat.
  Bus root = Bus::connect(f.options());
  int served = 0;
  for (const auto until = std::chrono::steady_clock::now() + 1500ms;
       std::chrono::steady_clock::now() < until; ++served)
    ASSERT_NO_THROW((void)root.topics()) << "after " << served << " requests";
  EXPECT_EQ(root.describe("ro.lock").groups.size(), 1u) << "the seat is still held";
}

}  // namespace
}  // namespace shmbus::test
