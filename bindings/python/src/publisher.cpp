// Publisher for Python: publish (one copy), loan (in place), and waiting for
// room under policy 'block'.
#include "py_publisher.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "shmbus/detail/layout.hpp"

#include "wait.hpp"

namespace shmbus::python {

namespace {

std::string seconds_text(std::optional<double> t) {
  if (!t) return "ever";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g s", *t);
  return buf;
}

// headers= of publish and loan: a dict of str names to str values (None or
// {}: none), kept as UTF-8 for the call and checked against the limits.
class HeadersArg {
 public:
  HeadersArg(const py::handle& headers, const char* what) {
    if (headers.is_none()) return;
    if (!py::isinstance<py::dict>(headers))
      raise(PyExc_TypeError, std::string(what) + ": headers must be a dict of str to str, not " +
                                 std::string(py::str(py::type::of(headers).attr("__name__"))));
    for (const auto& [k, v] : headers.cast<py::dict>()) {
      if (!py::isinstance<py::str>(k) || !py::isinstance<py::str>(v))
        raise(PyExc_TypeError, std::string(what) + ": headers must be a dict of str to str; " +
                                   std::string(py::repr(k)) + ": " + std::string(py::repr(v)) +
                                   " is not");
      text_.push_back(k.cast<std::string>());
      text_.push_back(v.cast<std::string>());
    }
    for (std::size_t i = 0; i < text_.size(); i += 2)
      props_.push_back({text_[i], text_[i + 1]});
    std::uint32_t size = 0;
    if (detail::encoded_size(props_, size) != Status::Ok) {
      std::size_t bytes = 0, longest = 0;
      for (const Property& p : props_) {
        bytes += 4 + p.name.size() + p.value.size();
        longest = std::max(longest, p.name.size());
      }
      raise(invalid_argument(),
            std::string(what) + ": headers break a limit: " + std::to_string(props_.size()) +
                " pairs, the longest name " + std::to_string(longest) + " bytes, " +
                std::to_string(bytes) + " bytes encoded; at most " +
                std::to_string(kMaxProperties) + " pairs, names of 1 to " +
                std::to_string(kMaxPropertyName) + " bytes (UTF-8), " +
                std::to_string(kMaxPropertyBytes) + " bytes encoded (4 per pair + name + value)");
    }
  }
  HeadersArg(const HeadersArg&) = delete;
  HeadersArg& operator=(const HeadersArg&) = delete;
  [[nodiscard]] std::span<const Property> properties() const noexcept { return props_; }
  // Bytes they take in the slot (before rounding with the key).
  [[nodiscard]] std::size_t encoded() const noexcept {
    std::size_t n = 0;
    for (const Property& p : props_)
      n += 4 + p.name.size() + p.value.size();
    return n;
  }

 private:
  std::vector<std::string> text_;  // name, value, name, value, ...
  std::vector<Property> props_;
};

// key=, partition=, priority= and headers= of publish and loan: the Route
// they name, with the key viewed in place for the call.
class RouteArgs {
 public:
  RouteArgs(const py::handle& key, const py::handle& partition, const py::handle& priority,
            const py::handle& headers, const char* what)
      : key_(key, what),
        partition_(index_arg(partition, "partition")),
        priority_(index_arg(priority, "priority")),
        headers_(headers, what) {}

  // False: none given, so the plain (unrouted) calls apply.
  [[nodiscard]] bool routed() const noexcept {
    return !key_.bytes().empty() || partition_ || priority_ || !headers_.properties().empty();
  }
  [[nodiscard]] Route route() const noexcept {
    Route r;
    r.key = key_.bytes();
    r.partition = partition_.value_or(Route::kNone);
    r.priority = priority_.value_or(Route::kNone);
    r.properties = headers_.properties();
    return r;
  }
  [[nodiscard]] std::size_t headers_size() const noexcept { return headers_.encoded(); }
  [[nodiscard]] std::size_t key_size() const noexcept { return key_.bytes().size(); }
  [[nodiscard]] const std::optional<std::uint32_t>& partition() const noexcept {
    return partition_;
  }
  [[nodiscard]] const std::optional<std::uint32_t>& priority() const noexcept { return priority_; }

