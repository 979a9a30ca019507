#include "os.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "protocol.hpp"
#include "shmbus/error.hpp"

namespace shmbus::detail {

std::string errno_text(int err) {
  char buf[256];
  // GNU strerror_r: returns the message, which may or may not be in buf.
  return ::strerror_r(err, buf, sizeof buf);
}

namespace {

struct ProcStat {
  bool read = false;
  char state = 0;
  long threads = 1;
  std::uint64_t start_time = 0;
};

// Fields 3 (state), 20 (num_threads) and 22 (starttime) of /proc/pid/stat.
// The command (field 2) may hold spaces and parentheses: parse after the last ')'.
ProcStat read_proc_stat(pid_t pid) noexcept {
  ProcStat st;
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return st;
  char buf[1024];
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return st;
  buf[n] = '\0';
  const char* p = std::strrchr(buf, ')');
  if (p == nullptr) return st;
  // After ") ": state(3) ppid(4) ... num_threads(20) itrealvalue(21) starttime(22).
  char state = 0;
  long threads = 0;
  unsigned long long start = 0;
  const int got = std::sscanf(p + 1,
                              " %c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d"
                              " %ld %*d %llu",
                              &state, &threads, &start);
  if (got != 3) return st;
  st.read = true;
  st.state = state;
  st.threads = threads;
  st.start_time = start;
  return st;
}

}  // namespace

std::uint64_t process_start_time(pid_t pid) noexcept {
  if (pid <= 0) return 0;
  return read_proc_stat(pid).start_time;
}

pid_t reply_topic_pid(std::string_view name) noexcept {
  if (!name.starts_with(kReplyTopicPrefix)) return 0;
  long pid = 0;
  std::size_t i = kReplyTopicPrefix.size();
  for (; i < name.size() && name[i] >= '0' && name[i] <= '9' && pid < 1 << 30; ++i)
    pid = pid * 10 + (name[i] - '0');
  if (i == kReplyTopicPrefix.size() || i >= name.size() || name[i] != '.' || i + 1 == name.size())
    return 0;
  return static_cast<pid_t>(pid);
}

bool process_alive(pid_t pid, std::uint64_t start_time) noexcept {
  if (pid <= 0) return false;
  if (::kill(pid, 0) != 0 && errno == ESRCH) return false;
  const ProcStat st = read_proc_stat(pid);
  if (!st.read) return true;  // no /proc (or it vanished just now): trust kill()
  if ((st.state == 'Z' || st.state == 'X') && st.threads <= 1) return false;
  if (start_time != 0 && st.start_time != start_time) return false;  // pid reused
  return true;
}

void make_dirs(const std::string& dir, mode_t mode) {
  for (std::size_t i = 1; i <= dir.size(); ++i) {
    if (i != dir.size() && dir[i] != '/') continue;
    const std::string path = dir.substr(0, i);
    if (::mkdir(path.c_str(), mode) == 0) continue;
    const int err = errno;
    struct stat st {};
    if (err == EEXIST && ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) continue;
    throw Error(
        ErrorCode::SystemError,
        "cannot create directory " + path + ": " +
            (err == EEXIST ? std::string("it exists and is not a directory") : errno_text(err)));
  }
}

int connect_unix(const std::string& path, int type_flags) noexcept {
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path) {
    errno = ENAMETOOLONG;
    return -1;
  }
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | type_flags, 0);
  if (fd < 0) return -1;
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  while (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno == EINTR) continue;
    const int err = errno;
    ::close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

int open_own_file(const std::string& path, int flags, mode_t mode, std::string& why) {
  const int fd = ::open(path.c_str(), flags | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) {
    const int err = errno;
    why = err == ELOOP ? "is a symbolic link (planted?): remove it" : errno_text(err);
    errno = err;
    return -1;
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    why = "fstat: " + errno_text(err);
    errno = err;
    return -1;
  }
  if (!S_ISREG(st.st_mode) || st.st_uid != ::geteuid()) {
    ::close(fd);
    why = "is not a regular file of uid " + std::to_string(::geteuid()) + " (owner uid " +
          std::to_string(st.st_uid) + "): remove it";
    errno = EPERM;
    return -1;
  }
  return fd;
}

