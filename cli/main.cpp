// shmbus: the command line of a shmbus bus, in the spirit of Kafka's console
// tools. Manages topics through shmbusd, publishes stdin or a file, prints what
// a topic carries, watches rates and lags, and asks after (or stops) the daemon.
// This file builds the command tree and reports failures; each command lives in
// commands/.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "commands/commands.hpp"
#include "common.hpp"
#include "shmbus/version.hpp"

namespace {

using namespace shmbus::cli;

constexpr const char* kFooter =
    "Exit codes: 0 ok; 1 error; 2 timeout (sub: --timeout passed before --count messages\n"
    "came; pub: the topic stayed full past --timeout); 3 not found; 4 permission denied;\n"
    "5 daemon unavailable; 6 already exists; 7 topic deleted; 8 in use (delete --if-unused);\n"
    "64 usage error; 128+N stopped by signal N (130: Ctrl-C).\n"
    "`shmbus daemon status` exits 1 when no daemon answers.";

// What every subcommand's help ends with: the global options and the exit codes
// are shown once, by `shmbus --help`.
constexpr const char* kSubcommandFooter = "global options: see shmbus --help";

// `shmbus` alone: a usage line and every command with its one-line description.
void print_command_list(CLI::App& app) {
  std::vector<std::pair<std::string, std::string>> rows;
  std::size_t width = 0;
  for (CLI::App* c : app.get_subcommands({})) {
    const auto subs = c->get_subcommands({});
    if (subs.empty()) rows.emplace_back(c->get_name(), c->get_description());
    for (CLI::App* s : subs)
      rows.emplace_back(c->get_name() + " " + s->get_name(), s->get_description());
  }
  for (const auto& r : rows)
    width = std::max(width, r.first.size());
  std::fprintf(stderr, "usage: shmbus [--bus NAME] [--socket PATH] <command> [<args>]\n\n");
  for (const auto& [name, help] : rows)
    std::fprintf(stderr, "  %-*s  %s\n", static_cast<int>(width), name.c_str(),
                 help.substr(0, help.find('\n')).c_str());
  std::fprintf(stderr,
               "\n`shmbus <command> --help` shows a command's options; `shmbus --help` the "
               "global options and exit codes.\n");
}

int run(int argc, char** argv) {
  CLI::App app{
      "shmbus: the command line of a shmbus bus (shared-memory topics on one host).\n"
      "Manages topics through shmbusd (started on demand), publishes and prints messages,\n"
      "and shows rates and consumer lag."};
  app.set_version_flag("--version", std::string("shmbus ") + shmbus::version());
  app.footer(kSubcommandFooter);  // what the subcommands inherit; the exit codes are set below
  app.fallthrough();              // global options may come after a subcommand's name too
  app.require_subcommand(1);
  Globals g;
  add_globals(&app, g);

  CommandTree tree(app, g);
  add_topic_commands(tree);
  add_group_commands(tree);
  add_pub_command(tree);
  add_sub_command(tree);
  add_stat_command(tree);
  add_request_command(tree);
  add_daemon_commands(tree);
  app.footer(kFooter);

  if (argc <= 1) {
    print_command_list(app);
    return kExitUsage;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version: on stdout
    // One line, like every other error; the pointer to --help only for a person.
    note(e.what());
    if (::isatty(STDERR_FILENO) == 1)
      std::fprintf(stderr, "Run with --help for more information.\n");
    return kExitUsage;
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
