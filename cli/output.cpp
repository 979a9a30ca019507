#include "output.hpp"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iterator>

#include "common.hpp"

namespace shmbus::cli {

// ---- text -----------------------------------------------------------------------

void print_table(const std::vector<std::vector<std::string>>& rows, const std::string& indent) {
  std::vector<std::size_t> width;
  for (const auto& r : rows)
    for (std::size_t i = 0; i < r.size(); ++i) {
      if (width.size() <= i) width.resize(i + 1, 0);
      width[i] = std::max(width[i], r[i].size());
    }
  for (const auto& r : rows) {
    std::string line = indent;
    for (std::size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
    }
    std::printf("%s\n", line.c_str());
  }
}

std::string human_rate(double bytes_per_sec) {
  const char* units[] = {"B/s", "KiB/s", "MiB/s", "GiB/s", "TiB/s"};
  std::size_t u = 0;
  while (bytes_per_sec >= 1024.0 && u + 1 < std::size(units)) {
    bytes_per_sec /= 1024.0;
    ++u;
  }
  return u == 0 ? strf("%.0f %s", bytes_per_sec, units[u])
                : strf("%.1f %s", bytes_per_sec, units[u]);
}

std::string group_label(const GroupStatus& g) {
  return g.name.empty() ? "(private)" : g.name;
}

// ---- JSON ------------------------------------------------------------------------

void JsonWriter::before_value() {
  if (after_key_) {
    after_key_ = false;  // the value of a key: its comma went before the key
    return;
  }
  if (!empty_.empty()) {
    if (!empty_.back()) out_ += ',';
    empty_.back() = false;
  }
}

JsonWriter& JsonWriter::open(char bracket) {
  before_value();
  out_ += bracket;
  empty_.push_back(true);
  return *this;
}

JsonWriter& JsonWriter::close(char bracket) {
  out_ += bracket;
  empty_.pop_back();
  return *this;
}

JsonWriter& JsonWriter::key(std::string_view k) {
  before_value();
  append_escaped(k);
  out_ += ':';
  after_key_ = true;
  return *this;
}

JsonWriter& JsonWriter::string(std::string_view s) {
  before_value();
  append_escaped(s);
  return *this;
}

JsonWriter& JsonWriter::uint(std::uint64_t v) {
  before_value();
  out_ += std::to_string(v);
  return *this;
}

JsonWriter& JsonWriter::number(double v) {
  if (!std::isfinite(v) || std::fabs(v) > 1e300) return null();
  before_value();
  out_ += strf("%.3f", v);
  return *this;
}

JsonWriter& JsonWriter::boolean(bool b) {
  before_value();
  out_ += b ? "true" : "false";
  return *this;
}

JsonWriter& JsonWriter::null() {
  before_value();
  out_ += "null";
  return *this;
}

void JsonWriter::append_escaped(std::string_view s) {
  out_ += '"';
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out_ += "\\\"";
        break;
      case '\\':
        out_ += "\\\\";
        break;
      case '\n':
        out_ += "\\n";
        break;
      case '\r':
        out_ += "\\r";
        break;
      case '\t':
        out_ += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7f)
          out_ += strf("\\u%04x", c);
        else
          out_ += ch;
    }
  }
  out_ += '"';
}