std::string dir_of(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

bool flock_soon(int fd) noexcept {
  for (int i = 0; i < 100; ++i) {
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) return true;
    if (errno != EWOULDBLOCK && errno != EINTR) return false;
    ::usleep(10'000);
  }
  errno = EWOULDBLOCK;
  return false;
}

std::uint64_t boot_id_hash() noexcept {
  const int fd = ::open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[64];
  const ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  if (n <= 0) return 0;
  // FNV-1a: the id is random already; this only folds it to 64 bits.
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (ssize_t i = 0; i < n; ++i)
    h = (h ^ static_cast<unsigned char>(buf[i])) * 0x100000001b3ULL;
  return h == 0 ? 1 : h;
}

std::string default_data_dir(const std::string& bus) {
  if (const char* x = std::getenv("XDG_STATE_HOME"); x != nullptr && x[0] == '/')
    return std::string(x) + "/shmbus/" + bus;
  std::string home;
  if (const char* h = std::getenv("HOME"); h != nullptr && h[0] == '/') {
    home = h;
  } else {
    passwd pw{};
    passwd* found = nullptr;
    std::vector<char> buf(16384);
    if (::getpwuid_r(::geteuid(), &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr &&
        found->pw_dir != nullptr)
      home = found->pw_dir;
  }
  if (home.empty()) home = "/tmp/shmbus-" + std::to_string(::geteuid());
  return home + "/.local/state/shmbus/" + bus;
}

int open_data_dir(const std::string& dir, std::string& why) {
  if (dir.empty() || dir[0] != '/') {
    why = "the data directory '" + dir + "' is not an absolute path; give one (--data-dir)";
    return -1;
  }
  try {
    make_dirs(dir, 0700);
  } catch (const std::exception& e) {
    why = e.what();
    return -1;
  }
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    why =
        "cannot open the data directory " + dir + ": " + errno_text(err) +
        (err == ELOOP || err == ENOTDIR ? " (a symbolic link or not a directory: remove it)" : "");
    return -1;
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    why = "the data directory " + dir + " is owned by uid " + std::to_string(st.st_uid) +
          " with mode " + mode + "; it must be this user's (uid " + std::to_string(::geteuid()) +
          ") with mode 0700, so nobody else can plant or swap a topic's files: chmod 0700 it, "
          "or choose another (--data-dir)";
    ::close(fd);
    return -1;
  }
  return fd;
}

std::string untrusted_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ELOOP || err == ENOTDIR)
      return "it is not a directory (a symbolic link?): remove it, or use another --socket";
    return "cannot open it: " + errno_text(err);
  }
  struct stat st {};
  const bool ok = ::fstat(fd, &st) == 0;
  const int err = errno;
  ::close(fd);
  if (!ok) return "fstat: " + errno_text(err);
  const uid_t me = ::geteuid();
  if (st.st_uid != me && st.st_uid != 0)
    return "it belongs to uid " + std::to_string(st.st_uid) + ", not to uid " + std::to_string(me) +
           " or root: another user may have planted it; remove it (or "
           "set XDG_RUNTIME_DIR, or use another --socket)";
  const bool others_write = (st.st_mode & (S_IWGRP | S_IWOTH)) != 0;
  const bool root_sticky = st.st_uid == 0 && (st.st_mode & S_ISVTX) != 0;
  if (others_write && !root_sticky) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return std::string("other users may write to it (mode ") + mode +
           "): chmod go-w it, or use another --socket";
  }
  return {};
}

long peer_uid(int sock) noexcept {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return -1;
  return static_cast<long>(cred.uid);
}

