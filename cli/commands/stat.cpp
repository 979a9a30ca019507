// shmbus stat: per topic messages/s and bytes/s, per group position, lag and
// messages/s, from two status snapshots of the daemon an interval apart; and
// the counters programs beside the bus report (Bus::report), as they are in
// the second snapshot.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../output.hpp"
#include "commands.hpp"
#include "shmbus/error.hpp"
#include "shmbus/options.hpp"
#include "shmbus/report.hpp"
#include "shmbus/topic_status.hpp"

namespace shmbus::cli {
namespace {

constexpr const char* kBytesNote =
    "BYTES/S: payload bytes the producers published in the interval, from their own\n"
    "counters; bytes of producers that exit within an interval are not counted.";

struct StatArgs {
  bool json = false;
  double interval = 1.0;
  bool once = false;
};

struct Snapshot {
  Clock::time_point at;
  std::map<std::string, TopicStatus> topics;
  std::vector<ComponentReport> components;  // by name, then pid (as the daemon sends them)
};

// The daemon's component reports. A daemon older than component reports
// refuses the request as an unknown type (InvalidArgument): then none, and
// the user is told once.
std::vector<ComponentReport> component_reports(Bus& bus) {
  try {
    return bus.reports();
  } catch (const Error& e) {
    if (e.code() != ErrorCode::InvalidArgument) throw;
    static bool told = false;
    if (!told)
      note(std::string("component reports not shown: ") + e.what() +
           " (a shmbusd older than this shmbus; restart it to see them)");
    told = true;
    return {};
  }
}

Snapshot take_snapshot(Bus& bus) {
  Snapshot s;
  for (auto& t : bus.topics())
    s.topics.emplace(t.name, std::move(t));
  s.components = component_reports(bus);
  s.at = Clock::now();
  return s;
}

// "forwarded=12 acked=10", in the order reported ("-": none).
std::string counters_cell(const ComponentReport& c) {
  std::string out;
  for (const ReportCounter& k : c.counters)
    out += (out.empty() ? "" : " ") + k.name + "=" + u64(k.value);
  return out.empty() ? "-" : out;
}

// Payload bytes published between two snapshots of one topic, from the
// producers' counters: a producer in both (same seat, same session) counts its
// growth, one that attached in between counts all it published. A producer
// that left in between is in neither sum: its last bytes are not counted.
std::uint64_t bytes_published(const TopicStatus& before, const TopicStatus& after) {
  std::uint64_t total = 0;
  for (const ProducerStatus& p : after.producer_seats) {
    const auto was = std::find_if(
        before.producer_seats.begin(), before.producer_seats.end(),
        [&p](const ProducerStatus& q) { return q.seat == p.seat && q.session == p.session; });
    if (was == before.producer_seats.end())
      total += p.published_bytes;
    else if (p.published_bytes >= was->published_bytes)
      total += p.published_bytes - was->published_bytes;
  }
  return total;
}

std::string group_key(const GroupStatus& g, std::size_t private_index) {
  return g.name.empty() ? "\x01private#" + std::to_string(private_index) : g.name;
}

std::map<std::string, std::uint64_t> group_positions(const TopicStatus& t) {
  std::map<std::string, std::uint64_t> out;
  std::size_t k = 0;
  for (const auto& g : t.groups)
    out[group_key(g, g.name.empty() ? k++ : 0)] = g.position;
  return out;
}

std::string wall_clock() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  if (::localtime_r(&now, &tm) == nullptr) return "?";
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

// A rate as a table cell ("-" when unknown) and as a JSON number (null).
std::string rate_cell(double r) {
  return r < 0 ? "-" : strf("%.1f", r);
}
void write_rate(JsonWriter& w, double r) {
  if (r < 0)
    w.null();
  else
    w.number(r);
}

void render_stat(const Globals& g, const Snapshot& prev, const Snapshot& cur, bool json,
                 bool clear) {
  const double dt = std::chrono::duration<double>(cur.at - prev.at).count();
  std::vector<std::vector<std::string>> trows{
      {"TOPIC", "MSGS/S", "BYTES/S", "TAIL", "PRODUCERS", "GROUPS"}};
  std::vector<std::vector<std::string>> grows{
      {"TOPIC", "GROUP", "MEMBERS", "POSITION", "LAG", "LOST", "MSGS/S", "MODE"}};
  // Topics of several partitions (or lanes): each one's tail, and each
  // group's place in it.
  std::vector<std::vector<std::string>> prows{{"TOPIC", "PARTITION", "TAIL", "MSGS/S"}};
  std::vector<std::vector<std::string>> gprows{
      {"TOPIC", "GROUP", "PARTITION", "POSITION", "LAG", "OWNER_PID"}};
  // Topics with a schedule: their delayed messages.
  std::vector<std::vector<std::string>> drows{
      {"TOPIC", "SCHEDULED", "OVERDUE", "NEXT_DUE", "MOVED"}};
  JsonWriter w;
  w.begin_object();
  w.key("time").number(
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
  w.key("bus").string(g.bus);
  w.key("interval_s").number(dt);
  w.key("topics").begin_array();
  for (const auto& [name, t] : cur.topics) {
    const auto p = prev.topics.find(name);
    // A topic new in this interval (or re-created: its tail went back) has no rates yet.
    const bool comparable = p != prev.topics.end() && p->second.tail <= t.tail && dt > 0;
    const double rate = comparable ? static_cast<double>(t.tail - p->second.tail) / dt : -1;
    const double byte_rate =
        comparable ? static_cast<double>(bytes_published(p->second, t)) / dt : -1;
    trows.push_back({name, rate_cell(rate), byte_rate < 0 ? "-" : human_rate(byte_rate),
                     u64(t.tail), u64(t.producers), u64(t.groups.size())});
    w.begin_object();
    w.key("name").string(name);
    w.key("slots").uint(t.options.slot_count);
    w.key("slot_size").uint(t.options.slot_size);
    w.key("policy").string(to_string(t.options.policy));
    w.key("tail").uint(t.tail);
    w.key("producers").uint(t.producers);
    w.key("msgs_per_sec");
    write_rate(w, rate);
    w.key("bytes_per_sec");
    write_rate(w, byte_rate);
    // Kept for scripts that read it; bytes now always come from these counters.
    w.key("bytes_source").string("producer_counters");
    w.key("partitions").uint(t.options.partitions);
    w.key("priorities").uint(t.options.priorities);
    write_schedule(w, t);
    if (t.options.delay_slots != 0)
      drows.push_back({name, u64(t.scheduled), u64(t.overdue),
                       t.next_due_ns == 0 ? "-" : format_time(t.next_due_ns), u64(t.moved)});
    const bool rings_comparable = comparable && p->second.partitions.size() == t.partitions.size();
    w.key("per_partition").begin_array();
    for (std::size_t i = 0; i < t.partitions.size(); ++i) {
      const std::uint64_t tail = t.partitions[i].tail;
      const std::uint64_t was = rings_comparable ? p->second.partitions[i].tail : tail + 1;
      const double prate = was <= tail ? static_cast<double>(tail - was) / dt : -1;
      w.begin_object();
      w.key("partition").uint(i);
      w.key("tail").uint(tail);
      w.key("msgs_per_sec");
      write_rate(w, prate);
      w.end_object();
      if (t.options.rings() > 1)
        prows.push_back({name, (t.options.priorities != 0 ? "lane " : "") + u64(i), u64(tail),
                         rate_cell(prate)});
    }
    w.end_array();
    w.key("groups").begin_array();
    const auto before =
        comparable ? group_positions(p->second) : std::map<std::string, std::uint64_t>{};
    std::size_t k = 0;
    for (const auto& gs : t.groups) {
      const std::string key = group_key(gs, gs.name.empty() ? k++ : 0);
      const auto b = before.find(key);
      const double grate = b != before.end() && b->second <= gs.position
                               ? static_cast<double>(gs.position - b->second) / dt
                               : -1;
      grows.push_back({name, group_label(gs), u64(gs.members), u64(gs.position), u64(gs.lag),
                       lost_cell(gs), rate_cell(grate), std::string(to_string(gs.mode))});
      if (t.options.rings() > 1)
        for (std::size_t i = 0; i < gs.partitions.size(); ++i) {
          const GroupPartitionStatus& gp = gs.partitions[i];
          gprows.push_back({name, group_label(gs),
                            (t.options.priorities != 0 ? "lane " : "") + u64(i), u64(gp.position),
                            u64(gp.lag),
                            gs.mode != GroupMode::Partitioned ? std::string("(shared)")
                            : gp.owner_pid == 0               ? std::string("-")
                                                              : u64(gp.owner_pid)});
        }
      w.begin_object();
      write_group_fields(w, gs);
      w.key("msgs_per_sec");
      write_rate(w, grate);
      w.end_object();
    }
    w.end_array();
    w.end_object();
  }
  w.end_array();
  // Always present ([] when none), so scripts need not test for it.
  std::vector<std::vector<std::string>> crows{{"COMPONENT", "KIND", "PID", "COUNTERS"}};
  w.key("components").begin_array();
  for (const ComponentReport& c : cur.components) {
    crows.push_back({c.name, c.kind, u64(c.pid), counters_cell(c)});
    w.begin_object();
    w.key("name").string(c.name);
    w.key("kind").string(c.kind);
    w.key("pid").uint(c.pid);
    w.key("uid").uint(c.uid);
    w.key("updated_ns").uint(c.updated_ns);
    // Counter names are unique within a report (validate_report), so an object.
    w.key("counters").begin_object();
    for (const ReportCounter& k : c.counters)
      w.key(k.name).uint(k.value);
    w.end_object();
    w.end_object();
  }
  w.end_array();
  w.end_object();
  if (json) {
    std::printf("%s\n", w.str().c_str());
    return;
  }
  if (clear) std::printf("\033[H\033[2J");
  std::printf("bus '%s'  %s  over %.2f s  (%zu topic%s)\n\n", g.bus.c_str(), wall_clock().c_str(),
              dt, cur.topics.size(), cur.topics.size() == 1 ? "" : "s");
  print_table(trows);
  if (grows.size() > 1) {
    std::printf("\n");
    print_table(grows);
  }
  if (prows.size() > 1) {
    std::printf("\n");
    print_table(prows);
  }
  if (gprows.size() > 1) {
    std::printf("\n");
    print_table(gprows);
  }
  if (drows.size() > 1) {
    std::printf("\n");
    print_table(drows);
  }
  if (crows.size() > 1) {
    std::printf("\n");
    print_table(crows);
  }
  std::printf("\nMSGS/S: change of the tail (claimed sequences) per second.\n");
  std::printf("%s\n", kBytesNote);
}

int cmd_stat(const Globals& g, const StatArgs& a) {
  Bus bus = connect(g);
  install_stop_handlers();
  const bool clear = !a.json && !a.once && ::isatty(STDOUT_FILENO) == 1;
  // A person at a terminal is told how to stop: once, or under every refresh
  // when each one clears the screen.
  const bool tell_quit = !a.once && ::isatty(STDERR_FILENO) == 1;
  if (tell_quit && !clear) note("Ctrl-C to quit");
  const auto interval =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(a.interval));
  Snapshot prev = take_snapshot(bus);
  auto next = prev.at + interval;
  bool first = true;
  for (;;) {
    if (!sleep_until(next)) return signal_exit();
    Snapshot cur = take_snapshot(bus);
    if (!first && !a.json && !clear) std::printf("\n");
    render_stat(g, prev, cur, a.json, clear);
    if (tell_quit && clear) note("Ctrl-C to quit");
    if (stdout_closed()) return kExitOk;
    if (a.once) return kExitOk;
    first = false;
    prev = std::move(cur);
    next += interval;
    if (next < Clock::now()) next = Clock::now() + interval;  // fell behind (e.g. suspended)
  }
}

}  // namespace

void add_stat_command(CommandTree& tree) {
  const Globals& g = tree.globals();
  auto st = std::make_shared<StatArgs>();
  CLI::App* stat = tree.leaf(&tree.app(), "stat",
                             "per topic: messages/s, bytes/s, and per group: lag; for topics of "
                             "several partitions also each partition's tail and each group's "
                             "position, lag and owner there; the counters programs beside the "
                             "bus report (shmbus-bridge, say: COMPONENT KIND PID COUNTERS, "
                             "values as of the second snapshot); refreshed every interval until "
                             "Ctrl-C",
                             [&g, st] { return cmd_stat(g, *st); });
  // The note, then the exit codes every command's help ends with.
  stat->footer(std::string(kBytesNote) + "\n\n" + tree.app().get_footer());
  stat->add_flag("--json", st->json, "print one JSON object per refresh");
  stat->add_option("--interval", st->interval, "seconds between refreshes (default: 1)")
      ->check(number_above(0, false));
  stat->add_flag("--once", st->once, "print one snapshot, taken over one interval, and exit");
}

}  // namespace shmbus::cli
