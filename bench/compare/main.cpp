// shmbus-compare: shmbus against the IPC systems packaged for this machine and
// against its physical limits (issue 4), with presets for the quick run
// against the limits alone and for the interleaved bare-line ratio. The
// harness is in bench/harness; the driver's parts are in this directory.

#include <cstdio>
#include <exception>

#include "compare.hpp"
#include "options.hpp"

int main(int argc, char** argv) {
  using namespace shmbus_bench;
  Options opt = parse_options(argc, argv);
  try {
    PairRunner runner("shmbus-compare");  // stops the daemon it started, whatever happens
    Compare c(std::move(opt), runner);
    return c.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shmbus-compare: %s\n", e.what());
    return 1;
  }
}
