// The keeper: a small process that holds a copy of every region descriptor of
// a daemon, so that topics outlive a daemon crash. Regions are sealed memfds
// (issue 14: no client can resize them), which have no name a restarted
// daemon could find; the keeper is where it finds them instead, as systemd's
// file-descriptor store is for services.
//
// shmbusd spawns it as `shmbusd --keeper <socket>.keep` (KeeperLink::start)
// and deposits each topic's two descriptors as it creates the topic; a new
// daemon connects to <socket>.keep and is handed all of them. The keeper
// exits when it holds nothing and no daemon is connected, when its socket
// file is removed (nobody could reach it again), or when dismissed. If it
// dies, the daemon starts another and deposits every topic again: both must
// die for an unheld topic to be lost (as a reboot loses a /dev/shm file).
//
// Wire format, over a Unix stream socket: frames of the control protocol's
// framing (a 4-byte length, then the body; descriptors in SCM_RIGHTS on the
// first byte) whose body is a KeeperRecord of 16 bytes.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace shmbus::daemon {

enum class KeeperOp : std::uint8_t {
  Take = 'T',     // a new daemon -> keeper: send me everything you hold
  Put = 'P',      // daemon -> keeper: hold these two descriptors (data, control)
  Drop = 'D',     // daemon -> keeper: forget the region whose data segment is `ino`
  Entry = 'E',    // keeper -> daemon: a region it holds (two descriptors)
  End = 'Z',      // keeper -> daemon: that was every region
  Dismiss = 'X',  // anyone of the keeper's uid -> keeper: close everything and exit
};

struct KeeperRecord {
  KeeperOp op;
  std::uint8_t pad[7];
  std::uint64_t ino;  // Drop: the data segment's inode number
};
static_assert(sizeof(KeeperRecord) == 16);

// The keeper's socket for a daemon socket.
[[nodiscard]] inline std::string keeper_path(const std::string& socket_path) {
  return socket_path + ".keep";
}

// `shmbusd --keeper PATH`: serves as the keeper on the socket `listen_fd`
// (bound at PATH by the daemon; the keeper listens on it) with `channel` connected to the
// daemon that spawned it. Returns the process's exit status.
// `path_ino`: the inode of the socket file the daemon bound, so that a
// keeper whose socket was replaced knows it.
int run_keeper(const std::string& path, std::uint64_t path_ino, int listen_fd, int channel);

// Tells a keeper to let go of everything and exit (tests, and whoever wants
// its topics gone): true if one was listening at `path`.
bool dismiss_keeper(const std::string& path);

// The daemon's end.
class KeeperLink {
 public:
  KeeperLink() = default;
  ~KeeperLink();
  KeeperLink(const KeeperLink&) = delete;
  KeeperLink& operator=(const KeeperLink&) = delete;

  // The keeper's socket, and the shmbusd binary to run as the keeper; an
  // empty program disables the keeper (a daemon in a test's thread: its
  // topics die with it). Before start().
  void configure(std::string path, std::string program) {
    path_ = std::move(path);
    program_ = std::move(program);
  }
  // Connects to the keeper a previous daemon left and takes every region it
  // holds (pairs of owned descriptors: data, control), or starts a keeper
  // when none listens. Throws Error when a keeper listens but does not hand
  // its regions over (starting another would lose them); a keeper that
  // cannot be started is logged, and the daemon serves on without one.
  std::vector<std::pair<int, int>> start();
  // Deposits a region's descriptors (copies are sent; the caller keeps its
  // own). Without may_wait (a request being served) a keeper whose socket
  // is full is given up at once (and replaced by the next restart()).
  void put(int data_fd, int control_fd, bool may_wait = false);
  // Forgets the region whose data segment is data_fd (or has inode `ino`).
  void drop(int data_fd);
  void drop_inode(std::uint64_t ino);
  // Stops using the keeper (its connection ended); the next restart() starts one.
  void detach() noexcept { close_channel(); }
  // The descriptor to watch for the keeper's death (-1: none).
  [[nodiscard]] int fd() const noexcept { return channel_; }
  // The keeper went away (fd() hung up): start a new one and deposit `all`
  // again (data, control descriptors the daemon holds).
  void restart(const std::vector<std::pair<int, int>>& all);
  // Whether a keeper is wanted, and whether one is attached.
  [[nodiscard]] bool configured() const noexcept { return !program_.empty(); }
  [[nodiscard]] bool enabled() const noexcept { return channel_ >= 0; }
  // Reaps keepers of ours that have exited (housekeeping).
  void reap() noexcept;

 private:
  void spawn();
  void close_channel() noexcept;
  std::string path_, program_;
  int channel_ = -1;
  std::vector<pid_t> children_;  // keepers we spawned, until reaped
};

}  // namespace shmbus::daemon
