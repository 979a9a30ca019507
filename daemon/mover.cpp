// shmbusd as the mover of delayed messages (issue 16, docs/delayed.md): one
// thread per topic with a schedule, sleeping until the earliest due time.
#include <spdlog/spdlog.h>

#include "daemon.hpp"
#include "region.hpp"
#include "schedule.hpp"

namespace shmbus::daemon {

MoverThread::MoverThread(const std::string& topic, std::shared_ptr<detail::Region> region)
    : mover(std::make_unique<detail::Mover>(std::move(region), [topic](const std::string& what) {
        spdlog::warn("topic '{}': {}", topic, what);
      })) {
  thread = std::thread([m = mover.get(), topic] {
    // The thread's accesses to the region are guarded as the main thread's
    // (issue 14): a SIGBUS ends the mover, the topic is quarantined by the
    // next housekeeping pass that finds its file's size wrong.
    if (!guarded([&] { m->run(); }))
      spdlog::warn("topic '{}': the mover faulted (SIGBUS) on the region and stopped", topic);
  });
}

MoverThread::~MoverThread() {
  if (damaged) {
    // Nothing of the region is touched from here (a SIGBUS guard is not
    // reliable under every runtime: TSan handles SIGBUS itself). The mover
    // sees stop within its 1 s sleep cap, or has faulted and ended.
    mover->stop(false);
    if (thread.joinable()) thread.join();
    mover->forget_publisher();
    return;
  }
  (void)guarded([&] { mover->stop(); });
  if (thread.joinable()) thread.join();
  // Its seat, under the guard too: on a quarantined region this faults, and
  // the seat is left (nobody uses the region again).
  (void)guarded([&] { mover->drop_publisher(); });
}

void MoverThread::rescan() noexcept {
  (void)guarded([&] { mover->rescan(); });
}

void Daemon::free_dead_writer(TopicEntry* t, detail::Region& r, std::uint32_t pid) {
  if (r.schedule().header == nullptr) return;
  if (const std::uint32_t n = detail::free_writers_of(r, pid); n != 0)
    spdlog::info("{} schedule entr{} left half-written by pid {} (dead) freed", n,
                 n == 1 ? "y" : "ies", pid);
  if (t != nullptr && t->mover) t->mover->rescan();
}

void Daemon::recover_schedule(const std::string& name, TopicEntry& t, bool previous_boot) {
  if (t.region->schedule().header == nullptr || t.damaged) return;
  detail::Recovered rc;
  if (!touch(name, t, [&] { rc = detail::Mover::recover(*t.region, previous_boot); })) return;
  if (rc.retired + rc.requeued + rc.freed + rc.refused != 0)
    spdlog::info(
        "topic '{}': schedule recovered: {} moved before the last daemon stopped (retired), "
        "{} to move again, {} half-written freed, {} invalid freed",
        name, rc.retired, rc.requeued, rc.freed, rc.refused);
}

void Daemon::start_mover(const std::string& name, TopicEntry& t, bool recover) {
  if (t.region->schedule().header == nullptr || t.damaged) return;
  if (recover) recover_schedule(name, t);
  if (t.damaged) return;
  t.mover = std::make_unique<MoverThread>(name, t.region);
}

}  // namespace shmbus::daemon
