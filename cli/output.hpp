// How the CLI prints: aligned tables, rates, a small JSON writer for every
// --json output, and the stdout checks that let a command stop when its reader
// has left.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "shmbus/topic_status.hpp"

namespace shmbus::cli {

// ---- text -----------------------------------------------------------------------

[[nodiscard]] inline std::string u64(std::uint64_t v) {
  return std::to_string(v);
}

// Prints rows as left-aligned columns separated by two spaces.
void print_table(const std::vector<std::vector<std::string>>& rows, const std::string& indent = "");

// "512 B/s", "1.5 KiB/s", ... (binary units).
[[nodiscard]] std::string human_rate(double bytes_per_sec);

// A group's name, or "(private)".
[[nodiscard]] std::string group_label(const GroupStatus& g);

// ---- JSON ------------------------------------------------------------------------

// Writes one JSON value compactly (no spaces), putting the commas itself. Keys
// and values are chained: w.begin_object().key("tail").uint(5).end_object().
// Numbers from doubles print with three decimals, non-finite ones as null.
class JsonWriter {
 public:
  JsonWriter& begin_object() { return open('{'); }
  JsonWriter& end_object() { return close('}'); }
  JsonWriter& begin_array() { return open('['); }
  JsonWriter& end_array() { return close(']'); }
  JsonWriter& key(std::string_view k);

  JsonWriter& string(std::string_view s);
  JsonWriter& uint(std::uint64_t v);
  JsonWriter& number(double v);
  JsonWriter& boolean(bool b);
  JsonWriter& null();

  // The text written so far (complete once every container is closed).
  [[nodiscard]] const std::string& str() const { return out_; }

 private:
  JsonWriter& open(char bracket);
  JsonWriter& close(char bracket);
  void before_value();
  void append_escaped(std::string_view s);

  std::string out_;
  std::vector<bool> empty_;  // per open container: nothing in it yet
  bool after_key_ = false;
};

// A group's fields (name, private, members, durable, position, lag, lost,
// overrun, mode, and per_partition: position, lag, owner_pid) into an object
// the caller has opened.
void write_group_fields(JsonWriter& w, const GroupStatus& g);
// A topic's partition count, priority lanes and each partition's (or lane's)
// tail and abandoned count, into an object the caller has opened.
void write_topic_partitions(JsonWriter& w, const TopicStatus& t);
// The schedule of delayed messages: delay_slots, scheduled, overdue,
// next_due_ns (null: none), next_due (RFC 3339), moved, refused.
void write_schedule(JsonWriter& w, const TopicStatus& t);
// "3 (1 overdue), next due 2026-12-24T18:00:00.000Z; 12 moved".
[[nodiscard]] std::string schedule_summary(const TopicStatus& t);
// "LANE" on a priority topic, else "PARTITION": the heading of ring columns.
[[nodiscard]] std::string ring_word(const TopicOptions& o);
// A table of a group's place in each partition: position, lag and, for a
// partitioned group, the owning member's pid ("-": none now).
[[nodiscard]] std::vector<std::vector<std::string>> group_partition_rows(const GroupStatus& g,
                                                                         const TopicOptions& o);
// The LOST cell of a group row: "12", or "12 +976 overrun" while the group's
// position is older than the oldest message the ring retains.
std::string lost_cell(const GroupStatus& g);
// A group's delivery mode, with what it promises.
std::string delivery_cell(const GroupStatus& g);

// ---- stdout ----------------------------------------------------------------------

// Flushes stdout. True when it went away (EPIPE: the reader of a pipe left);
// fails (exit 1) on any other write error.
[[nodiscard]] bool stdout_closed();

// True when stdout is a pipe or socket whose reader has left (or a terminal
// that hung up), seen without writing: lets an idle `sub | head -n 3` end.
[[nodiscard]] bool stdout_reader_gone();

}  // namespace shmbus::cli