 private:
  KeyArg key_;
  std::optional<std::uint32_t> partition_, priority_;
  HeadersArg headers_;
};

std::string lanes_text(std::uint32_t n, const char* noun) {
  return std::to_string(n) + " " + noun + (n == 1 ? "" : "s") + ", 0 to " + std::to_string(n - 1);
}

// Why a route names no lane of the topic (Status::NoSuchPartition).
std::string no_such_partition(const PyPublisher& pp, const RouteArgs& r) {
  const std::string topic = "topic '" + pp.topic + "'";
  if (pp.priorities != 0) {
    if (r.partition() && *r.partition() != 0)
      return "partition=" + std::to_string(*r.partition()) + ": " + topic +
             " is a priority topic with one partition (0); choose its lane with priority= "
             "(0 to " +
             std::to_string(pp.priorities - 1) + ")";
    return "priority=" + std::to_string(r.priority().value_or(0)) + ": " + topic + " has " +
           lanes_text(pp.priorities, "priority lane") + " (0 the lowest)";
  }
  if (r.priority() && *r.priority() != 0)
    return "priority=" + std::to_string(*r.priority()) + ": " + topic +
           " has no priority lanes; create a topic with priorities=N (2 to 32) to have them";
  const std::string p = "partition=" + std::to_string(r.partition().value_or(0)) + ": " + topic;
  if (pp.partitions == 1) return p + " has one partition (0); create it with partitions=N for more";
  return p + " has " + lanes_text(pp.partitions, "partition");
}

// Why a message (of `size` bytes, with the route's key) does not fit (Status::TooLarge).
std::string too_large(const PyPublisher& pp, std::size_t size, const RouteArgs* r) {
  const std::size_t key = r != nullptr ? r->key_size() : 0;
  if (key > detail::kMaxKey)
    return "key of " + std::to_string(key) + " bytes is longer than the " +
           std::to_string(detail::kMaxKey) + " bytes a key may have";
  const std::size_t headers = r != nullptr ? r->headers_size() : 0;
  std::string m = "message of " + std::to_string(size) + " bytes";
  const std::string span =
      std::to_string(detail::key_span(static_cast<std::uint32_t>(key + headers)));
  if (headers != 0)
    m += " with " + std::to_string(key) + " bytes of key and " + std::to_string(headers) +
         " of headers (" + span + " in the slot: they are padded to a multiple of 8)";
  else if (key != 0)
    m += " with a key of " + std::to_string(key) + " bytes (" + span +
         " in the slot: a key is padded to a multiple of 8)";
  return m + " is larger than topic '" + pp.topic + "''s slot size of " +
         std::to_string(pp.slot_size) + " bytes";
}

// Raises the Python exception for a data-plane status that is not Ok.
[[noreturn]] void raise_publish_status(Status st, const PyPublisher& pp, std::size_t size,
                                       std::optional<double> timeout, const RouteArgs* route,
                                       bool delayed = false) {
  if (delayed) switch (st) {
      case Status::Timeout:
        raise(exceptions().timeout, "topic '" + pp.topic + "''s schedule stayed full for " +
                                        seconds_text(timeout) +
                                        " (policy 'block'): the delayed message was not accepted; "
                                        "create the topic with more delay_slots");
      case Status::WouldBlock:
        raise(exceptions().would_block,
              "topic '" + pp.topic + "''s schedule is full (policy '" +
                  std::string(to_string(pp.policy)) +
                  "'; nothing scheduled is dropped): the delayed message was not accepted");
      case Status::NoSchedule:
        raise(invalid_argument(),
              "topic '" + pp.topic +
                  "' has no schedule for delayed messages (created with delay_slots=0); create "
                  "it with delay_slots=N to publish with delay= or deliver_at=");
      case Status::TooLarge:
        raise(exceptions().too_large,
              too_large(pp, size + 8, route) + " (a delayed message carries its 8-byte due time)");
      default:
        break;
    }
  switch (st) {
    case Status::Timeout:
      raise(exceptions().timeout,
            "topic '" + pp.topic + "' stayed full for " + seconds_text(timeout) +
                " (policy 'block'): no room for the message; consumers are slow or gone");
    case Status::WouldBlock:
      raise(exceptions().would_block, "topic '" + pp.topic + "' is full (policy '" +
                                          std::string(to_string(pp.policy)) +
                                          "'): the message was not accepted");
    case Status::TooLarge:
      raise(exceptions().too_large, too_large(pp, size, route));
    case Status::NoSuchPartition:
      // route is set: an unrouted call never names a lane.
      raise(invalid_argument(), route != nullptr ? no_such_partition(pp, *route)
                                                 : "no such partition in topic '" + pp.topic + "'");
    case Status::TopicDeleted:
      raise(exceptions().topic_deleted,
            "topic '" + pp.topic + "' was deleted: the message was not published");
    case Status::Invalid:
      pp.raise_closed();
    default:
      raise(exceptions().error, std::string("publish failed: ") + to_string(st));
  }
}

// How long publish()/loan() wait: the publisher's timeout, or not at all.
std::optional<double> wait_time(const PyPublisher& pp, bool wait) {
  return wait ? pp.timeout : std::optional<double>(0.0);
}

// delay= and deliver_at= of publish: when a delayed message is due, or none.
std::optional<Publisher::WallClock::time_point> due_arg(const py::handle& delay,
                                                        const py::handle& deliver_at) {
  if (delay.is_none() && deliver_at.is_none()) return std::nullopt;
  if (!delay.is_none() && !deliver_at.is_none())
    raise(invalid_argument(),
          "give delay= (seconds from now) or deliver_at= (seconds since the "
          "epoch, as time.time()), not both");
  const bool rel = !delay.is_none();
  const char* what = rel ? "delay" : "deliver_at";
  const py::handle v = rel ? delay : deliver_at;
  if (!py::isinstance<py::float_>(v) && !py::isinstance<py::int_>(v))
    raise(PyExc_TypeError, std::string(what) + " must be a number of seconds, not " +
                               std::string(py::str(py::type::of(v).attr("__name__"))));
  const double secs = v.cast<double>();
  // Up to ~290 years either way: a time_point in ns holds it.
  if (!std::isfinite(secs) || std::abs(secs) > 9e9)
    raise(invalid_argument(),
          std::string(what) + "=" + std::string(py::str(v)) + " is not a usable number of seconds");
  const auto d = std::chrono::duration_cast<Publisher::WallClock::duration>(
      std::chrono::duration<double>(secs));
  return rel ? Publisher::WallClock::now() + d : Publisher::WallClock::time_point(d);
}

// Publishes a copy of `data` where `r` routes it (when `due`, delayed until
// then); false when it was not accepted and `wait` is false.
bool publish(PyPublisher& pp, py::handle data, bool wait, const RouteArgs& r,
             std::optional<Publisher::WallClock::time_point> due = std::nullopt) {
  const BufferArg buf(data, PyBUF_C_CONTIGUOUS,
                      "publish needs a C-contiguous buffer (bytes, bytearray, memoryview, "
                      "array.array, NumPy array)");
  const auto bytes = buf.bytes();
  const std::optional<double> timeout = wait_time(pp, wait);
  const Deadline deadline(timeout);
  const bool routed = r.routed();
  const Route route = r.route();
  const auto try_once = [&](Publisher& p) {
    if (due) return p.try_publish_at(route, *due, bytes);
    return routed ? p.try_publish(route, bytes) : p.try_publish(bytes);
  };
  Status st = pp.with_open([&](Publisher& p) {
    if (bytes.size() < kReleaseGilBytes) return try_once(p);
    py::gil_scoped_release nogil;
    return try_once(p);
  });
  if (st == Status::WouldBlock && !deadline.zero())
    st = wait_until(deadline, pp, [&](Publisher& p, std::chrono::nanoseconds left) {
      if (due) return p.publish_at(route, *due, bytes, left);
      return routed ? p.publish(route, bytes, left) : p.publish(bytes, left);
    });
  if (st == Status::Ok) return true;
  if (!wait && st == Status::WouldBlock) return false;
  raise_publish_status(st, pp, bytes.size(), timeout, &r, due.has_value());
}

// publish_batch: the messages of a sequence of buffers, or the rows of a 2-D
// C-contiguous buffer (a NumPy array of shape (n, size)), published in runs
// under one lock with the GIL released; waits for room as publish() does.
// How many were published: all, or fewer when the timeout passed (or, under
// 'reject', the topic was full): those after the count were not.
std::size_t publish_batch(PyPublisher& pp, const py::handle& messages, bool wait) {
  std::vector<std::span<const std::byte>> spans;
  std::vector<std::unique_ptr<BufferArg>> held;  // the list's buffers, viewed in place
  const char* needs =
      "publish_batch needs a list (or other sequence) of C-contiguous buffers, or a 2-D "
      "C-contiguous buffer (a NumPy array of shape (n, size)) whose rows are the messages";
  if (PyObject_CheckBuffer(messages.ptr()) != 0) {
    held.push_back(std::make_unique<BufferArg>(messages, PyBUF_C_CONTIGUOUS, needs));
    const BufferArg& b = *held.back();
    if (b.ndim() != 2)
      raise(PyExc_TypeError, std::string(needs) + "; a buffer of " + std::to_string(b.ndim()) +
                                 " dimension(s) is neither (publish() takes one message)");
    const auto all = b.bytes();
    const std::size_t n = b.rows();
    const std::size_t row = n == 0 ? 0 : all.size() / n;
    for (std::size_t i = 0; i < n; ++i)
      spans.push_back(all.subspan(i * row, row));
  } else {
    if (!py::isinstance<py::sequence>(messages) || py::isinstance<py::str>(messages))
      raise(PyExc_TypeError, needs);
    const auto seq = py::reinterpret_borrow<py::sequence>(messages);
    const std::size_t n = seq.size();
    spans.reserve(n);
    held.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      held.push_back(std::make_unique<BufferArg>(seq[i], PyBUF_C_CONTIGUOUS, needs));
      spans.push_back(held.back()->bytes());
    }
  }
  for (std::size_t i = 0; i < spans.size(); ++i)
    if (spans[i].size() > pp.slot_size)
      raise(exceptions().too_large, "message " + std::to_string(i) + " of the batch: " +
                                        too_large(pp, spans[i].size(), nullptr) +
                                        "; nothing of the batch was published");
  const std::optional<double> timeout = wait_time(pp, wait);
  const Deadline deadline(timeout);
  std::size_t done = 0;
  while (done < spans.size()) {
    Status st = pp.with_open([&](Publisher& p) {
      py::gil_scoped_release nogil;
      for (; done < spans.size(); ++done)
        if (const Status s = p.try_publish(spans[done]); s != Status::Ok) return s;
      return Status::Ok;
    });
    if (st == Status::Ok) break;
    if (st == Status::WouldBlock) {
      if (deadline.zero()) break;
      st = wait_until(deadline, pp, [&](Publisher& p, std::chrono::nanoseconds left) {
        return p.publish(spans[done], left);
      });
      if (st == Status::Ok) {
        ++done;
        continue;
      }
      if (st == Status::Timeout) break;
    }
    raise_publish_status(st, pp, spans[done].size(), timeout, nullptr);
  }
  return done;
}

// Takes a loan where `r` routes it; None when the ring is full and `wait` is false.
py::object take_loan(const py::object& self, std::size_t size, bool wait, const RouteArgs& r) {
  PyPublisher& pp = self.cast<PyPublisher&>();
  const std::optional<double> timeout = wait_time(pp, wait);
  const Deadline deadline(timeout);
  const bool routed = r.routed();
  const Route route = r.route();
  Loan loan;
  // One claim, counted in `held` when it succeeds (mu held).
  // `left`: how long it may wait; none: not at all.
  auto claim = [&](Publisher& p, std::optional<std::chrono::nanoseconds> left) {
    if (routed)
      loan = left ? p.loan(route, size, *left) : p.try_loan(route, size);
    else
      loan = left ? p.loan(size, *left) : p.try_loan(size);
    if (!loan) return loan.status();
    ++pp.held;
    return Status::Ok;
  };
  Status st = pp.with_open([&](Publisher& p) { return claim(p, std::nullopt); });
  if (st == Status::WouldBlock && !deadline.zero())
    st = wait_until(deadline, pp,
                    [&](Publisher& p, std::chrono::nanoseconds left) { return claim(p, left); });
  if (st == Status::Ok) {
    try {
      return to_python(std::make_unique<PyLoan>(self, &pp, std::move(loan)));
    } catch (...) {
      auto lk = pp.lock();
      loan.abandon();
      --pp.held;
      pp.finish_close_locked();
      throw;
    }
  }
  if (!wait && st == Status::WouldBlock) return py::none();
  raise_publish_status(st, pp, size, timeout, &r);
}

}  // namespace

