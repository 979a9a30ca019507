// Bus, Topic and the status records for Python. Every call here talks to
// shmbusd over its socket, so each runs with the GIL released.
#include <variant>
#include <vector>

#include "common.hpp"
#include "py_publisher.hpp"
#include "py_subscriber.hpp"
#include "shmbus/bus.hpp"
#include "shmbus/detail/layout.hpp"
#include "shmbus/topic.hpp"
#include "shmbus/topic_status.hpp"

namespace shmbus::python {

namespace {

// A Bus and the process that connected it.
struct PyBus {
  Bus bus;
  pid_t pid = current_pid();

  // The prologue of every call: refuses a fork() child (see ForkSafePtr).
  Bus& get() {
    check_process(pid, "Bus");
    return bus;
  }
  // f(bus) with the GIL released: every such call waits for shmbusd.
  template <class F>
  auto ask_daemon(F&& f) {
    Bus& b = get();
    py::gil_scoped_release nogil;
    return f(b);
  }
};

using TopicArg = std::variant<std::string, Topic>;

Topic resolve(Bus& bus, const TopicArg& t) {
  if (const auto* topic = std::get_if<Topic>(&t)) return *topic;
  const std::string& name = std::get<std::string>(t);
  py::gil_scoped_release nogil;
  return bus.open_topic(name);
}

// partitions= and priorities= of create_topic, checked here so that the
// message names the keywords.
void set_rings(TopicOptions& o, const py::object& partitions, const py::object& priorities) {
  const auto count = [](const py::object& v, const char* keyword) -> std::int64_t {
    if (py::isinstance<py::int_>(v) && !py::isinstance<py::bool_>(v)) {
      const long long n = PyLong_AsLongLong(v.ptr());
      if (!PyErr_Occurred()) return n;
      PyErr_Clear();
    }
    raise(PyExc_TypeError,
          std::string(keyword) + "= must be an int, not " + py::repr(v).cast<std::string>());
  };
  const std::int64_t parts = count(partitions, "partitions");
  const std::int64_t prios = count(priorities, "priorities");
  if (parts < 1 || parts > detail::kMaxPartitions)
    raise(invalid_argument(), "partitions=" + std::to_string(parts) + ": a topic has 1 to " +
                                  std::to_string(detail::kMaxPartitions) +
                                  " partitions (1: not partitioned)");
  if (prios == 1 || prios < 0 || prios > detail::kMaxPriorities)
    raise(invalid_argument(), "priorities=" + std::to_string(prios) +
                                  ": expected 0 (no priority lanes) or 2 to " +
                                  std::to_string(detail::kMaxPriorities) + " lanes");
  if (prios != 0 && parts != 1)
    raise(invalid_argument(), "partitions=" + std::to_string(parts) +
                                  " with priorities=" + std::to_string(prios) +
                                  ": a topic has either partitions or priority lanes, not both");
  o.partitions = static_cast<std::uint32_t>(parts);
  o.priorities = static_cast<std::uint32_t>(prios);
}

// One partition (or priority lane) of a topic, with its index, for Python
// (TopicStatus.per_partition).
struct PyPartitionStatus {
  std::uint32_t partition;
  PartitionStatus s;
};
// A group's place in one partition, with its index (GroupStatus.per_partition).
struct PyGroupPartitionStatus {
  std::uint32_t partition;
  GroupPartitionStatus s;
};

std::vector<PyPartitionStatus> per_partition(const TopicStatus& t) {
  std::vector<PyPartitionStatus> out;
  for (std::size_t i = 0; i < t.partitions.size(); ++i)
    out.push_back({static_cast<std::uint32_t>(i), t.partitions[i]});
  return out;
}
std::vector<PyGroupPartitionStatus> per_partition(const GroupStatus& g) {
  std::vector<PyGroupPartitionStatus> out;
  for (std::size_t i = 0; i < g.partitions.size(); ++i)
    out.push_back({static_cast<std::uint32_t>(i), g.partitions[i]});
  return out;
}

py::object owner_pid(const GroupPartitionStatus& p) {
  return p.owner_pid == 0 ? py::object(py::none()) : py::object(py::int_(p.owner_pid));
}
py::object target_seat(const GroupPartitionStatus& p) {
  return p.target_seat < 0 ? py::object(py::none()) : py::object(py::int_(p.target_seat));
}

std::string repr_topic_status(const TopicStatus& t) {
  return "<shmbus.TopicStatus name='" + t.name + "' slots=" + std::to_string(t.options.slot_count) +
         " slot_size=" + std::to_string(t.options.slot_size) + " policy='" +
         std::string(to_string(t.options.policy)) + "' tail=" + std::to_string(t.tail) +
         " producers=" + std::to_string(t.producers) +
         " groups=" + std::to_string(t.groups.size()) +
         (t.options.partitions != 1 ? " partitions=" + std::to_string(t.options.partitions) : "") +
         (t.options.priorities != 0 ? " priorities=" + std::to_string(t.options.priorities) : "") +
         ">";
}

py::dict group_dict(const GroupStatus& g) {
  py::dict d;
  d["name"] = g.name.empty() ? py::object(py::none()) : py::object(py::str(g.name));
  d["members"] = g.members;
  d["durable"] = g.durable;
  d["position"] = g.position;
  d["lag"] = g.lag;
  d["lost"] = g.lost;
  d["filtered"] = g.filtered;
  d["overrun"] = g.overrun;
  py::list members;
  for (const MemberStatus& ms : g.member_seats) {
    py::dict md;
    md["seat"] = ms.seat;
    md["pid"] = ms.pid;
    md["held"] = ms.holds_nothing() ? py::object(py::none()) : py::int_(ms.held);
    md["received"] = ms.received;
    members.append(md);
  }
  d["member_seats"] = members;
  d["mode"] = to_string(g.mode);
  d["delivery"] = to_string(g.delivery);
  d["max_deliveries"] = g.max_deliveries;
  d["redelivered"] = g.redelivered;
  d["dead_lettered"] = g.dead_lettered;
  d["unacked_orphans"] = g.unacked_orphans;
  d["orphans"] = g.orphans;
  py::list parts;
  for (const PyGroupPartitionStatus& p : per_partition(g)) {
    py::dict pd;
    pd["partition"] = p.partition;
    pd["position"] = p.s.position;
    pd["lag"] = p.s.lag;
    pd["owner_pid"] = owner_pid(p.s);
    pd["target_seat"] = target_seat(p.s);
    parts.append(pd);
  }
  d["per_partition"] = parts;
  return d;
}

py::dict topic_dict(const TopicStatus& t) {
  py::dict d;
  d["name"] = t.name;
  d["slots"] = t.options.slot_count;
  d["slot_size"] = t.options.slot_size;
  d["policy"] = to_string(t.options.policy);
  d["single_producer"] = t.options.single_producer;
  d["max_producers"] = t.options.max_producers;
  d["max_groups"] = t.options.max_groups;
  d["max_members"] = t.options.max_members;
  d["mode"] = t.options.mode;
  d["tail"] = t.tail;
  d["producers"] = t.producers;
  d["published"] = t.published;
  d["published_bytes"] = t.published_bytes;
  d["generation"] = t.generation;
  d["abandoned"] = t.abandoned;
  d["deleted"] = t.deleted;
  d["damage"] = t.damage;
  d["partitions"] = t.options.partitions;
  d["priorities"] = t.options.priorities;
  d["delay_slots"] = t.options.delay_slots;
  d["scheduled"] = t.scheduled;
  d["overdue"] = t.overdue;
  d["next_due_ns"] = ns_or_none(t.next_due_ns);
  d["moved"] = t.moved;
  d["refused"] = t.refused;
  d["storage"] = std::string(to_string(t.options.storage));
  d["flush"] = flush_name(t.options.flush_interval);
  d["path"] = t.path.empty() ? py::object(py::none()) : py::object(py::str(t.path));
  d["flushed_ns"] = ns_or_none(t.flushed_ns);
  d["torn"] = t.torn;
  py::list parts;
  for (const PyPartitionStatus& p : per_partition(t)) {
    py::dict pd;
    pd["partition"] = p.partition;
    pd["tail"] = p.s.tail;
    pd["abandoned"] = p.s.abandoned;
    parts.append(pd);
  }
  d["per_partition"] = parts;
  py::list groups;
  for (const GroupStatus& g : t.groups)
    groups.append(group_dict(g));
  d["groups"] = groups;
  return d;
}

}  // namespace

void bind_bus(py::module_& m) {
  py::class_<MemberStatus>(m, "MemberStatus", "A live member of a consumer group.")
      .def_readonly("seat", &MemberStatus::seat)
      .def_readonly("pid", &MemberStatus::pid, "The member's process.")
      .def_property_readonly(
          "held",
          [](const MemberStatus& ms) -> std::optional<std::uint64_t> {
            if (ms.holds_nothing()) return std::nullopt;
            return ms.held;
          },
          "The oldest sequence it holds unreleased, or None.")
      .def_readonly("received", &MemberStatus::received, "Messages it took.")
      .def("__repr__", [](const MemberStatus& ms) {
        return "<shmbus.MemberStatus seat=" + std::to_string(ms.seat) +
               " pid=" + std::to_string(ms.pid) + " received=" + std::to_string(ms.received) + ">";
      });

  py::class_<PyPartitionStatus>(m, "PartitionStatus",
                                "One partition (or priority lane) of a topic "
                                "(TopicStatus.per_partition).")
      .def_readonly("partition", &PyPartitionStatus::partition,
                    "Its index (on a priority topic: the lane's priority).")
      .def_property_readonly(
          "tail", [](const PyPartitionStatus& p) { return p.s.tail; },
          "The next offset to be claimed in the partition.")
      .def_property_readonly(
          "abandoned", [](const PyPartitionStatus& p) { return p.s.abandoned; },
          "Offsets given up instead of published.")
      .def("__repr__", [](const PyPartitionStatus& p) {
        return "<shmbus.PartitionStatus partition=" + std::to_string(p.partition) +
               " tail=" + std::to_string(p.s.tail) + ">";
      });

  py::class_<PyGroupPartitionStatus>(m, "GroupPartitionStatus",
                                     "A group's place in one partition (or priority lane) "
                                     "(GroupStatus.per_partition).")
      .def_readonly("partition", &PyGroupPartitionStatus::partition,
                    "Its index (on a priority topic: the lane's priority).")
      .def_property_readonly(
          "position", [](const PyGroupPartitionStatus& p) { return p.s.position; },
          "The next offset the group takes in the partition.")
      .def_property_readonly(
          "lag", [](const PyGroupPartitionStatus& p) { return p.s.lag; },
          "The partition's tail - position.")
      .def_property_readonly(
          "owner_pid", [](const PyGroupPartitionStatus& p) { return owner_pid(p.s); },
          "A partitioned group: the pid of the member that owns the partition now, or None\n"
          "(none owns it, or the group is shared).")
      .def_property_readonly(
          "target_seat", [](const PyGroupPartitionStatus& p) { return target_seat(p.s); },
          "A partitioned group: the member seat (MemberStatus.seat) the group's assignment\n"
          "gives the partition to, or None. It owns it once the previous owner let go.")
      .def("__repr__", [](const PyGroupPartitionStatus& p) {
        return "<shmbus.GroupPartitionStatus partition=" + std::to_string(p.partition) +
               " position=" + std::to_string(p.s.position) + " lag=" + std::to_string(p.s.lag) +
               " owner_pid=" + (p.s.owner_pid == 0 ? "None" : std::to_string(p.s.owner_pid)) + ">";
      });

  py::class_<GroupStatus>(m, "GroupStatus", "A consumer group of a topic, as shmbusd reports it.")
      .def_property_readonly(
          "name",
          [](const GroupStatus& g) -> std::optional<std::string> {
            if (g.name.empty()) return std::nullopt;
            return g.name;
          },
          "The group's name, or None for a private group.")
      .def_readonly("members", &GroupStatus::members, "Live members.")
      .def_readonly("member_seats", &GroupStatus::member_seats,
                    "The live members (list of MemberStatus).")
      .def_readonly("durable", &GroupStatus::durable,
                    "The group gates producers even with no members.")
      .def_readonly("position", &GroupStatus::position,
                    "The next sequence the group takes (summed over the partitions).")
      .def_readonly("lag", &GroupStatus::lag, "tail - position (summed over the partitions).")
      .def_property_readonly(
          "mode", [](const GroupStatus& g) { return to_string(g.mode); },
          "'shared' or 'partitioned' (see Bus.subscriber).")
      .def_property_readonly(
          "per_partition", [](const GroupStatus& g) { return per_partition(g); },
          "The group in each partition (list of GroupPartitionStatus): position, lag, and\n"
          "in a partitioned group its owner.")
      .def_property_readonly(
          "delivery", [](const GroupStatus& g) { return to_string(g.delivery); },
          "'at_most_once' or 'at_least_once' (see Bus.subscriber).")
      .def_readonly("max_deliveries", &GroupStatus::max_deliveries,
                    "at_least_once: deliveries before the dead-letter topic (0 otherwise).")
      .def_readonly("redelivered", &GroupStatus::redelivered,
                    "Messages delivered again (a member died holding them, or nacked them).")
      .def_readonly("dead_lettered", &GroupStatus::dead_lettered,
                    "Messages sent to the dead-letter topic '<topic>.dlq'.")
      .def_readonly("unacked_orphans", &GroupStatus::unacked_orphans,
                    "Messages dead members left unacknowledged, waiting for a live member.")
      .def_readonly("orphans", &GroupStatus::orphans,
                    "Seats of dead members that left unacknowledged messages.")
      .def_readonly("lost", &GroupStatus::lost, "Messages skipped after being overrun.")
      .def_readonly("filtered", &GroupStatus::filtered,
                    "Messages taken and not returned: the tag filter did not match.")
      .def_readonly("overrun", &GroupStatus::overrun,
                    "Overrun now: messages older than the ring keeps that the group will\n"
                    "lose (count in lost) when it next reads; 0 when it is not.")
      .def("as_dict", &group_dict, "as_dict() -> dict\n\nThe fields as a dict.")
      .def("__repr__", [](const GroupStatus& g) {
        return "<shmbus.GroupStatus name=" + (g.name.empty() ? "None" : "'" + g.name + "'") +
               " members=" + std::to_string(g.members) + " position=" + std::to_string(g.position) +
               " lag=" + std::to_string(g.lag) + " lost=" + std::to_string(g.lost) + ">";
      });

  py::class_<TopicStatus>(m, "TopicStatus",
                          "A topic's options and counters (Bus.topics(), Bus.describe(), "
                          "Topic.status()).")
      .def_readonly("name", &TopicStatus::name)
      .def_property_readonly(
          "slots", [](const TopicStatus& t) { return t.options.slot_count; },
          "Number of slots in the ring.")
      .def_property_readonly(
          "slot_size", [](const TopicStatus& t) { return t.options.slot_size; },
          "Payload bytes per slot (the largest message).")
      .def_property_readonly(
          "policy", [](const TopicStatus& t) { return to_string(t.options.policy); },
          "'block', 'reject' or 'overwrite'.")
      .def_property_readonly("single_producer",
                             [](const TopicStatus& t) { return t.options.single_producer; })
      .def_property_readonly("max_producers",
                             [](const TopicStatus& t) { return t.options.max_producers; })
      .def_property_readonly("max_groups",
                             [](const TopicStatus& t) { return t.options.max_groups; })
      .def_property_readonly("max_members",
                             [](const TopicStatus& t) { return t.options.max_members; })
      .def_property_readonly(
          "mode", [](const TopicStatus& t) { return t.options.mode; },
          "Permission bits of the region.")
      .def_property_readonly(
          "partitions", [](const TopicStatus& t) { return t.options.partitions; },
          "Partitions (1: not partitioned; 1 on a priority topic).")
      .def_property_readonly(
          "priorities", [](const TopicStatus& t) { return t.options.priorities; },
          "Priority lanes (0: none).")
      .def_property_readonly(
          "delay_slots", [](const TopicStatus& t) { return t.options.delay_slots; },
          "Entries of the topic's schedule of delayed messages (0: none).")
      .def_readonly("scheduled", &TopicStatus::scheduled,
                    "Delayed messages waiting in the schedule (not yet appended).")
      .def_readonly("overdue", &TopicStatus::overdue,
                    "Of those, how many are past their due time (no daemon ran, or their\n"
                    "partition is full).")
      .def_property_readonly(
          "next_due_ns", [](const TopicStatus& t) { return ns_or_none(t.next_due_ns); },
          "The earliest due time in the schedule, ns since the epoch (None: nothing scheduled).")
      .def_readonly("moved", &TopicStatus::moved,
                    "Delayed messages shmbusd appended to their partitions.")
      .def_readonly("refused", &TopicStatus::refused,
                    "Schedule entries shmbusd found invalid and dropped (logged).")
      .def_property_readonly(
          "storage", [](const TopicStatus& t) { return std::string(to_string(t.options.storage)); },
          "'memory' or 'file'.")
      .def_property_readonly(
          "flush", [](const TopicStatus& t) { return flush_name(t.options.flush_interval); },
          "A file topic's flush policy: 'none' or 'interval:<N>ms'.")
      .def_property_readonly(
          "path",
          [](const TopicStatus& t) {
            return t.path.empty() ? py::object(py::none()) : py::object(py::str(t.path));
          },
          "A file topic's data file (its control file is path + '@control'); None for memory.")
      .def_property_readonly(
          "flushed_ns", [](const TopicStatus& t) { return ns_or_none(t.flushed_ns); },
          "When a file topic was last written to disk, ns since the epoch (None: never).")
      .def_readonly("torn", &TopicStatus::torn,
                    "Messages shmbusd found torn (checksum mismatch, a power cut) when it\n"
                    "adopted the file topic; readers skip them, counted as lost.")
      .def_property_readonly(
          "per_partition", [](const TopicStatus& t) { return per_partition(t); },
          "Each partition's (or priority lane's) tail and abandoned count (list of\n"
          "PartitionStatus).")
      .def_readonly("tail", &TopicStatus::tail,
                    "The next sequence to be claimed (summed over the partitions).")
      .def_readonly("producers", &TopicStatus::producers, "Live producer seats.")
      .def_readonly("published", &TopicStatus::published,
                    "Messages ever published to the topic (tail - abandoned).")
      .def_readonly("abandoned", &TopicStatus::abandoned,
                    "Sequences given up instead of published (dropped loans, dead producers).")
      .def_readonly("deleted", &TopicStatus::deleted,
                    "The topic was deleted (seen through a Topic opened before).")
      .def_readonly("damage", &TopicStatus::damage,
                    "Empty, or what shmbusd found wrong with the topic's region (quarantined: "
                    "delete the topic and create it again).")
      .def_readonly("published_bytes", &TopicStatus::published_bytes,
                    "Payload bytes published by the live producers (an estimate).")
      .def_readonly("generation", &TopicStatus::generation,
                    "Tells a topic deleted and created again under the same name apart.")
      .def_readonly("groups", &TopicStatus::groups, "The consumer groups (list of GroupStatus).")
      .def("as_dict", &topic_dict,
           "as_dict() -> dict\n\nThe fields as a dict (groups as a list of dicts).")
      .def("__repr__", &repr_topic_status);

  py::class_<Topic, ForkSafePtr<Topic>>(
      m, "Topic",
      "An opened topic (Bus.create_topic / Bus.open_topic). Pass it to\n"
      "Bus.publisher / Bus.subscriber to skip opening it again.")
      .def_property_readonly("name", &Topic::name)
      .def(
          "status",
          [](const Topic& t) {
            py::gil_scoped_release nogil;
            return t.status();
          },
          "status() -> TopicStatus\n\nWhat Bus.describe() reports, read from the topic's "
          "region by this process.")
      .def("__repr__", [](const Topic& t) { return "<shmbus.Topic name='" + t.name() + "'>"; });

  py::class_<PyBus, ForkSafePtr<PyBus>>(m, "Bus", R"doc(
A connection to shmbusd (made by shmbus.connect). Creates, opens and deletes
topics through the daemon, and makes publishers and subscribers. The data
path never goes through the daemon.

Objects made through a Bus keep what they need alive by themselves; the Bus
object may be dropped before them.
)doc")
      .def(
          "create_topic",
          [](PyBus& b, const std::string& name, std::uint32_t slots, std::uint32_t slot_size,
             const std::string& policy, bool single_producer, std::uint32_t max_producers,
             std::uint32_t max_groups, std::uint32_t max_members, std::uint32_t mode,
             bool if_not_exists, const py::object& partitions, const py::object& priorities,
             std::uint32_t delay_slots, const std::string& storage, const std::string& flush) {
            TopicOptions o;
            set_rings(o, partitions, priorities);
            o.delay_slots = delay_slots;
            const auto st = parse_storage(storage);
            if (!st)
              throw Error(ErrorCode::InvalidArgument,
                          "storage='" + storage + "' is not " + std::string(kStorageNames));
            o.storage = *st;
            const auto every = parse_flush(flush);
            if (!every)
              throw Error(ErrorCode::InvalidArgument,
                          "flush='" + flush + "' is not " + std::string(kFlushNames));
            o.flush_interval = *every;
            o.slot_count = slots;
            o.slot_size = slot_size;
            o.policy = policy_arg(policy);
            o.single_producer = single_producer;
            o.max_producers = max_producers;
            o.max_groups = max_groups;
            o.max_members = max_members;
            o.mode = mode;
            return b.ask_daemon([&](Bus& bus) { return bus.create_topic(name, o, if_not_exists); });
          },
          py::arg("name"), py::arg("slots") = 1024, py::arg("slot_size") = 1024,
          py::arg("policy") = "block", py::arg("single_producer") = false, py::kw_only(),
          py::arg("max_producers") = 16, py::arg("max_groups") = 16, py::arg("max_members") = 8,
          py::arg("mode") = 0600, py::arg("if_not_exists") = false, py::arg("partitions") = 1,
          py::arg("priorities") = 0, py::arg("delay_slots") = 0, py::arg("storage") = "memory",
          py::arg("flush") = "none",
          R"doc(create_topic(name: str, slots: int = 1024, slot_size: int = 1024, policy: str = 'block', single_producer: bool = False, *, max_producers: int = 16, max_groups: int = 16, max_members: int = 8, mode: int = 0o600, if_not_exists: bool = False, partitions: int = 1, priorities: int = 0, delay_slots: int = 0, storage: str = 'memory', flush: str = 'none') -> Topic

Creates a topic: `slots` (a power of two >= 2) slots of `slot_size` bytes.

partitions (1 to 1024): rings of `slots` slots each, each with its own
offsets (Kafka's partitions); a keyed message goes to
partition_for_key(key, partitions). priorities (0: none, or 2 to 32): the
rings are priority lanes instead, 0 the lowest; a receive takes the oldest
message of the highest lane that has one. Not both.

delay_slots (0 to 1048576): entries of the topic's schedule of delayed
messages (Publisher.publish(..., delay=, deliver_at=)); 0: delayed publishes
raise InvalidArgument. Not with single_producer.

storage: 'memory' (shared memory, gone with a reboot) or 'file' (two files
in shmbusd's data directory: messages, group positions and unacknowledged
messages survive a restart of everything and a reboot; each message carries
a CRC32C, so one torn by a power cut is skipped as lost). flush (file
topics): 'none' (the page cache writes back: survives any process crash, not
a power cut) or 'interval:100ms' (shmbusd writes to disk that often); see
Publisher.flush() and Bus.flush(topic) for a flush on demand.

policy: what a publisher does on a full ring: 'block' (wait), 'reject'
(refuse at once) or 'overwrite' (overwrite the oldest; slow readers skip and
count). Raises AlreadyExists if the topic exists, unless if_not_exists: then
opens it as it is (compare topic.status() with what you asked for).
InvalidArgument for bad values.)doc")
      .def(
          "open_topic",
          [](PyBus& b, const std::string& name) {
            return b.ask_daemon([&](Bus& bus) { return bus.open_topic(name); });
          },
          py::arg("name"),
          "open_topic(name: str) -> Topic\n\nOpens an existing topic (NotFound if there is none).")
      .def(
          "delete_topic",
          [](PyBus& b, const std::string& name, bool if_unused) {
            b.ask_daemon([&](Bus& bus) { return bus.delete_topic(name, if_unused); });
          },
          py::arg("name"), py::kw_only(), py::arg("if_unused") = false,
          "delete_topic(name: str, *, if_unused: bool = False) -> None\n\nDeletes a topic. "
          "Everyone who has it open is told: publish raises TopicDeleted at\n"
          "once, receive once every message published before was received. if_unused:\n"
          "raise InUse instead while publishers or subscribers are attached.")
      .def(
          "topics", [](PyBus& b) { return b.ask_daemon([&](Bus& bus) { return bus.topics(); }); },
          "topics() -> list[TopicStatus]\n\nEvery topic of the bus.")
      .def(
          "request",
          [](PyBus& b, const std::string& topic, const py::object& data, double timeout) {
            const std::chrono::nanoseconds t = seconds_to_ns(timeout, "timeout");
            const BufferArg buf(data, PyBUF_C_CONTIGUOUS,
                                "request needs a C-contiguous buffer (bytes, bytearray, "
                                "memoryview, NumPy array)");
            const std::vector<std::byte> reply =
                b.ask_daemon([&](Bus& bus) { return bus.request(topic, buf.bytes(), t); });
            return py::bytes(reinterpret_cast<const char*>(reply.data()), reply.size());
          },
          py::arg("topic"), py::arg("data"), py::arg("timeout") = 1.0,
          R"doc(request(topic: str, data: Buffer, timeout: float = 1.0) -> bytes

Request-reply (RocketMQ's request, RabbitMQ's direct reply-to): publishes
`data` to `topic` with the properties reply_to (this Bus's private reply
topic, made on the first request, removed when the Bus is closed or this
process dies) and correlation_id, and returns the payload of the reply a
responder sends with Sample.reply(). Raises Timeout when none came within
`timeout` seconds (0 to 3600; a late reply is dropped). One request at a time
per Bus: use a Bus per thread for parallel requests. Replies are at most
16384 bytes.)doc")
      .def_property_readonly(
          "stale_replies", [](PyBus& b) { return b.get().stale_replies(); },
          "Replies that came after their request had timed out (dropped).")
      .def(
          "flush",
          [](PyBus& b, const std::string& name) {
            // Without the GIL (ask_daemon): msync takes as long as the disk does.
            b.ask_daemon([&](Bus& bus) { bus.flush(name); });
          },
          py::arg("topic"),
          "flush(topic: str) -> None\n\nReturns once everything published to the file topic "
          "before the call is on\ndisk (msync); nothing to do for a memory topic.")
      .def(
          "describe",
          [](PyBus& b, const std::string& name) {
            return b.ask_daemon([&](Bus& bus) { return bus.describe(name); });
          },
          py::arg("name"),
          "describe(name: str) -> TopicStatus\n\nOne topic's status (NotFound if there is none).")
      .def(
          "describe_group",
          [](PyBus& b, const std::string& topic, const std::string& group) {
            return b.ask_daemon([&](Bus& bus) { return bus.describe_group(topic, group); });
          },
          py::arg("topic"), py::arg("group"),
          "describe_group(topic: str, group: str) -> GroupStatus\n\nA named group, with its "
          "members (NotFound if there is none).")
      .def(
          "delete_group",
          [](PyBus& b, const std::string& topic, const std::string& group) {
            b.ask_daemon([&](Bus& bus) { bus.delete_group(topic, group); });
          },
          py::arg("topic"), py::arg("group"),
          "delete_group(topic: str, group: str) -> None\n\nDeletes a named group; InUse while "
          "it has live members. (A private\ngroup goes by itself with its last member.)")
      .def(
          "reset_group",
          [](PyBus& b, const std::string& topic, const std::string& group, const py::handle& to) {
            const StartPosition at = start_arg(to);
            b.ask_daemon([&](Bus& bus) { bus.reset_group(topic, group, at); });
          },
          py::arg("topic"), py::arg("group"), py::arg("to"),
          "reset_group(topic: str, group: str, to: str | int) -> None\n\nSets a named group's "
          "position: 'earliest', 'latest' or a sequence number\nat most the tail. InUse while "
          "it has live members.")
      .def(
          "publisher",
          [](PyBus& b, const TopicArg& topic, std::optional<double> timeout,
             const std::string& wait, double spin) {
            Bus& bus = b.get();
            return make_publisher(resolve(bus, topic), timeout, wait, spin);
          },
          py::arg("topic"), py::kw_only(), py::arg("timeout") = 10.0, py::arg("wait") = "futex",
          py::arg("spin") = 50e-6,
          R"doc(publisher(topic: str | Topic, *, timeout: float | None = 10.0, wait: str = 'futex', spin: float = 50e-6) -> Publisher

A Publisher for `topic` (a name or a Topic).

timeout: seconds publish()/loan() wait for room under policy 'block' (None:
for ever). wait: 'futex' (spin `spin` seconds, then sleep), 'yield' or 'busy'.)doc")
      .def(
          "subscriber",
          [](PyBus& b, const TopicArg& topic, const std::optional<std::string>& group,
             const py::object& start, bool durable, const std::string& wait, double spin,
             const std::string& mode, const std::optional<std::string>& tags,
             const std::string& delivery, std::uint32_t max_deliveries) {
            Bus& bus = b.get();
            return make_subscriber(resolve(bus, topic), group, start, durable, wait, spin, mode,
                                   tags, delivery, max_deliveries);
          },
          py::arg("topic"), py::arg("group") = py::none(), py::arg("start") = "latest",
          py::kw_only(), py::arg("durable") = false, py::arg("wait") = "futex",
          py::arg("spin") = 50e-6, py::arg("mode") = "shared", py::arg("tags") = py::none(),
          py::arg("delivery") = "at_most_once", py::arg("max_deliveries") = kDefaultMaxDeliveries,
          R"doc(subscriber(topic: str | Topic, group: str | None = None, start: str | int = 'latest', *, durable: bool = False, wait: str = 'futex', spin: float = 50e-6, mode: str = 'shared', tags: str | None = None, delivery: str = 'at_most_once', max_deliveries: int = 5) -> Subscriber

A Subscriber of `topic` (a name or a Topic).

group: None for a private group; a name to join (or create) a consumer group
whose members compete for messages. start (used when the group is created):
'latest' (only messages published from now on), 'earliest' (the oldest the
ring retains) or a sequence number. durable: the group gates producers even
while it has no members. wait/spin: as for publisher().
mode (chosen when the group is created; joining it with another raises
InvalidArgument): 'shared', members take from any partition (competing
consumers), or 'partitioned', each partition owned by one member at a time
(Kafka's consumer groups: a key's messages in order, by one member). A
'partitioned' group needs a name.
tags: a tag filter, RocketMQ's expression "TagA || TagB" ('*' or None: every
message): messages whose "tag" header is not one of them are taken and not
returned (counted in filtered). Members of a group should use the same one.
delivery (chosen when the group is created, like mode): 'at_most_once', or
'at_least_once': releasing a sample acknowledges it; what a member took and
did not release before it died (or closed) is delivered again to another
member, flagged sample.redelivered; sample.nack() gives one back at once;
after max_deliveries deliveries (set when the group is created) a message
goes to the dead-letter topic '<topic>.dlq'. Needs a group name.)doc")
      .def(
          "shutdown_daemon",
          [](PyBus& b) { b.ask_daemon([&](Bus& bus) { return bus.shutdown_daemon(); }); },
          "shutdown_daemon() -> None\n\nAsks shmbusd to exit (only root or the daemon's own user "
          "may).")
      .def_property_readonly(
          "socket_path", [](PyBus& b) { return b.bus.socket_path(); }, "The daemon's socket.")
      .def_property_readonly(
          "daemon_pid", [](PyBus& b) { return b.bus.daemon_pid(); },
          "The daemon's pid, as it reported at the last hello.")
      .def(
          "__enter__", [](py::object self) { return self; }, "__enter__() -> Bus")
      .def(
          "__exit__", [](PyBus&, const py::args&) { return false; },
          "__exit__(*exc) -> False\n\nDoes nothing: a Bus needs no closing (drop it).")
      .def("__repr__",
           [](const PyBus& b) { return "<shmbus.Bus socket='" + b.bus.socket_path() + "'>"; });

  m.def(
      "_connect",
      [](const std::string& name, bool autospawn, const std::optional<std::string>& socket,
         const std::optional<std::string>& daemon, double timeout, std::optional<long> daemon_uid) {
        BusOptions o;
        o.daemon_uid = daemon_uid.value_or(-1);
        o.bus = name;
        o.autospawn = autospawn;
        o.socket_path = socket.value_or("");
        o.daemon_path = daemon.value_or("");
        o.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(
            seconds_to_ns(timeout, "timeout"));
        return to_python(std::make_unique<PyBus>(PyBus{[&] {
          py::gil_scoped_release nogil;
          return Bus::connect(o);
        }()}));
      },
      py::arg("name"), py::arg("autospawn"), py::arg("socket"), py::arg("daemon"),
      py::arg("timeout"), py::arg("daemon_uid"));

  for (const char* name : {"PartitionStatus", "GroupPartitionStatus", "MemberStatus", "GroupStatus",
                           "TopicStatus", "Topic", "Bus"})
    set_public_module(m.attr(name));
}

}  // namespace shmbus::python
