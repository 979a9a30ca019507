// shmbus topic create | delete | list | describe
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "../output.hpp"
#include "commands.hpp"
#include "shmbus/options.hpp"
#include "shmbus/topic_status.hpp"

namespace shmbus::cli {
namespace {

struct CreateArgs {
  std::string name;
  std::uint32_t slots = 0;      // 0: the daemon's default (1024 unless configured)
  std::uint32_t slot_size = 0;  // 0: the daemon's default (1024 unless configured)
  std::string policy = "block";
  bool single_producer = false;
  std::uint32_t max_producers = 0, max_groups = 0, max_members = 0;
  bool if_not_exists = false;
  std::uint32_t partitions = 1;
  std::uint32_t priorities = 0;
  std::uint32_t delay_slots = 0;
  std::string storage = "memory";
  std::string flush = "none";
};

std::string lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

std::string policy_name(Policy p) {
  return std::string(to_string(p));
}

// "8 partitions", "4 priority lanes" or "1 partition".
std::string rings_of(const TopicOptions& o) {
  if (o.priorities != 0) return strf("%u priority lanes", o.priorities);
  return strf("%u partition%s", o.partitions, o.partitions == 1 ? "" : "s");
}

std::string topic_summary(const TopicStatus& t) {
  const TopicOptions& o = t.options;
  // A one-partition topic is described as before partitions existed.
  const std::string rings = o.rings() > 1 ? rings_of(o) + " of " : std::string();
  return strf(
             "%s%u slots x %u bytes, policy %s, %s; at most %u producers, %u groups, %u members "
             "per group",
             rings.c_str(), o.slot_count, o.slot_size, policy_name(o.policy).c_str(),
             o.single_producer ? "single producer" : "multi-producer", o.max_producers,
             o.max_groups, o.max_members) +
         (o.storage == Storage::File
              ? "; file " + t.path + ", flush " + flush_name(o.flush_interval)
              : std::string());
}

void write_topic(JsonWriter& w, const TopicStatus& t) {
  const TopicOptions& o = t.options;
  w.begin_object();
  w.key("name").string(t.name);
  w.key("slots").uint(o.slot_count);
  w.key("slot_size").uint(o.slot_size);
  w.key("policy").string(to_string(o.policy));
  w.key("single_producer").boolean(o.single_producer);
  w.key("max_producers").uint(o.max_producers);
  w.key("max_groups").uint(o.max_groups);
  w.key("max_members").uint(o.max_members);
  w.key("tail").uint(t.tail);
  w.key("producers").uint(t.producers);
  w.key("published").uint(t.published);
  w.key("abandoned").uint(t.abandoned);
  w.key("storage").string(to_string(o.storage));
  w.key("flush").string(flush_name(o.flush_interval));
  w.key("path");
  if (t.path.empty())
    w.null();
  else
    w.string(t.path);
  w.key("flushed_ns");
  if (t.flushed_ns == 0)
    w.null();
  else
    w.uint(t.flushed_ns);
  w.key("torn").uint(t.torn);
  write_schedule(w, t);
  write_topic_partitions(w, t);
  if (!t.damage.empty()) w.key("damage").string(t.damage);
  w.key("groups").begin_array();
  for (const GroupStatus& g : t.groups) {
    w.begin_object();
    write_group_fields(w, g);
    w.end_object();
  }
  w.end_array();
  w.end_object();
}

int cmd_create(const Globals& g, const CreateArgs& a) {
  TopicOptions o;
  o.slot_count = a.slots;
  o.slot_size = a.slot_size;
  const auto policy = parse_policy(a.policy);
  if (!policy) fail(kExitUsage, "policy '" + a.policy + "' is not " + std::string(kPolicyNames));
  o.policy = *policy;
  o.single_producer = a.single_producer;
  o.max_producers = a.max_producers;
  o.max_groups = a.max_groups;
  o.max_members = a.max_members;
  o.partitions = a.partitions;
  o.priorities = a.priorities;
  o.delay_slots = a.delay_slots;
  const auto storage = parse_storage(a.storage);
  if (!storage)
    fail(kExitUsage, "storage '" + a.storage + "' is not " + std::string(kStorageNames));
  o.storage = *storage;
  const auto flush = parse_flush(a.flush);
  if (!flush)
    fail(kExitUsage,
         "flush '" + a.flush + "' is not " + std::string(kFlushNames) + " (at most a day)");
  o.flush_interval = *flush;
  if (o.flush_interval.count() != 0 && o.storage != Storage::File)
    fail(kExitUsage, "--flush is for file topics: add --storage file");
  Bus bus = connect(g);
  try {
    (void)bus.create_topic(a.name, o);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::AlreadyExists || !a.if_not_exists) throw;
    std::printf("topic '%s' exists already on bus '%s': %s\n", a.name.c_str(), g.bus.c_str(),
                topic_summary(bus.describe(a.name)).c_str());
    return kExitOk;
  }
  std::printf("created topic '%s' on bus '%s': %s\n", a.name.c_str(), g.bus.c_str(),
              topic_summary(bus.describe(a.name)).c_str());
  return kExitOk;
}

int cmd_delete(const Globals& g, const std::string& name, bool if_unused) {
  Bus bus = connect(g);
  bus.delete_topic(name, if_unused);
  std::printf("deleted topic '%s' from bus '%s'\n", name.c_str(), g.bus.c_str());
  return kExitOk;
}

int cmd_list(const Globals& g, bool json) {
  Bus bus = connect(g);
  auto topics = bus.topics();
  std::sort(topics.begin(), topics.end(),
            [](const auto& x, const auto& y) { return x.name < y.name; });
  if (json) {
    JsonWriter w;
    w.begin_array();
    for (const auto& t : topics)
      write_topic(w, t);
    w.end_array();
    std::printf("%s\n", w.str().c_str());
    return kExitOk;
  }
  // A RINGS column only when some topic has several partitions (or lanes):
  // a bus of one-partition topics lists as it did before partitions existed.
  const bool rings = std::any_of(topics.begin(), topics.end(),
                                 [](const auto& t) { return t.options.rings() > 1; });
  std::vector<std::vector<std::string>> rows{
      {"NAME", "SLOTS", "SLOT_SIZE", "POLICY", "TAIL", "PRODUCERS", "GROUPS"}};
  if (rings) rows[0].emplace_back("RINGS");
  for (const auto& t : topics) {
    rows.push_back({t.name, u64(t.options.slot_count), u64(t.options.slot_size),
                    policy_name(t.options.policy), u64(t.tail), u64(t.producers),
                    u64(t.groups.size())});
    if (rings) rows.back().push_back(rings_of(t.options));
  }
  print_table(rows);
  for (const auto& t : topics)
    if (!t.damage.empty()) note("topic '" + t.name + "' is damaged: " + t.damage);
  return kExitOk;
}

int cmd_describe(const Globals& g, const std::string& name, bool json) {
  Bus bus = connect(g);
  const TopicStatus t = bus.describe(name);
  if (json) {
    JsonWriter w;
    write_topic(w, t);
    std::printf("%s\n", w.str().c_str());
    return kExitOk;
  }
  const TopicOptions& o = t.options;
  std::vector<std::vector<std::string>> kv{
      {"topic:", t.name},
      {"bus:", g.bus},
      {o.priorities != 0 ? "priority lanes:" : "partitions:",
       o.priorities != 0 ? strf("%u (0 lowest, %u highest; a receive takes the highest first)",
                                o.priorities, o.priorities - 1)
                         : u64(o.partitions)},
      {"slots:", u64(o.slot_count) + (o.rings() > 1 ? " per " + lower(ring_word(o)) : "")},
      {"slot size:", u64(o.slot_size) + " bytes"},
      {"policy:", policy_name(o.policy)},
      {"single producer:", o.single_producer ? "yes" : "no"},
      {"limits:", strf("%u producers, %u groups, %u members per group", o.max_producers,
                       o.max_groups, o.max_members)},
      {"tail:",
       u64(t.tail) + (o.rings() > 1 ? " (summed over the " + lower(ring_word(o)) + "s)" : "")},
      {"producers:", u64(t.producers)},
      {"published:", u64(t.published) +
                         (t.abandoned != 0 ? " (" + u64(t.abandoned) + " more given up unpublished)"
                                           : std::string())},
      {"groups:", t.groups.empty() ? std::string("(none)") : u64(t.groups.size())}};
  if (o.delay_slots != 0) {
    kv.insert(kv.begin() + 8, {"delay slots:", u64(o.delay_slots)});
    kv.push_back({"scheduled:", schedule_summary(t)});
  }
  if (o.storage == Storage::File) {
    kv.push_back({"storage:", "file " + t.path + " (and " + t.path + "@control)"});
    kv.push_back({"flush:", o.flush_interval.count() == 0
                                ? std::string("none (the page cache writes it back; survives "
                                              "any process crash, not a power cut)")
                                : flush_name(o.flush_interval) + " (shmbusd writes it to disk)"});
    kv.push_back(
        {"last flush:", t.flushed_ns == 0 ? std::string("never") : format_time(t.flushed_ns)});
    if (t.torn != 0)
      kv.push_back({"torn:", u64(t.torn) + " message(s) torn by a power cut, skipped as lost"});
  } else {
    kv.push_back({"storage:", "memory (gone with a reboot)"});
  }
  print_table(kv);
  if (o.rings() > 1) {
    std::vector<std::vector<std::string>> rows{{ring_word(o), "TAIL", "ABANDONED"}};
    for (std::size_t i = 0; i < t.partitions.size(); ++i)
      rows.push_back({u64(i), u64(t.partitions[i].tail), u64(t.partitions[i].abandoned)});
    std::printf("\n");
    print_table(rows, "  ");
  }
  if (!t.groups.empty()) {
    std::vector<std::vector<std::string>> rows{
        {"GROUP", "MEMBERS", "DURABLE", "POSITION", "LAG", "LOST", "MODE"}};
    for (const auto& gs : t.groups)
      rows.push_back({group_label(gs), u64(gs.members), gs.durable ? "yes" : "no", u64(gs.position),
                      u64(gs.lag), lost_cell(gs), std::string(to_string(gs.mode))});
    if (o.rings() > 1) std::printf("\n");
    print_table(rows, "  ");
    if (o.rings() > 1)
      for (const auto& gs : t.groups) {
        std::printf("\ngroup %s (%s) by %s:\n", group_label(gs).c_str(),
                    std::string(to_string(gs.mode)).c_str(), lower(ring_word(o)).c_str());
        print_table(group_partition_rows(gs, o), "  ");
      }
    for (const auto& gs : t.groups)
      if (gs.overrun != 0)
        std::printf(
            "group %s is overrun: it is %s messages behind the oldest the ring keeps, "
            "and loses them when it next reads\n",
            group_label(gs).c_str(), u64(gs.overrun).c_str());
  }
  return kExitOk;
}

}  // namespace

