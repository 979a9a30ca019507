// shmbus: the command line of a shmbus bus, in the spirit of Kafka's console
// tools. Manages topics through shmbusd, publishes stdin or a file, prints what
// a topic carries, watches rates and lags, and asks after (or stops) the daemon.
// This file builds the command tree and reports failures; each command lives in
// commands/.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <exception>
#include <string>

#include "commands/commands.hpp"
#include "common.hpp"
#include "shmbus/version.hpp"

namespace {

using namespace shmbus::cli;

constexpr const char* kFooter =
    "Exit codes: 0 ok; 1 error; 2 timeout (sub: --timeout passed before --count messages\n"
    "came; pub: the topic stayed full past --timeout); 3 not found; 4 permission denied;\n"
    "5 daemon unavailable; 64 usage error; 128+N stopped by signal N (130: Ctrl-C).\n"
    "`shmbus daemon status` exits 1 when no daemon answers.";

int run(int argc, char** argv) {
  CLI::App app{
      "shmbus: the command line of a shmbus bus (shared-memory topics on one host).\n"
      "Manages topics through shmbusd (started on demand), publishes and prints messages,\n"
      "and shows rates and consumer lag."};
  app.set_version_flag("--version", std::string("shmbus ") + shmbus::version());
  app.footer(kFooter);
  app.fallthrough();  // global options may come after a subcommand's name too
  app.require_subcommand(1);
  Globals g;
  add_globals(&app, g);

  CommandTree tree(app, g);
  add_topic_commands(tree);
  add_group_commands(tree);
  add_pub_command(tree);
  add_sub_command(tree);
  add_stat_command(tree);
  add_daemon_commands(tree);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }
  return tree.dispatch();
}

}  // namespace

int main(int argc, char** argv) {
  // A closed stdout shows as EPIPE, handled where we write.
  if (std::signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
    note("cannot ignore SIGPIPE");
    return kExitError;
  }
  try {
    return run(argc, argv);
  } catch (const Failure& f) {
    note(f.message);
    return f.code;
  } catch (const shmbus::Error& e) {
    std::string message = e.what();
    const std::string& daemon = daemon_option();
    if (e.code() == shmbus::ErrorCode::DaemonUnavailable && !daemon.empty() &&
        ::access(daemon.c_str(), X_OK) != 0)
      message += " (--daemon " + daemon + " is not an executable file)";
    note(message);
    return exit_code_of(e.code());
  } catch (const std::exception& e) {
    note(e.what());
    return kExitError;
  }
}
