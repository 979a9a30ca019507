// Selector, Subscriber::fd and Subscriber::ready's arming (docs/event-loops.md).
#include "shmbus/selector.hpp"

#include <algorithm>
#include <string>

#include "region.hpp"
#include "shmbus/subscriber.hpp"
#include "watch.hpp"

namespace shmbus {

// ---- Subscriber::fd ----------------------------------------------------------

int Subscriber::fd() {
  if (!watch_) {
    watch_ = std::make_unique<detail::Watch>();
    rearm();  // readable at once if a message is there
  }
  return watch_->fd();
}

void Subscriber::rearm() noexcept {
  detail::Watch& w = *watch_;
  try {
    w.arm(data_event(), region_, [&] { return !ready(); });
  } catch (...) {
    w.signal();  // no waker (no thread, no memory): readable, so the caller looks again
  }
}

// ---- Selector ----------------------------------------------------------------

Selector::Selector(SelectorOptions options) : options_(std::move(options)) {}

Selector::~Selector() {
  watches_.clear();  // their declarations end before the subscribers may go
  for (Subscriber* s : subs_)
    std::erase(s->selectors_, this);
}

void Selector::add(Subscriber& s) {
  if (std::find(subs_.begin(), subs_.end(), &s) != subs_.end())
    throw Error(ErrorCode::InvalidArgument,
                "the subscriber of group '" + s.group() + "' is in this selector already");
  detail::EventCount* ev = &s.data_event();
  if (std::find(events_.begin(), events_.end(), ev) == events_.end() &&
      events_.size() == kMaxTopics)
    throw Error(ErrorCode::ResourceExhausted,
                "a selector waits on at most " + std::to_string(kMaxTopics) +
                    " topics; use another selector (or thread) for the rest");
  subs_.reserve(subs_.size() + 1);
  s.selectors_.push_back(this);
  subs_.push_back(&s);
  rebuild_events();
}

bool Selector::remove(Subscriber& s) noexcept {
  const auto it = std::find(subs_.begin(), subs_.end(), &s);
  if (it == subs_.end()) return false;
  subs_.erase(it);
  std::erase(s.selectors_, this);
  try {
    rebuild_events();
  } catch (...) {
    // Out of memory: the lists shrink only, so the old events still cover.
  }
  return true;
}

void Selector::forget(Subscriber& s) noexcept {
  // The subscriber's region may be unmapped next: its watch must end first.
  std::erase(s.selectors_, this);
  const auto it = std::find(subs_.begin(), subs_.end(), &s);
  if (it == subs_.end()) return;
  subs_.erase(it);
  try {
    rebuild_events();
  } catch (...) {
    watches_.clear();  // every declaration ends; fd() readers get no more signals
  }
}

void Selector::rebuild_events() {
  std::vector<detail::EventCount*> evs;
  for (Subscriber* s : subs_)
    if (std::find(evs.begin(), evs.end(), &s->data_event()) == evs.end())
      evs.push_back(&s->data_event());
  // A topic's watch stays with it; a topic no subscriber uses any more loses it.
  std::vector<std::unique_ptr<detail::Watch>> ws;
  if (fd_) {
    for (detail::EventCount* ev : evs) {
      // watches_ is empty until fd() was first called, else as events_.
      const auto at =
          static_cast<std::size_t>(std::find(events_.begin(), events_.end(), ev) - events_.begin());
      ws.push_back(at < watches_.size() ? std::move(watches_[at])
                                        : std::make_unique<detail::Watch>(fd_->fd()));
    }
  }
  watches_ = std::move(ws);  // the old topics' watches end their declarations here
  events_ = std::move(evs);
  if (fd_) fd_->signal();  // let the next wait() look at the new set
}

int Selector::fd() {
  if (!fd_) {
    fd_ = std::make_unique<detail::Watch>();
    rebuild_events();
  }
  return fd_->fd();
}

void Selector::arm_idle() {
  for (std::size_t e = 0; e < events_.size(); ++e) {
    detail::EventCount* ev = events_[e];
    Subscriber* any = nullptr;
    for (Subscriber* s : subs_)
      if (&s->data_event() == ev) any = s;
    watches_[e]->arm(*ev, any->region_, [&] {
      return std::none_of(subs_.begin(), subs_.end(),
                          [&](Subscriber* s) { return &s->data_event() == ev && s->ready(); });
    });
  }
}

Status Selector::wait(std::vector<Subscriber*>& ready, std::chrono::nanoseconds timeout) noexcept {
  ready.clear();
  ready.reserve(subs_.size());
  if (fd_) fd_->drain();
  bool groups = false;  // members whose group needs a look now and then
  const auto collect = [&] {
    ready.clear();
    for (Subscriber* s : subs_) {
      if (s->ready()) ready.push_back(s);
      groups = groups || s->partitioned_ || s->acks_ != nullptr;
    }
    return !ready.empty();
  };
  Status st = Status::Ok;
  if (!collect()) {
    const detail::Waited w = detail::wait_many(
        events_, options_.wait, timeout, options_.spin, options_.interrupt, collect,
        groups ? std::chrono::milliseconds(50) : std::chrono::nanoseconds::max());
    st = detail::status_of(w, Status::Ok);
  }
  if (fd_) {
    try {
      if (!ready.empty()) fd_->signal();  // readable while a subscriber is ready
      arm_idle();
    } catch (...) {
      fd_->signal();  // no waker: readable, so the caller looks again
    }
  }
  return st;
}

std::vector<Subscriber*> Selector::wait(std::chrono::nanoseconds timeout) {
  std::vector<Subscriber*> ready;
  ready.reserve(subs_.size());
  const Status st = wait(ready, timeout);
  if (st != Status::Ok && st != Status::Timeout && st != Status::Interrupted)
    throw Error(ErrorCode::SystemError, std::string("selector wait failed: ") + to_string(st));
  return ready;
}

}  // namespace shmbus