void write_group_fields(JsonWriter& w, const GroupStatus& g) {
  w.key("name");
  if (g.name.empty())
    w.null();
  else
    w.string(g.name);
  w.key("private").boolean(g.name.empty());
  w.key("members").uint(g.members);
  w.key("durable").boolean(g.durable);
  w.key("position").uint(g.position);
  w.key("lag").uint(g.lag);
  w.key("lost").uint(g.lost);
  w.key("overrun").uint(g.overrun);
  w.key("filtered").uint(g.filtered);
  w.key("mode").string(to_string(g.mode));
  w.key("delivery").string(to_string(g.delivery));
  if (g.delivery == Delivery::AtLeastOnce) {
    w.key("max_deliveries").uint(g.max_deliveries);
    w.key("redelivered").uint(g.redelivered);
    w.key("dead_lettered").uint(g.dead_lettered);
    w.key("unacked_orphans").uint(g.unacked_orphans);
    w.key("orphans").uint(g.orphans);
  }
  w.key("per_partition").begin_array();
  for (std::size_t i = 0; i < g.partitions.size(); ++i) {
    const GroupPartitionStatus& p = g.partitions[i];
    w.begin_object();
    w.key("partition").uint(i);
    w.key("position").uint(p.position);
    w.key("lag").uint(p.lag);
    if (g.mode == GroupMode::Partitioned) {
      w.key("owner_pid");
      if (p.owner_pid == 0)
        w.null();
      else
        w.uint(p.owner_pid);
    }
    w.end_object();
  }
  w.end_array();
}
void write_topic_partitions(JsonWriter& w, const TopicStatus& t) {
  w.key("partitions").uint(t.options.partitions);
  w.key("priorities").uint(t.options.priorities);
  w.key("per_partition").begin_array();
  for (std::size_t i = 0; i < t.partitions.size(); ++i) {
    w.begin_object();
    w.key("partition").uint(i);
    w.key("tail").uint(t.partitions[i].tail);
    w.key("abandoned").uint(t.partitions[i].abandoned);
    w.end_object();
  }
  w.end_array();
}
void write_schedule(JsonWriter& w, const TopicStatus& t) {
  w.key("delay_slots").uint(t.options.delay_slots);
  w.key("scheduled").uint(t.scheduled);
  w.key("overdue").uint(t.overdue);
  w.key("next_due_ns");
  if (t.next_due_ns == 0)
    w.null();
  else
    w.uint(t.next_due_ns);
  w.key("next_due");
  if (t.next_due_ns == 0)
    w.null();
  else
    w.string(format_time(t.next_due_ns));
  w.key("moved").uint(t.moved);
  w.key("refused").uint(t.refused);
}
std::string schedule_summary(const TopicStatus& t) {
  std::string s = u64(t.scheduled);
  if (t.overdue != 0) s += " (" + u64(t.overdue) + " overdue)";
  if (t.next_due_ns != 0) s += ", next due " + format_time(t.next_due_ns);
  s += "; " + u64(t.moved) + " moved";
  if (t.refused != 0) s += ", " + u64(t.refused) + " refused as invalid";
  return s;
}
std::string ring_word(const TopicOptions& o) {
  return o.priorities != 0 ? "LANE" : "PARTITION";
}
std::vector<std::vector<std::string>> group_partition_rows(const GroupStatus& g,
                                                           const TopicOptions& o) {
  const bool owners = g.mode == GroupMode::Partitioned;
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> head{ring_word(o), "POSITION", "LAG"};
  if (owners) head.emplace_back("OWNER_PID");
  rows.push_back(std::move(head));
  for (std::size_t i = 0; i < g.partitions.size(); ++i) {
    const GroupPartitionStatus& p = g.partitions[i];
    std::vector<std::string> row{u64(i), u64(p.position), u64(p.lag)};
    if (owners) row.push_back(p.owner_pid == 0 ? std::string("-") : u64(p.owner_pid));
    rows.push_back(std::move(row));
  }
  return rows;
}

std::string delivery_cell(const GroupStatus& g) {
  if (g.delivery == Delivery::AtLeastOnce)
    return "at_least_once (a release acknowledges; what a dead member held is delivered again)";
  return "at_most_once (what a dead member held is lost to the group)";
}

std::string lost_cell(const GroupStatus& g) {
  if (g.overrun == 0) return std::to_string(g.lost);
  return std::to_string(g.lost) + " +" + std::to_string(g.overrun) + " overrun";
}

// ---- stdout ----------------------------------------------------------------------

bool stdout_closed() {
  if (std::fflush(stdout) == 0 && !std::ferror(stdout)) return false;
  if (errno == EPIPE) return true;
  fail(kExitError, std::string("cannot write to stdout: ") + std::strerror(errno));
}

bool stdout_reader_gone() {
  pollfd p{STDOUT_FILENO, 0, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & (POLLERR | POLLHUP)) != 0;
}

}  // namespace shmbus::cli