void add_topic_commands(CommandTree& tree) {
  const Globals& g = tree.globals();
  CLI::App* topic = tree.group(&tree.app(), "topic", "create, delete, list and describe topics");

  auto ca = std::make_shared<CreateArgs>();
  CLI::App* create = tree.leaf(topic, "create", "create a topic (prints what it created)",
                               [&g, ca] { return cmd_create(g, *ca); });
  create->add_option("NAME", ca->name, "topic name: 1-63 of A-Z a-z 0-9 . _ -")->required();
  create
      ->add_option("--slots", ca->slots,
                   "ring slots, a power of two (default: the daemon's, 1024 unless configured)")
      ->check(number_above(0, false));
  create
      ->add_option("--slot-size", ca->slot_size,
                   "bytes per message at most (default: the daemon's, 1024 unless configured)")
      ->check(number_above(0, false));
  std::vector<std::string> policies;
  for (const Policy p : {Policy::Block, Policy::Reject, Policy::Overwrite})
    policies.push_back(policy_name(p));
  create
      ->add_option("--policy", ca->policy,
                   "when the ring is full: block (publish waits), reject (publish fails at "
                   "once), overwrite (slow readers skip) (default: block)")
      ->transform(CLI::IsMember(policies, CLI::ignore_case));
  create->add_flag("--single-producer", ca->single_producer,
                   "at most one publisher at a time (a faster claim)");
  create
      ->add_option("--max-producers", ca->max_producers,
                   "publisher seats (default: the daemon's, 16)")
      ->check(number_above(0, false));
  create->add_option("--max-groups", ca->max_groups, "consumer groups (default: the daemon's, 16)")
      ->check(number_above(0, false));
  create
      ->add_option("--max-members", ca->max_members,
                   "members per consumer group (default: the daemon's, 8)")
      ->check(number_above(0, false));
  CLI::Option* partitions =
      create
          ->add_option("--partitions", ca->partitions,
                       "rings with their own offsets, 1-1024; a keyed message goes to Kafka's "
                       "partition of its key (default: 1)")
          ->check(number_above(1, true));
  create
      ->add_option("--delay-slots", ca->delay_slots,
                   "entries of the topic's schedule of delayed messages (pub --delay, --at), up "
                   "to 1048576; 0 (the default): delayed messages are refused")
      ->check(number_above(0, true));
  create
      ->add_option("--priorities", ca->priorities,
                   "priority lanes 0 (lowest) to N-1, N from 2 to 32: a receive takes the "
                   "highest lane's oldest message first (default: none)")
      ->check(number_above(2, true))
      ->excludes(partitions);
  create
      ->add_option("--storage", ca->storage,
                   "memory (default: shared memory, gone with a reboot) or file (two files in "
                   "the daemon's --data-dir: messages, group positions and unacknowledged "
                   "messages survive a restart and a reboot)")
      ->transform(CLI::IsMember({"memory", "file"}, CLI::ignore_case));
  create->add_option("--flush", ca->flush,
                     "file topics: none (default: the page cache writes back; survives any "
                     "process crash, not a power cut) or interval:N (shmbusd writes to disk "
                     "every N ms, e.g. interval:100ms, interval:2s)");
  create->add_flag("--if-not-exists", ca->if_not_exists,
                   "succeed (and describe it) when the topic exists already");

  auto delete_name = std::make_shared<std::string>();
  auto if_unused = std::make_shared<bool>(false);
  CLI::App* del =
      tree.leaf(topic, "delete",
                "delete a topic; processes that have it open are told (pub and sub "
                "exit 7)",
                [&g, delete_name, if_unused] { return cmd_delete(g, *delete_name, *if_unused); });
  del->add_option("NAME", *delete_name, "topic name")->required();
  del->add_flag("--if-unused", *if_unused,
                "refuse (exit 8) while publishers or subscribers are attached; without it "
                "they are told the topic is gone");

  auto list_json = std::make_shared<bool>(false);
  CLI::App* list = tree.leaf(topic, "list",
                             "list the topics: name, slots, slot size, policy, tail, "
                             "producers, groups",
                             [&g, list_json] { return cmd_list(g, *list_json); });
  list->add_flag("--json", *list_json, "print a JSON array");

  struct DescribeArgs {
    std::string name;
    bool json = false;
  };
  auto da = std::make_shared<DescribeArgs>();
  CLI::App* describe =
      tree.leaf(topic, "describe", "describe a topic and its consumer groups (position, lag, lost)",
                [&g, da] { return cmd_describe(g, da->name, da->json); });
  describe->add_option("NAME", da->name, "topic name")->required();
  describe->add_flag("--json", da->json, "print a JSON object");
}

}  // namespace shmbus::cli
