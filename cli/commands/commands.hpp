// Each command group adds its subcommands, options and actions to the tree.
#pragma once

#include "../common.hpp"

namespace shmbus::cli {

void add_topic_commands(CommandTree& tree);   // topic create|delete|list|describe
void add_group_commands(CommandTree& tree);   // group list|describe|delete|reset
void add_pub_command(CommandTree& tree);      // pub
void add_sub_command(CommandTree& tree);      // sub
void add_stat_command(CommandTree& tree);     // stat
void add_daemon_commands(CommandTree& tree);  // daemon status|stop
void add_request_command(CommandTree& tree);  // request

}  // namespace shmbus::cli