py::object make_publisher(const Topic& topic, std::optional<double> timeout,
                          const std::string& wait, double spin) {
  timeout = Deadline::checked(timeout);
  PublisherOptions o;
  o.wait = wait_arg(wait);
  o.spin = seconds_to_ns(spin, "spin");
  // Each call passes its own timeout (wait_until); this one bounds the wait a
  // try_publish makes for a group that joins under its claim.
  o.timeout = Deadline(timeout).remaining();
  WantCount wanted = make_want_count();
  o.interrupt = python_interrupt(wanted);
  std::optional<Publisher> p;
  Policy policy;
  {
    py::gil_scoped_release nogil;
    p.emplace(topic.publisher(o));
    policy = topic.options().policy;
  }
  return to_python(std::make_unique<PyPublisher>(std::move(*p), std::move(wanted), topic.name(),
                                                 policy, timeout));
}

void bind_publisher(py::module_& m) {
  py::class_<PyPublisher, ForkSafePtr<PyPublisher>> pub(m, "Publisher", R"doc(
The producer side of a topic (made by Bus.publisher).

publish(data) copies any C-contiguous buffer (bytes, bytearray, memoryview,
NumPy array) into the next slot: one copy, with the GIL released for large
messages. loan(n) hands out the slot itself for writing in place.

When the ring is full:
  * policy 'block': publish()/loan() wait up to `timeout` seconds (the
    publisher's, None: for ever; interruptible with Ctrl-C), then raise
    shmbus.Timeout;
  * policy 'reject': they raise shmbus.WouldBlock at once;
  * policy 'overwrite': never full (the oldest message is overwritten).
try_publish()/try_loan() never wait: they return False/None instead.

On a topic of several partitions, key= picks the partition as Kafka's default
partitioner does (partition= names one); on a priority topic priority= picks
the lane. The topic's counts: partitions, priorities.

Close with close() or a with block (deferred until open loans end).
)doc");
  def_endpoint(pub, "publisher",
               "close() -> None\n\nFrees the producer seat (once open loans end). Further calls "
               "raise Closed.");
  pub.def(
         "publish_batch",
         [](PyPublisher& pp, const py::object& messages) {
           return publish_batch(pp, messages, true);
         },
         py::arg("messages"),
         R"doc(publish_batch(messages: Sequence[Buffer] | Buffer) -> int

Publishes many messages in one call: a list (or other sequence) of buffers,
or the rows of a 2-D C-contiguous buffer (a NumPy array of shape (n, size),
each row one message), without a Python-level loop. Runs of messages are
published under one lock with the GIL released.

Returns how many were published, in order: all of them, or fewer when the
topic stayed full for the publisher's timeout (policy 'block') or was full
(policy 'reject'); those after the count were not published. TooLarge (before
anything is published) when a message is larger than the slot size.)doc")
      .def(
          "try_publish_batch",
          [](PyPublisher& pp, const py::object& messages) {
            return publish_batch(pp, messages, false);
          },
          py::arg("messages"),
          "try_publish_batch(messages) -> int\n\nAs publish_batch, never waiting for room: "
          "stops at the first message\nthat finds the topic full, and returns how many were "
          "published.")
      .def(
          "flush",
          [](PyPublisher& pp) {
            pp.with_open([&](Publisher& p) {
              // msync: as long as the disk takes; other threads run meanwhile.
              py::gil_scoped_release nogil;
              p.flush();
            });
          },
          R"doc(flush() -> None

A file topic (storage='file'): returns once everything published to it before
the call, by any publisher, is on disk (msync). Nothing to do for a memory
topic. Raises SystemError when the disk refuses.)doc")
      .def(
          "publish",
          [](PyPublisher& pp, const py::object& data, const py::object& key,
             const py::object& partition, const py::object& priority, const py::object& headers,
             const py::object& delay, const py::object& deliver_at) {
            (void)publish(pp, data, true, RouteArgs(key, partition, priority, headers, "publish"),
                          due_arg(delay, deliver_at));
          },
          py::arg("data"), py::arg("key") = py::none(), py::arg("partition") = py::none(),
          py::arg("priority") = py::none(), py::arg("headers") = py::none(), py::kw_only(),
          py::arg("delay") = py::none(), py::arg("deliver_at") = py::none(),
          R"doc(publish(data: Buffer, key: Buffer | str | None = None, partition: int | None = None, priority: int | None = None, headers: dict[str, str] | None = None, *, delay: float | None = None, deliver_at: float | None = None) -> None

Copies `data` (any C-contiguous buffer) into the next slot and publishes it.

key: stored with the message (Sample.key; a str as its UTF-8 bytes; b"" is no
key) and, unless `partition` is given, picks its partition:
partition_for_key(key, partitions), as Kafka does. partition: this partition
(it wins over the key's). priority: the lane of a priority topic (0, the
default, is the lowest). Neither key nor partition on a partitioned topic:
the publisher's sticky partition (runs of 64 messages, then the next).
headers: properties stored with the message (Kafka's headers), str to str,
at most 16 pairs, names of 1 to 255 bytes, 1024 bytes encoded (4 per pair +
name + value; else InvalidArgument); the one named "tag" is its tag.
Raises Timeout / WouldBlock when the ring stays full (see the class doc),
TooLarge when key (padded to 8 bytes) + data exceed the slot size or the key
1024 bytes, InvalidArgument for a partition or priority the topic lacks.

delay (seconds from now) or deliver_at (seconds since the epoch, as
time.time()): a delayed message, invisible until then; shmbusd then appends
it to its partition as a fresh message (with the offset it gets then), keeping
this publish's timestamp, key and headers (Sample.deliver_at: its due time).
A time in the past delivers at once. The topic needs delay_slots
(create_topic); a full schedule raises as a full ring does (Timeout under
'block', WouldBlock otherwise: nothing scheduled is ever dropped).)doc")
      .def(
          "try_publish",
          [](PyPublisher& pp, const py::object& data, const py::object& key,
             const py::object& partition, const py::object& priority, const py::object& headers,
             const py::object& delay, const py::object& deliver_at) {
            return publish(pp, data, false,
                           RouteArgs(key, partition, priority, headers, "try_publish"),
                           due_arg(delay, deliver_at));
          },
          py::arg("data"), py::arg("key") = py::none(), py::arg("partition") = py::none(),
          py::arg("priority") = py::none(), py::arg("headers") = py::none(), py::kw_only(),
          py::arg("delay") = py::none(), py::arg("deliver_at") = py::none(),
          "try_publish(data: Buffer, key: Buffer | str | None = None, partition: int | None = "
          "None, priority: int | None = None, headers: dict[str, str] | None = None, *, "
          "delay: float | None = None, deliver_at: float | None = None) -> "
          "bool\n\nLike publish but never waits: False "
          "when the ring (or, for a delayed message, the schedule) is full.")
      .def(
          "loan",
          [](const py::object& self, std::size_t size, const py::object& key,
             const py::object& partition, const py::object& priority, const py::object& headers) {
            return take_loan(self, size, true,
                             RouteArgs(key, partition, priority, headers, "loan"));
          },
          py::arg("size"), py::arg("key") = py::none(), py::arg("partition") = py::none(),
          py::arg("priority") = py::none(), py::arg("headers") = py::none(),
          "loan(size: int, key: Buffer | str | None = None, partition: int | None = None, "
          "priority: int | None = None, headers: dict[str, str] | None = None) -> Loan\n\nClaims a "
          "slot for `size` bytes written in "
          "place; waits for room like publish.\n"
          "key, partition, priority, headers: as for publish (written into the slot at "
          "once).\n"
          "Use as `with pub.loan(n) as buf: ...` (see Loan).")
      .def(
          "try_loan",
          [](const py::object& self, std::size_t size, const py::object& key,
             const py::object& partition, const py::object& priority, const py::object& headers) {
            return take_loan(self, size, false,
                             RouteArgs(key, partition, priority, headers, "try_loan"));
          },
          py::arg("size"), py::arg("key") = py::none(), py::arg("partition") = py::none(),
          py::arg("priority") = py::none(), py::arg("headers") = py::none(),
          "try_loan(size: int, key: Buffer | str | None = None, partition: int | None = None, "
          "priority: int | None = None, headers: dict[str, str] | None = None) -> Loan | "
          "None\n\nLike loan but never waits: None when "
          "the ring is full.")
      .def_property(
          "timeout", [](const PyPublisher& pp) { return pp.timeout; },
          [](PyPublisher& pp, std::optional<double> t) { pp.timeout = Deadline::checked(t); },
          "Seconds publish()/loan() wait for room under policy 'block' (None: for ever).")
      .def_property_readonly("slot_size", open_getter<PyPublisher>(&Publisher::slot_size),
                             "The topic's slot size in bytes.")
      .def_property_readonly("id", open_getter<PyPublisher>(&Publisher::id),
                             "This producer's seat number (Sample.producer_id of its messages).")
      .def_property_readonly(
          "partitions", [](const PyPublisher& pp) { return pp.partitions; },
          "The topic's partitions (1 on a priority topic).")
      .def_property_readonly(
          "priorities", [](const PyPublisher& pp) { return pp.priorities; },
          "The topic's priority lanes (0: none).")
      .def("__repr__", [](const PyPublisher& pp) {
        std::string r = "<shmbus.Publisher topic='" + pp.topic + "' policy='" +
                        std::string(to_string(pp.policy)) + "'";
        if (pp.partitions != 1) r += " partitions=" + std::to_string(pp.partitions);
        if (pp.priorities != 0) r += " priorities=" + std::to_string(pp.priorities);
        return r + (pp.closing ? " closed" : "") + ">";
      });
  set_public_module(pub);
}

}  // namespace shmbus::python
