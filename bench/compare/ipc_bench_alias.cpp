// shmbus-ipc-bench: `shmbus-compare --preset limits`, with any further
// arguments passed on (they win over the preset's).

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#ifndef SHMBUS_COMPARE_PATH
#define SHMBUS_COMPARE_PATH "shmbus-compare"
#endif

int main(int argc, char** argv) {
  std::vector<char*> args;
  args.push_back(const_cast<char*>(SHMBUS_COMPARE_PATH));
  args.push_back(const_cast<char*>("--preset"));
  args.push_back(const_cast<char*>("limits"));
  for (int i = 1; i < argc; ++i)
    args.push_back(argv[i]);
  args.push_back(nullptr);
  ::execv(SHMBUS_COMPARE_PATH, args.data());
  std::fprintf(stderr, "shmbus-ipc-bench: exec %s: %s\n", SHMBUS_COMPARE_PATH,
               std::strerror(errno));
  return 127;
}