bool socket_answers(const std::string& path) noexcept {
  const int fd = connect_unix(path);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

std::string default_socket_path(const std::string& bus) {
  if (const char* s = std::getenv("SHMBUS_SOCKET"); s != nullptr && *s != '\0') return s;
  if (const char* x = std::getenv("XDG_RUNTIME_DIR"); x != nullptr && *x != '\0')
    return std::string(x) + "/shmbus/" + bus + ".sock";
  return "/tmp/shmbus-" + std::to_string(::getuid()) + "/" + bus + ".sock";
}

Descriptors& Descriptors::operator=(Descriptors&& o) noexcept {
  if (this != &o) {
    reset();
    fds_ = o.fds_;
    n_ = o.n_;
    o.n_ = 0;
  }
  return *this;
}

void Descriptors::add(int fd) noexcept {
  if (fd < 0) return;
  if (n_ == kMaxFds) {
    ::close(fd);
    return;
  }
  fds_[n_++] = fd;
}

void Descriptors::reset() noexcept {
  for (std::size_t i = 0; i < n_; ++i)
    if (fds_[i] >= 0) ::close(fds_[i]);
  n_ = 0;
}

int Descriptors::release(std::size_t i) noexcept {
  if (i >= n_) return -1;
  return std::exchange(fds_[i], -1);
}

bool send_frame(int sock, std::span<const std::byte> frame, std::span<const int> fds,
                bool may_wait) noexcept {
  std::size_t sent = 0;
  bool fd_pending = !fds.empty() && fds.size() <= Descriptors::kMaxFds;
  while (sent < frame.size()) {
    iovec iov{const_cast<std::byte*>(frame.data() + sent), frame.size() - sent};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * Descriptors::kMaxFds)]{};
    if (fd_pending) {
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    // MSG_DONTWAIT: without may_wait a full buffer is an error even on a
    // blocking socket.
    const ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL | (may_wait ? 0 : MSG_DONTWAIT));
    if (n < 0) {
      if (errno == EINTR) continue;
      if ((errno == EAGAIN || errno == EWOULDBLOCK) && may_wait) {
        pollfd p{sock, POLLOUT, 0};
        if (::poll(&p, 1, 1000) <= 0) return false;  // a peer that reads nothing for 1 s
        continue;
      }
      return false;
    }
    fd_pending = false;
    sent += static_cast<std::size_t>(n);
  }
  return true;
}

Received recv_frame(int sock, std::chrono::milliseconds timeout) {
  Received r;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<std::byte> buf;
  std::size_t want = 4;
  while (buf.size() < want) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      r.error = "no reply from shmbusd within " + std::to_string(timeout.count()) + " ms";
      break;
    }
    pollfd p{sock, POLLIN, 0};
    const int pr = ::poll(&p, 1, static_cast<int>(left.count()));
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) continue;
    std::byte chunk[4096];
    const std::size_t room = std::min(sizeof chunk, want - buf.size());
    iovec iov{chunk, room};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)]{};
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      r.error = std::string("reading from shmbusd failed: ") + std::strerror(errno);
      r.closed = true;
      break;
    }
    if (n == 0) {
      r.error = "shmbusd closed the connection";
      r.closed = true;
      break;
    }
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < count; ++i) {
        int fd = -1;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        r.fds.add(fd);  // closed at once past kMaxFds
      }
    }
    buf.insert(buf.end(), chunk, chunk + n);
    if (want == 4 && buf.size() == 4) {
      std::uint32_t len = 0;
      std::memcpy(&len, buf.data(), 4);
      if (len > proto::kMaxReply) {
        r.error = "shmbusd sent a frame of " + std::to_string(len) + " bytes, over the limit";
        r.closed = true;
        break;
      }
      want = 4 + len;
    }
  }
  if (!r.error.empty()) {
    r.fds.reset();
    return r;
  }
  r.body.assign(buf.begin() + 4, buf.end());
  return r;
}

}  // namespace shmbus::detail
