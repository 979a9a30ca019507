#include "watch.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "shmbus/detail/wait.hpp"
#include "shmbus/error.hpp"

namespace shmbus::detail {

// The process's waker: one thread, started on the first hand-over, that sleeps
// on the event counts of every armed Watch at once (and on its own word, bumped
// when the set changes) and signals a Watch whose event moved.
class Waker {
 public:
  static Waker& get() {
    // One per process: a fork() child (which has no waker thread) makes its
    // own. The parent's object is left as it is, never used again.
    static Waker* instance = nullptr;  // read and written under `made` only
    static std::mutex made;
    std::lock_guard lk(made);
    if (instance == nullptr || instance->pid_ != ::getpid())
      instance = new Waker();  // lives until the process ends (the thread uses it)
    return *instance;
  }

  void add(Watch& w, EventCount& ev, std::uint32_t key, const std::shared_ptr<void>& keep) {
    {
      std::lock_guard lk(mu_);
      if (!started_) {
        std::thread([this] { run(); }).detach();  // may throw: nothing taken yet
        started_ = true;
      }
      entries_.push_back({&w, &ev, key, keep});  // may throw: nothing taken
      // Release: pairs with arm()'s acquire (the owner's next look).
      w.armed_.store(true, std::memory_order_release);
    }
    wake(changed_);  // release bump + futex wake: the thread rebuilds its set
  }

  // Ends `w`'s declarations; once this returns the thread no longer uses `w`.
  void remove(Watch& w) noexcept {
    std::lock_guard lk(mu_);
    std::erase_if(entries_, [&](Entry& e) {
      if (e.watch != &w) return false;
      e.ev->waiters.fetch_sub(1, std::memory_order_relaxed);  // relaxed: as Uncount
      return true;
    });
    // Relaxed: written under the mutex, by the owner's thread (it is here).
    w.armed_.store(false, std::memory_order_relaxed);
  }

 private:
  struct Entry {
    Watch* watch;
    EventCount* ev;
    std::uint32_t key;
    std::shared_ptr<void> keep;  // the region stays mapped while we look at ev
  };

  Waker() = default;

  [[noreturn]] void run() noexcept {
    std::vector<std::atomic<std::uint32_t>*> words;
    std::vector<std::uint32_t> keys;
    for (;;) {
      words.clear();
      keys.clear();
      // Our own word first, its key taken before the set is read: a change
      // made after this load bumps it, and the wait below returns at once.
      words.push_back(&changed_.seq);
      keys.push_back(changed_.seq.load(std::memory_order_acquire));  // pairs with wake()
      bool over = false;
      {
        std::lock_guard lk(mu_);
        fire_locked();
        for (const Entry& e : entries_) {
          if (words.size() == kMaxWaitMany) {
            over = true;  // the rest are looked at every millisecond
            break;
          }
          words.push_back(&e.ev->seq);
          keys.push_back(e.key);
        }
      }
      futex_wait_many(words, keys,
                      over ? std::chrono::milliseconds(1) : std::chrono::milliseconds(1000));
    }
  }

  // Signals every Watch whose event moved past its key, and forgets it.
  void fire_locked() noexcept {
    std::erase_if(entries_, [](Entry& e) {
      // Acquire: pairs with the notifier's release bump in wake(), so the
      // owner, woken by the descriptor, sees what was published.
      if (e.ev->seq.load(std::memory_order_acquire) == e.key) return false;
      e.ev->waiters.fetch_sub(1, std::memory_order_relaxed);  // relaxed: as Uncount
      // Disarmed before the signal: the owner, woken by it, must find the
      // descriptor disarmed, or its arm() would return at once and leave the
      // descriptor readable with nothing watched (a busy loop of wakes).
      // Release: pairs with arm()'s acquire. An arm() that runs before the
      // signal waits for our mutex in add(), so this entry is gone by then
      // and the owner never has two declarations on one event.
      e.watch->armed_.store(false, std::memory_order_release);
      e.watch->signal();
      return true;
    });
  }

  std::mutex mu_;
  std::vector<Entry> entries_;
  bool started_ = false;
  pid_t pid_ = ::getpid();
  // Bumped (wake()) when an entry is added, so the thread rebuilds its set.
  EventCount changed_{};
};

Watch::Watch() : fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (fd_ < 0)
    throw Error(ErrorCode::ResourceExhausted,
                std::string("cannot make an eventfd for the subscriber's descriptor: ") +
                    std::strerror(errno) + " (raise the open-file limit, ulimit -n)");
}

Watch::~Watch() {
  disarm();
  if (owns_) ::close(fd_);
}

void Watch::signal() noexcept {
  const std::uint64_t one = 1;
  // EAGAIN (the counter is at its maximum) still leaves it readable.
  while (::write(fd_, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

void Watch::drain() noexcept {
  std::uint64_t n = 0;
  while (::read(fd_, &n, sizeof n) < 0 && errno == EINTR) {
  }
}

void Watch::disarm() noexcept {
  // Not armed is not enough: the waker disarms before it signals. Its mutex
  // is, as it signals under it.
  if (handed_) Waker::get().remove(*this);
}

void Watch::hand_over(EventCount& ev, std::uint32_t key, const std::shared_ptr<void>& keep) {
  handed_ = true;
  Waker::get().add(*this, ev, key, keep);  // arms, once the declaration is taken
}

}  // namespace shmbus::detail
