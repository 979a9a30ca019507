#include <toml++/toml.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <sstream>

#include "daemon.hpp"
#include "shmbus/error.hpp"

namespace shmbus::daemon {

namespace {

[[noreturn]] void bad(const std::string& origin, const std::string& what) {
  throw Error(ErrorCode::InvalidArgument, origin + ": " + what);
}

Principals principals(const toml::node_view<const toml::node> v, const std::string& origin,
                      const std::string& key) {
  Principals p;
  if (!v) return p;
  if (auto s = v.value<std::string>(); s && *s == "*") {
    p.anyone = true;
    return p;
  }
  const toml::table* t = v.as_table();
  if (t == nullptr)
    bad(origin, key + " must be \"*\" or a table like { uids = [1000], gids = [100] }");
  for (const auto& [k, node] : *t) {
    const std::string name(k.str());
    if (name != "uids" && name != "gids")
      bad(origin, key + "." + name + " is not a known key (uids, gids)");
    const toml::array* a = node.as_array();
    if (a == nullptr) bad(origin, key + "." + name + " must be an array of numbers");
    for (const auto& e : *a) {
      auto id = e.value<std::int64_t>();
      if (!id || *id < 0 || *id > 0xffffffffLL) bad(origin, key + "." + name + " holds a non-id");
      if (name == "uids")
        p.uids.push_back(static_cast<uid_t>(*id));
      else
        p.gids.push_back(static_cast<gid_t>(*id));
    }
  }
  return p;
}

std::uint32_t u32_of(const toml::table& t, const char* key, std::uint32_t dflt,
                     const std::string& origin) {
  const auto node = t[key];
  if (!node) return dflt;
  auto v = node.value<std::int64_t>();
  if (!v || *v <= 0 || *v > 0xffffffffLL)
    bad(origin, std::string(key) + " must be a positive integer");
  return static_cast<std::uint32_t>(*v);
}

}  // namespace

Config parse_config(const std::string& text, const std::string& origin) {
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    std::ostringstream os;
    os << e.description() << " at line " << e.source().begin.line;
    bad(origin, os.str());
  }
  Config c;
  for (const auto& [k, node] : root) {
    const std::string key(k.str());
    if (key != "bus" && key != "socket" && key != "log_level" && key != "defaults" &&
        key != "topic" && key != "max_connections_per_uid" && key != "data_dir")
      bad(origin, "unknown key '" + key +
                      "' (known: bus, socket, data_dir, log_level, max_connections_per_uid, "
                      "defaults, [[topic]])");
  }
  const auto text_of = [&](const char* key, std::string& out) {
    if (!root[key]) return;
    auto v = root[key].value<std::string>();
    if (!v) bad(origin, std::string(key) + " must be a string");
    out = *v;
  };
  text_of("bus", c.bus);
  text_of("socket", c.socket_path);
  text_of("log_level", c.log_level);
  text_of("data_dir", c.data_dir);
  if (root["data_dir"] && (c.data_dir.empty() || c.data_dir[0] != '/'))
    bad(origin, "data_dir '" + c.data_dir + "' must be an absolute path");
  c.max_connections_per_uid =
      u32_of(root, "max_connections_per_uid", c.max_connections_per_uid, origin);
  static const char* const kLevels[] = {"trace", "debug", "info", "warn", "error", "off"};
  if (std::none_of(std::begin(kLevels), std::end(kLevels),
                   [&](const char* l) { return c.log_level == l; }))
    bad(origin,
        "log_level '" + c.log_level + "' is not one of trace, debug, info, warn, error, off");
  if (root["defaults"] && !root["defaults"].as_table())
    bad(origin, "defaults must be a table: [defaults]");
  if (const toml::table* d = root["defaults"].as_table()) {
    for (const auto& [k, node] : *d) {
      const std::string key(k.str());
      if (key != "slot_count" && key != "slot_size" && key != "max_producers" &&
          key != "max_groups" && key != "max_members")
        bad(origin, "defaults." + key +
                        " is not a known key (slot_count, slot_size, max_producers, max_groups, "
                        "max_members)");
    }
    c.defaults.slot_count = u32_of(*d, "slot_count", c.defaults.slot_count, origin);
    c.defaults.slot_size = u32_of(*d, "slot_size", c.defaults.slot_size, origin);
    c.defaults.max_producers = u32_of(*d, "max_producers", c.defaults.max_producers, origin);
    c.defaults.max_groups = u32_of(*d, "max_groups", c.defaults.max_groups, origin);
    c.defaults.max_members = u32_of(*d, "max_members", c.defaults.max_members, origin);
  }
  if (auto topics = root["topic"]) {
    const toml::array* a = topics.as_array();
    if (a == nullptr) bad(origin, "topic must be an array of tables: [[topic]]");
    for (const auto& n : *a) {
      const toml::table* t = n.as_table();
      if (t == nullptr) bad(origin, "each [[topic]] must be a table");
      for (const auto& [k, node] : *t) {
        const std::string key(k.str());
        if (key != "name" && key != "create" && key != "publish" && key != "subscribe")
          bad(origin,
              "[[topic]] key '" + key + "' is not known (name, create, publish, subscribe)");
      }
      TopicRule r;
      auto name = (*t)["name"].value<std::string>();
      if (!name || name->empty())
        bad(origin, "[[topic]] needs name = \"...\" (exact, prefix*, or \"*\")");
      r.pattern = *name;
      const toml::node_view<const toml::node> view{t};
      r.create = principals(view["create"], origin, r.pattern + ".create");
      r.publish = principals(view["publish"], origin, r.pattern + ".publish");
      r.subscribe = principals(view["subscribe"], origin, r.pattern + ".subscribe");
      c.rules.push_back(std::move(r));
    }
  }
  return c;
}

Config load_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(ErrorCode::NotFound, "cannot read configuration file " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse_config(ss.str(), path);
}

}  // namespace shmbus::daemon
