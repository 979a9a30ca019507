// File topics (issue 17, docs/durability.md): a real shmbusd with a data
// directory, real processes, real files. A reboot is what it does to a bus:
// every process gone (SIGKILL, the daemon and its keeper too), /dev/shm and
// the runtime directory emptied, and the kernel's boot id new, so that the
// pids in the seats mean nothing (one of them is made a live process's).
// Every interleaving that matters is forced through flags in shared memory.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <dirent.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "daemon_util.hpp"

namespace shmbus::test {
namespace {

using namespace std::chrono_literals;

constexpr auto kWait = 60s;

// A checksummed message: its index and a hash of it.
struct Payload {
  std::uint64_t index;
  std::uint64_t check;
};
std::uint64_t check_of(std::uint64_t i) {
  return (i + 0x9e3779b97f4a7c15ULL) * 0xbf58476d1ce4e5b9ULL;
}
bool valid(const Sample& s, std::uint64_t& index) {
  if (s.data().size() != sizeof(Payload)) return false;
  Payload p{};
  std::memcpy(&p, s.data().data(), sizeof p);
  index = p.index;
  return p.check == check_of(p.index) && p.index == s.sequence();
}
std::span<const std::byte> as_bytes(const Payload& p) {
  return {reinterpret_cast<const std::byte*>(&p), sizeof p};
}

// SIGKILLs the keeper of the daemon at `socket` (`shmbusd --keeper <socket>.keep ...`).
void kill_keeper(const std::string& socket) {
  const std::string want = daemon::keeper_path(socket);
  DIR* d = ::opendir("/proc");
  ASSERT_NE(d, nullptr);
  std::vector<pid_t> found;
  while (dirent* e = ::readdir(d)) {
    const pid_t pid = static_cast<pid_t>(std::atol(e->d_name));
    if (pid <= 0) continue;
    std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline");
    std::string cmd((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (cmd.find(std::string("--keeper") + '\0' + want + '\0') != std::string::npos)
      found.push_back(pid);
  }
  ::closedir(d);
  for (const pid_t pid : found) {
    ::kill(pid, SIGKILL);
    EXPECT_TRUE(wait_until([&] { return process_gone(pid); }, kWait));
  }
}

// A bus whose daemon keeps file topics in a directory of its own (outside
// the runtime directory, which a reboot empties).
struct DurableBus {
  BusFixture f;
  TempDir data_root;
  std::string data = data_root.path + "/data";
  DaemonProcess d{f.bus, f.socket};
  std::unique_ptr<DaemonProcess> next;  // the daemon after start_again()
  DurableBus() { d.data_dir = data; }
  bool start() { return d.start(); }
  // SIGKILLs the daemon and its keeper (the first daemon only).
  void kill_everything() {
    d.kill9();
    kill_keeper(f.socket);
  }
  // A new daemon for the bus, with the same data directory.
  bool start_again() {
    next = std::make_unique<DaemonProcess>(f.bus, f.socket);
    next->data_dir = data;
    return next->start();
  }
  [[nodiscard]] std::string file(const std::string& topic) const { return data + "/" + topic; }
};

TopicOptions file_topic(std::uint32_t slots, std::uint32_t size) {
  TopicOptions o = ring_options(slots, size);
  o.storage = Storage::File;
  return o;
}

// What a reboot leaves of a bus: its file topics, nothing else.
void reboot_leftovers(const DurableBus& b) {
  std::system(("rm -f /dev/shm/shmbus." + b.f.bus + ".* /dev/shm/shmbus-" + b.f.bus + "*").c_str());
  std::filesystem::remove_all(b.f.dir.path);
  std::filesystem::create_directories(b.f.dir.path);
}

// Reads and writes a topic's files while nothing maps them.
struct Files {
  std::string data, control;
  template <class T>
  T read(const std::string& path, std::uint64_t at) const {
    T v{};
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    EXPECT_GE(fd, 0) << path;
    EXPECT_EQ(::pread(fd, &v, sizeof v, static_cast<off_t>(at)), static_cast<ssize_t>(sizeof v));
    ::close(fd);
    return v;
  }
  template <class T>
  void write(const std::string& path, std::uint64_t at, const T& v) const {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0) << path;
    ASSERT_EQ(::pwrite(fd, &v, sizeof v, static_cast<off_t>(at)), static_cast<ssize_t>(sizeof v));
    ::close(fd);
  }
  // Where sequence s's slot starts in partition 0 (layout.hpp, Ring::slot).
  [[nodiscard]] std::uint64_t slot(std::uint64_t s) const {
    const auto count = read<std::uint32_t>(data, offsetof(detail::TopicHeader, slot_count));
    const auto stride = read<std::uint32_t>(data, offsetof(detail::TopicHeader, stride));
    const auto slots = read<std::uint64_t>(data, offsetof(detail::TopicHeader, slots_offset));
    std::uint64_t i = s & (count - 1);
    if (count >= 4 && ((i ^ (i >> 1)) & 1) != 0) i ^= 3;
    return slots + i * stride;
  }
  // The member seat of group `group` held by `pid`, in the control file.
  [[nodiscard]] std::uint64_t member_of(const std::string& group, std::uint32_t pid) const {
    const auto groups = read<std::uint64_t>(data, offsetof(detail::TopicHeader, groups_offset));
    const auto stride = read<std::uint32_t>(data, offsetof(detail::TopicHeader, group_stride));
    const auto n = read<std::uint32_t>(data, offsetof(detail::TopicHeader, max_groups));
    const auto members = read<std::uint32_t>(data, offsetof(detail::TopicHeader, max_members));
    for (std::uint32_t g = 0; g < n; ++g) {
      const std::uint64_t at = groups + std::uint64_t{g} * stride;
      const auto name =
          read<std::array<char, 64>>(control, at + offsetof(detail::GroupEntry, name));
      if (group != std::string(name.data(), ::strnlen(name.data(), name.size()))) continue;
      for (std::uint32_t m = 0; m < members; ++m) {
        const std::uint64_t seat = at + sizeof(detail::GroupEntry) + m * sizeof(detail::MemberSeat);
        if (read<std::uint32_t>(control, seat + offsetof(detail::MemberSeat, pid)) == pid)
          return seat;
      }
    }
    ADD_FAILURE() << "no seat of pid " << pid << " in group " << group;
    return 0;
  }
};

// Publishes messages [from, to) to `topic` (a child process).
int produce(const BusOptions& o, const std::string& topic, std::uint64_t from, std::uint64_t to) {
  Bus b = Bus::connect(o);
  Publisher p = b.publisher(topic);
  for (std::uint64_t i = from; i < to; ++i) {
    const Payload m{i, check_of(i)};
    if (p.publish(as_bytes(m), kWait) != Status::Ok) return 3;
  }
  p.flush();  // on disk, as far as the kernel goes
  return 0;
}

// The whole issue's reboot: 50,000 messages in a file topic, an at-most-once
// group part-way (its member closed), an at-least-once member holding ten
// samples it never acknowledged; then everything is SIGKILLed and what a
// reboot removes is removed; the dead member's pid is now a live process's.
// A new daemon serves the topic again: both groups resume exactly where they
// were, the ten come again flagged redelivered, every message is intact.
TEST(FileTopic, SurvivesAKillOfEverythingAndAReboot) {
  DurableBus b;
  SharedCounters* sh = make_shared_counters();
  constexpr std::uint64_t kMessages = 50'000, kAudited = 20'000, kWorked = 30'000, kHeld = 10;
  const std::string topic = "orders";
  // Children first (TSan: no fork after the parent's threads), each
  // waiting for its turn: 1 the topic exists, 2 the messages are in.
  const pid_t producer = spawn([&] {
    if (!wait_until([&] { return sh->value[0].load() >= 1; }, kWait)) return 2;
    return produce(b.f.options(), topic, 0, kMessages);
  });
  const pid_t auditor = spawn([&] {
    if (!wait_until([&] { return sh->value[0].load() >= 2; }, kWait)) return 2;
    Bus bus = Bus::connect(b.f.options());
    SubscriberOptions o;
    o.group = "audit";
    auto sub = bus.subscriber(topic, o);
    for (std::uint64_t n = 0; n < kAudited; ++n) {
      Sample s;
      std::uint64_t i = 0;
      if (sub->receive(s, kWait) != Status::Ok || !valid(s, i) || i != n) return 3;
    }
    return 0;  // closes: the group stays at kAudited (durable)
  });
  const pid_t worker = spawn([&] {
    if (!wait_until([&] { return sh->value[0].load() >= 2; }, kWait)) return 2;
    Bus bus = Bus::connect(b.f.options());
    SubscriberOptions o;
    o.group = "work";
    o.delivery = Delivery::AtLeastOnce;
    auto sub = bus.subscriber(topic, o);
    std::vector<Sample> held(kHeld);
    for (std::uint64_t n = 0; n < kWorked; ++n) {
      Sample s;
      std::uint64_t i = 0;
      if (sub->receive(s, kWait) != Status::Ok || !valid(s, i) || i != n) return 3;
      if (n >= kWorked - kHeld) held[n - (kWorked - kHeld)] = std::move(s);  // never released
    }
    sh->value[1].store(1);  // holding the last ten: kill me
    for (;;)
      ::pause();
  });
  ASSERT_TRUE(b.start());
  {
    Bus bus = Bus::connect(b.f.options());
    (void)bus.create_topic(topic, file_topic(65536, 64));
    (void)bus.create_topic("scratch", ring_options(16, 64));  // memory: gone after the reboot
    // Both groups exist (and gate) before anything is published.
    SubscriberOptions audit;
    audit.group = "audit";
    audit.durable = true;
    audit.start = StartFrom::Earliest;
    (void)bus.subscriber(topic, audit);
    SubscriberOptions work;
    work.group = "work";
    work.delivery = Delivery::AtLeastOnce;
    work.start = StartFrom::Earliest;
    (void)bus.subscriber(topic, work);
  }
  sh->value[0].store(1);
  ASSERT_EQ(wait_child(producer, kWait), 0);
  sh->value[0].store(2);
  ASSERT_EQ(wait_child(auditor, kWait), 0);
  ASSERT_TRUE(wait_until([&] { return sh->value[1].load() == 1; }, kWait));

  // The daemon first, so that no one frees the worker's seat; then the rest.
  b.kill_everything();
  ::kill(worker, SIGKILL);
  ASSERT_EQ(wait_child(worker, kWait), 128 + SIGKILL);
  reboot_leftovers(b);
  const Files files{b.file(topic), b.file(topic) + "@control"};
  files.write<std::uint64_t>(files.data, offsetof(detail::TopicHeader, boot), 0x5eb007);
  // The worker's seat names a pid that is alive now (ours), as a pid of the
  // previous boot may well be: only the boot id tells it is not the worker.
  const std::uint64_t seat = files.member_of("work", static_cast<std::uint32_t>(worker));
  ASSERT_NE(seat, 0u);
  files.write<std::uint32_t>(files.control, seat + offsetof(detail::MemberSeat, pid),
                             static_cast<std::uint32_t>(::getpid()));

  ASSERT_TRUE(b.start_again());
  Bus bus = Bus::connect(b.f.options());
  EXPECT_THROW((void)bus.describe("scratch"), Error);
  const TopicStatus st = bus.describe(topic);
  EXPECT_EQ(st.options.storage, Storage::File);
  EXPECT_EQ(st.path, b.file(topic));
  EXPECT_EQ(st.published, kMessages);
  EXPECT_EQ(st.torn, 0u);
  EXPECT_EQ(bus.describe_group(topic, "audit").position, kAudited);

  // Every retained message, from the earliest.
  {
    SubscriberOptions o;
    o.start = StartFrom::Earliest;
    auto all = bus.subscriber(topic, o);
    for (std::uint64_t n = 0; n < kMessages; ++n) {
      Sample s;
      std::uint64_t i = 0;
      ASSERT_EQ(all->receive(s, kWait), Status::Ok) << n;
      ASSERT_TRUE(valid(s, i));
      ASSERT_EQ(i, n);
    }
    EXPECT_EQ(all->lost(), 0u);
  }
  // The at-most-once group goes on exactly where it stopped.
  {
    SubscriberOptions o;
    o.group = "audit";
    auto sub = bus.subscriber(topic, o);
    for (std::uint64_t n = kAudited; n < kMessages; ++n) {
      Sample s;
      std::uint64_t i = 0;
      ASSERT_EQ(sub->receive(s, kWait), Status::Ok) << n;
      ASSERT_TRUE(valid(s, i));
      ASSERT_EQ(i, n);
      ASSERT_FALSE(s.redelivered());
    }
  }
  // The at-least-once group: the ten unacknowledged again, flagged, and
  // then the rest from its position; each message once.
  {
    SubscriberOptions o;
    o.group = "work";
    o.delivery = Delivery::AtLeastOnce;
    auto sub = bus.subscriber(topic, o);
    std::set<std::uint64_t> seen, again_seen;
    for (std::uint64_t n = 0; n < kMessages - kWorked + kHeld; ++n) {
      Sample s;
      std::uint64_t i = 0;
      ASSERT_EQ(sub->receive(s, kWait), Status::Ok) << n;
      ASSERT_TRUE(valid(s, i));
      ASSERT_TRUE(seen.insert(i).second) << "twice: " << i;
      if (s.redelivered()) {
        EXPECT_EQ(s.delivery_count(), 2u);
        again_seen.insert(i);
      }
    }
    EXPECT_EQ(*seen.begin(), kWorked - kHeld);
    EXPECT_EQ(*seen.rbegin(), kMessages - 1);
    std::set<std::uint64_t> expected;
    for (std::uint64_t i = kWorked - kHeld; i < kWorked; ++i)
      expected.insert(i);
    EXPECT_EQ(again_seen, expected);
    Sample none;
    EXPECT_EQ(sub->receive(none, 20ms), Status::Timeout);
    const GroupStatus g = bus.describe_group(topic, "work");
    EXPECT_EQ(g.redelivered, kHeld);
    EXPECT_EQ(g.unacked_orphans, 0u);
  }
}

// A power cut: the last messages' bytes never reached the disk, though their
// stamps did. Simulated by corrupting them in the files while nothing runs,
// and a new boot id (a power cut is a reboot). The restarted daemon counts
// them (describe: torn); a reader skips them as lost and returns every
// intact message, one by one and in batches (a torn message within a batch
// costs only itself).
TEST(FileTopic, MessagesTornByAPowerCutAreCountedAsLostNeverReturned) {
  DurableBus b;
  const std::string topic = "log";
  constexpr std::uint64_t kMessages = 100;
  ASSERT_TRUE(b.start());
  {
    Bus bus = Bus::connect(b.f.options());
    (void)bus.create_topic(topic, file_topic(128, 64));
    SubscriberOptions o;
    o.durable = true;
    o.start = StartFrom::Earliest;
    o.group = "reader";
    (void)bus.subscriber(topic, o);
    o.group = "batcher";
    (void)bus.subscriber(topic, o);
    Publisher p = bus.publisher(topic);
    for (std::uint64_t i = 0; i < kMessages; ++i) {
      const Payload m{i, check_of(i)};
      ASSERT_EQ(p.publish(as_bytes(m), kWait), Status::Ok);
    }
  }
  b.kill_everything();
  const Files files{b.file(topic), b.file(topic) + "@control"};
  // Payload bytes of the last three, and a header field of one more.
  const std::set<std::uint64_t> torn{kMessages - 1, kMessages - 2, kMessages - 3, 40};
  for (const std::uint64_t s : {kMessages - 1, kMessages - 2, kMessages - 3}) {
    const std::uint64_t at = files.slot(s) + detail::kSlotHeaderSize;
    files.write<std::uint64_t>(files.data, at, ~files.read<std::uint64_t>(files.data, at));
  }
  const std::uint64_t ts = files.slot(40) + offsetof(detail::SlotHeader, timestamp_ns);
  files.write<std::uint64_t>(files.data, ts, files.read<std::uint64_t>(files.data, ts) + 1);
  files.write<std::uint64_t>(files.data, offsetof(detail::TopicHeader, boot), 0x90e4c07);

  ASSERT_TRUE(b.start_again());
  Bus bus = Bus::connect(b.f.options());
  EXPECT_EQ(bus.describe(topic).torn, torn.size());
  std::vector<std::uint64_t> expected;
  for (std::uint64_t i = 0; i < kMessages; ++i)
    if (!torn.contains(i)) expected.push_back(i);
  SubscriberOptions o;
  o.group = "reader";
  auto sub = bus.subscriber(topic, o);
  std::vector<std::uint64_t> got;
  while (got.size() < expected.size()) {
    Sample s;
    ASSERT_EQ(sub->receive(s, kWait), Status::Ok) << got.size();
    std::uint64_t i = 0;
    ASSERT_TRUE(valid(s, i)) << s.sequence();
    got.push_back(i);
  }
  Sample none;
  EXPECT_EQ(sub->receive(none, 20ms), Status::Timeout);
  EXPECT_EQ(got, expected);
  EXPECT_EQ(sub->lost(), torn.size());
  EXPECT_EQ(bus.describe_group(topic, "reader").lost, torn.size());
  // The same in batches of up to 64.
  o.group = "batcher";
  auto batcher = bus.subscriber(topic, o);
  got.clear();
  while (got.size() < expected.size()) {
    Batch batch;
    ASSERT_EQ(batcher->receive_batch(batch, 64, kWait), Status::Ok) << got.size();
    for (std::size_t k = 0; k < batch.size(); ++k) {
      Payload m{};
      ASSERT_EQ(batch.data(k).size(), sizeof m);
      std::memcpy(&m, batch.data(k).data(), sizeof m);
      ASSERT_EQ(m.check, check_of(m.index));
      ASSERT_EQ(m.index, batch.first_sequence() + k);
      got.push_back(m.index);
    }
  }
  Batch nothing;
  EXPECT_EQ(batcher->receive_batch(nothing, 64, 20ms), Status::Timeout);
  EXPECT_EQ(got, expected);
  EXPECT_EQ(bus.describe_group(topic, "batcher").lost, torn.size());
}

// A full file system (RLIMIT_FSIZE on the daemon stands for one): creating a
// file topic too large for it is a clear error, nothing is left behind, and
// the daemon serves on; a topic that fits has all its blocks from the start,
// so filling it never faults a producer.
TEST(FileTopic, AFullFileSystemIsAnErrorAtCreationNeverASigbus) {
  DurableBus b;
  b.d.file_size_limit = 4u << 20;
  ASSERT_TRUE(b.start());
  Bus bus = Bus::connect(b.f.options());
  try {
    (void)bus.create_topic("huge", file_topic(65536, 1024));  // 68 MiB
    FAIL() << "created a topic larger than the file system allows";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::ResourceExhausted) << e.what();
    EXPECT_NE(std::string(e.what()).find("free space"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(b.file("huge")));
  EXPECT_FALSE(std::filesystem::exists(b.file("huge") + "@control"));
  // The daemon is alive and serves: a small file topic, filled and read.
  (void)bus.create_topic("small", file_topic(256, 1024));
  // Every block allocated, not a sparse file.
  for (const std::string& f : {b.file("small"), b.file("small") + "@control"}) {
    struct stat st {};
    ASSERT_EQ(::stat(f.c_str(), &st), 0);
    EXPECT_GE(static_cast<std::uint64_t>(st.st_blocks) * 512,
              static_cast<std::uint64_t>(st.st_size))
        << f;
  }
  SubscriberOptions o;
  o.start = StartFrom::Earliest;
  auto sub = bus.subscriber("small", o);
  Publisher p = bus.publisher("small");
  std::vector<std::byte> big(1000, std::byte{7});
  for (int i = 0; i < 256; ++i)
    ASSERT_EQ(p.publish(big, kWait), Status::Ok) << i;
  p.flush();
  for (int i = 0; i < 256; ++i) {
    Sample s;
    ASSERT_EQ(sub->receive(s, kWait), Status::Ok);
    EXPECT_EQ(s.data().size(), big.size());
  }
  EXPECT_NE(bus.describe("small").flushed_ns, 0u);
}

// Files another user could plant are never followed, and a data directory
// others may enter is refused with what to do.
TEST(FileTopic, PlantedLinksAndOpenDirectoriesAreRefused) {
  DurableBus b;
  std::filesystem::create_directories(b.data);
  ::chmod(b.data.c_str(), 0700);
  const std::string target = b.data_root.path + "/victim";
  { std::ofstream(target) << "precious"; }
  ASSERT_EQ(::symlink(target.c_str(), b.file("evil").c_str()), 0);
  ASSERT_EQ(::symlink(target.c_str(), (b.file("evil") + "@control").c_str()), 0);
  ASSERT_TRUE(b.start());
  Bus bus = Bus::connect(b.f.options());
  EXPECT_THROW((void)bus.describe("evil"), Error);  // not adopted
  EXPECT_THROW((void)bus.create_topic("evil", file_topic(16, 64)), Error);
  std::string left;
  std::getline(std::ifstream(target), left);
  EXPECT_EQ(left, "precious");
  // A directory others may enter: file topics are refused, memory ones not.
  ::chmod(b.data.c_str(), 0755);
  b.d.stop();
  ASSERT_TRUE(b.start());
  Bus again = Bus::connect(b.f.options());
  try {
    (void)again.create_topic("open", file_topic(16, 64));
    FAIL() << "a file topic in a directory others may enter";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("chmod 0700"), std::string::npos) << e.what();
  }
  (void)again.create_topic("mem", ring_options(16, 64));
}

// shmbusd writes a topic with a flush interval to disk by itself, and says
// when (describe); a deleted topic's files go with it.
TEST(FileTopic, AFlushIntervalWritesByItselfAndDeleteRemovesTheFiles) {
  DurableBus b;
  ASSERT_TRUE(b.start());
  Bus bus = Bus::connect(b.f.options());
  TopicOptions o = file_topic(16, 64);
  o.flush_interval = 20ms;
  (void)bus.create_topic("ticker", o);
  EXPECT_EQ(bus.describe("ticker").options.flush_interval, 20ms);
  Publisher p = bus.publisher("ticker");
  ASSERT_EQ(p.publish(bytes_of("tick"), kWait), Status::Ok);
  std::uint64_t first = 0;
  ASSERT_TRUE(wait_until([&] { return (first = bus.describe("ticker").flushed_ns) != 0; }, kWait));
  // Nothing new: nothing written. Something new: written again.
  ASSERT_EQ(p.publish(bytes_of("tock"), kWait), Status::Ok);
  ASSERT_TRUE(wait_until([&] { return bus.describe("ticker").flushed_ns > first; }, kWait));
  bus.delete_topic("ticker");
  EXPECT_FALSE(std::filesystem::exists(b.file("ticker")));
  EXPECT_FALSE(std::filesystem::exists(b.file("ticker") + "@control"));
  // Topics deleted while the flusher may be flushing them (it once stepped
  // on a deleted entry): the daemon lives on.
  o.flush_interval = 1ms;
  for (int i = 0; i < 40; ++i) {
    const std::string name = "churn" + std::to_string(i % 4);
    (void)bus.create_topic(name, o);
    Publisher q = bus.publisher(name);
    ASSERT_EQ(q.publish(bytes_of("x"), kWait), Status::Ok);
    bus.delete_topic(name);
  }
  EXPECT_EQ(bus.topics().size(), 0u);
}

// A file topic's schedule of delayed messages is in its data file: a
// message scheduled an hour ahead is still scheduled after the daemon and
// its keeper were SIGKILLed and a new daemon adopted the topic.
TEST(FileTopic, ScheduledMessagesOutliveTheDaemon) {
  DurableBus b;
  ASSERT_TRUE(b.start());
  std::uint64_t due = 0;
  {
    Bus bus = Bus::connect(b.f.options());
    TopicOptions o = file_topic(16, 64);
    o.delay_slots = 8;
    (void)bus.create_topic("later", o);
    Publisher p = bus.publisher("later");
    ASSERT_EQ(p.publish_after(std::chrono::hours(1), bytes_of("wake up")), Status::Ok);
    const TopicStatus st = bus.describe("later");
    EXPECT_EQ(st.scheduled, 1u);
    due = st.next_due_ns;
    EXPECT_NE(due, 0u);
  }
  b.kill_everything();
  ASSERT_TRUE(b.start_again());
  Bus bus = Bus::connect(b.f.options());
  const TopicStatus st = bus.describe("later");
  EXPECT_EQ(st.scheduled, 1u);
  EXPECT_EQ(st.next_due_ns, due);
  EXPECT_EQ(st.tail, 0u);
}

// One daemon per data directory: a second bus's daemon given the same one
// serves memory topics, and refuses file topics saying why.
TEST(FileTopic, TwoDaemonsDoNotShareADataDirectory) {
  DurableBus b;
  ASSERT_TRUE(b.start());
  Bus bus = Bus::connect(b.f.options());
  (void)bus.create_topic("mine", file_topic(16, 64));
  BusFixture other;
  DaemonProcess second{other.bus, other.socket};
  second.data_dir = b.data;
  ASSERT_TRUE(second.start());
  Bus bus2 = Bus::connect(other.options());
  EXPECT_THROW((void)bus2.describe("mine"), Error);  // not adopted twice
  try {
    (void)bus2.create_topic("theirs", file_topic(16, 64));
    FAIL() << "two daemons in one data directory";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InUse) << e.what();
    EXPECT_NE(std::string(e.what()).find("another shmbusd serves it"), std::string::npos)
        << e.what();
  }
  (void)bus2.create_topic("theirs", ring_options(16, 64));
}

// Options a file topic refuses, with what to do.
TEST(FileTopic, BadOptionsAreRefused) {
  DurableBus b;
  ASSERT_TRUE(b.start());
  Bus bus = Bus::connect(b.f.options());
  TopicOptions o = ring_options(16, 64);
  o.flush_interval = 100ms;  // a memory topic has nothing to flush
  EXPECT_THROW((void)bus.create_topic("m", o), Error);
  EXPECT_THROW((void)Topic::create(unique_name("f"), file_topic(16, 64)), Error);  // no daemon
  EXPECT_EQ(parse_flush("interval:100ms"), std::chrono::milliseconds(100));
  EXPECT_EQ(parse_flush("interval:2s"), std::chrono::milliseconds(2000));
  EXPECT_EQ(parse_flush("none"), std::chrono::milliseconds(0));
  EXPECT_FALSE(parse_flush("interval:0"));
  EXPECT_FALSE(parse_flush("interval:5h"));
  EXPECT_FALSE(parse_flush("sometimes"));
  EXPECT_EQ(flush_name(std::chrono::milliseconds(250)), "interval:250ms");
  EXPECT_EQ(parse_storage("FILE"), Storage::File);
  EXPECT_FALSE(parse_storage("disk"));
  // A memory topic's flush has nothing to do.
  (void)bus.create_topic("mem", ring_options(16, 64));
  EXPECT_NO_THROW(bus.flush("mem"));
}

}  // namespace
}  // namespace shmbus::test
