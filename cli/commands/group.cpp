// shmbus group list | describe | delete | reset: consumer groups, as Kafka's
// kafka-consumer-groups. A named group keeps its position when its members
// leave, until it is deleted; a private group goes with its last member.
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

struct GroupArgs {
  std::string topic, group, to;
  bool json = false;
};

std::string held_cell(const MemberStatus& m) {
  return m.holds_nothing() ? std::string("-") : u64(m.held);
}

void write_members(JsonWriter& w, const GroupStatus& g) {
  w.key("member_seats").begin_array();
  for (const MemberStatus& m : g.member_seats) {
    w.begin_object();
    w.key("seat").uint(m.seat);
    w.key("pid").uint(m.pid);
    w.key("held");
    if (m.holds_nothing())
      w.null();
    else
      w.uint(m.held);
    w.key("received").uint(m.received);
    w.end_object();
  }
  w.end_array();
}

int cmd_list(const Globals& g, const std::string& topic, bool json) {
  Bus bus = connect(g);
  std::vector<TopicStatus> topics;
  if (topic.empty())
    topics = bus.topics();
  else
    topics.push_back(bus.describe(topic));
  std::sort(topics.begin(), topics.end(),
            [](const auto& x, const auto& y) { return x.name < y.name; });
  if (json) {
    JsonWriter w;
    w.begin_array();
    for (const auto& t : topics)
      for (const auto& gs : t.groups) {
        w.begin_object();
        w.key("topic").string(t.name);
        write_group_fields(w, gs);
        w.end_object();
      }
    w.end_array();
    std::printf("%s\n", w.str().c_str());
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows{
      {"TOPIC", "GROUP", "MEMBERS", "DURABLE", "POSITION", "LAG", "LOST", "MODE"}};
  for (const auto& t : topics)
    for (const auto& gs : t.groups)
      rows.push_back({t.name, group_label(gs), u64(gs.members), gs.durable ? "yes" : "no",
                      u64(gs.position), u64(gs.lag), lost_cell(gs),
                      std::string(to_string(gs.mode))});
  print_table(rows);
  return kExitOk;
}

int cmd_describe(const Globals& g, const GroupArgs& a) {
  Bus bus = connect(g);
  const GroupStatus gs = bus.describe_group(a.topic, a.group);
  if (a.json) {
    JsonWriter w;
    w.begin_object();
    w.key("topic").string(a.topic);
    write_group_fields(w, gs);
    write_members(w, gs);
    w.end_object();
    std::printf("%s\n", w.str().c_str());
    return kExitOk;
  }
  print_table({{"topic:", a.topic},
               {"group:", gs.name},
               {"mode:", std::string(to_string(gs.mode)) +
                             (gs.mode == GroupMode::Partitioned
                                  ? " (each partition owned by one member at a time)"
                                  : " (members take the next message of any partition)")},
               {"members:", u64(gs.members)},
               {"durable:", gs.durable ? "yes" : "no"},
               {"position:", u64(gs.position)},
               {"lag:", u64(gs.lag)},
               {"lost:", lost_cell(gs)},
               {"filtered:", u64(gs.filtered) + " (taken and not returned: not the members' "
                                                "tag filter)"},
               {"delivery:", delivery_cell(gs)}});
  if (gs.delivery == Delivery::AtLeastOnce)
    print_table({{"max deliveries:", u64(gs.max_deliveries)},
                 {"redelivered:", u64(gs.redelivered)},
                 {"dead-lettered:", u64(gs.dead_lettered) + " (to " + a.topic + ".dlq)"},
                 {"unacked orphans:", u64(gs.unacked_orphans) + " (left by " + u64(gs.orphans) +
                                          " dead member(s), waiting for a live one)"}});
  if (!gs.member_seats.empty()) {
    std::vector<std::vector<std::string>> rows{{"SEAT", "PID", "HELD", "RECEIVED"}};
    for (const MemberStatus& m : gs.member_seats)
      rows.push_back({u64(m.seat), u64(m.pid), held_cell(m), u64(m.received)});
    print_table(rows, "  ");
  }
  if (gs.partitions.size() > 1) {
    const TopicOptions o = bus.describe(a.topic).options;
    std::printf("\n");
    print_table(group_partition_rows(gs, o), "  ");
  }
  return kExitOk;
}

int cmd_delete(const Globals& g, const GroupArgs& a) {
  Bus bus = connect(g);
  bus.delete_group(a.topic, a.group);
  std::printf("deleted group '%s' of topic '%s'\n", a.group.c_str(), a.topic.c_str());
  return kExitOk;
}

int cmd_reset(const Globals& g, const GroupArgs& a) {
  const auto to = parse_start(a.to);
  if (!to) fail(kExitUsage, "--to '" + a.to + "' is not " + std::string(kStartNames));
  Bus bus = connect(g);
  bus.reset_group(a.topic, a.group, *to);
  std::printf("group '%s' of topic '%s' is at %s\n", a.group.c_str(), a.topic.c_str(),
              u64(bus.describe_group(a.topic, a.group).position).c_str());
  return kExitOk;
}

}  // namespace

void add_group_commands(CommandTree& tree) {
  const Globals& g = tree.globals();
  CLI::App* group = tree.group(&tree.app(), "group",
                               "list, describe, delete and reset consumer groups (as Kafka's "
                               "kafka-consumer-groups)");

  auto la = std::make_shared<GroupArgs>();
  CLI::App* list = tree.leaf(group, "list",
                             "the groups of every topic, or of TOPIC: members, position, lag, "
                             "lost",
                             [&g, la] { return cmd_list(g, la->topic, la->json); });
  list->add_option("TOPIC", la->topic, "only this topic's groups");
  list->add_flag("--json", la->json, "print a JSON array");

  auto da = std::make_shared<GroupArgs>();
  CLI::App* describe = tree.leaf(group, "describe",
                                 "a named group: mode, position, lag, lost, each member's pid, "
                                 "oldest held sample and count, and per partition: position, "
                                 "lag and owner pid",
                                 [&g, da] { return cmd_describe(g, *da); });
  describe->add_option("TOPIC", da->topic, "topic name")->required();
  describe->add_option("GROUP", da->group, "group name")->required();
  describe->add_flag("--json", da->json, "print a JSON object");

  auto xa = std::make_shared<GroupArgs>();
  CLI::App* del = tree.leaf(group, "delete",
                            "delete a named group (refused, exit 8, while it has live members)",
                            [&g, xa] { return cmd_delete(g, *xa); });
  del->add_option("TOPIC", xa->topic, "topic name")->required();
  del->add_option("GROUP", xa->group, "group name")->required();

  auto ra = std::make_shared<GroupArgs>();
  CLI::App* reset = tree.leaf(group, "reset",
                              "set a named group's position (refused, exit 8, while it has "
                              "live members)",
                              [&g, ra] { return cmd_reset(g, *ra); });
  reset->add_option("TOPIC", ra->topic, "topic name")->required();
  reset->add_option("GROUP", ra->group, "group name")->required();
  reset
      ->add_option("--to", ra->to,
                   "earliest (the oldest the ring holds), latest (the tail), or an offset at "
                   "most the tail")
      ->required()
      ->check(start_validator());
}

}  // namespace shmbus::cli
