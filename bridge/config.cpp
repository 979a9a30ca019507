// The bridge's TOML configuration (docs/bridge.md): every key is checked, and
// an error names the key and what it should be.
#include <toml++/toml.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "bridge.hpp"
#include "shmbus/error.hpp"

namespace shmbus::bridge {

namespace {

[[noreturn]] void bad(const std::string& origin, const std::string& what) {
  throw Error(ErrorCode::InvalidArgument, origin + ": " + what);
}

void only_keys(const toml::table& t, const std::set<std::string>& known, const std::string& origin,
               const std::string& where) {
  for (const auto& [k, v] : t) {
    (void)v;
    if (known.count(std::string(k.str())) == 0) {
      std::string list;
      for (const std::string& n : known)
        list += (list.empty() ? "" : ", ") + n;
      bad(origin, where + std::string(k.str()) + " is not a known key (" + list + ")");
    }
  }
}

std::string text_of(const toml::table& t, const char* key, const std::string& origin,
                    const std::string& where, bool required, std::string dflt = {}) {
  const auto node = t[key];
  if (!node) {
    if (required) bad(origin, where + key + " is missing");
    return dflt;
  }
  const auto v = node.value<std::string>();
  if (!v || v->empty()) bad(origin, where + key + " must be a non-empty string");
  return *v;
}

std::int64_t int_of(const toml::table& t, const char* key, std::int64_t dflt, std::int64_t lo,
                    std::int64_t hi, const std::string& origin, const std::string& where) {
  const auto node = t[key];
  if (!node) return dflt;
  const auto v = node.value_exact<std::int64_t>();
  if (!v || *v < lo || *v > hi)
    bad(origin, where + key + " must be an integer from " + std::to_string(lo) + " to " +
                    std::to_string(hi));
  return *v;
}

// Seconds, as an integer or a float.
std::chrono::milliseconds seconds_of(const toml::table& t, const char* key,
                                     std::chrono::milliseconds dflt, double lo, double hi,
                                     const std::string& origin, const std::string& where) {
  const auto node = t[key];
  if (!node) return dflt;
  std::optional<double> v;
  if (auto i = node.value_exact<std::int64_t>()) v = static_cast<double>(*i);
  if (auto d = node.value_exact<double>()) v = *d;
  if (!v || !std::isfinite(*v) || *v < lo || *v > hi) {
    std::ostringstream m;
    m << where << key << " must be a number of seconds from " << lo << " to " << hi;
    bad(origin, m.str());
  }
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::llround(*v * 1000)));
}

// A subject JetStream accepts: dot-separated non-empty tokens of printable
// characters without spaces; wildcards only where `wildcards` allows them.
void check_subject(const std::string& s, bool wildcards, const std::string& origin,
                   const std::string& where) {
  if (s.size() > 255) bad(origin, where + "subject is longer than 255 bytes");
  std::size_t start = 0;
  for (;;) {
    const std::size_t dot = s.find('.', start);
    const std::string token = s.substr(start, dot == std::string::npos ? dot : dot - start);
    if (token.empty())
      bad(origin, where + "subject '" + s + "' has an empty token (two dots, or one at an end)");
    for (const char c : token)
      if (c <= ' ' || c == 0x7f)
        bad(origin, where + "subject '" + s + "' holds a space or a control character");
    const bool wild = token == "*" || token == ">";
    if (!wild && (token.find('*') != std::string::npos || token.find('>') != std::string::npos))
      bad(origin, where + "subject '" + s + "': '*' and '>' must be whole tokens");
    if (wild && !wildcards)
      bad(origin, where + "subject '" + s +
                      "' has a wildcard; an [[out]] publishes to one subject: name it fully");
    if (token == ">" && dot != std::string::npos)
      bad(origin, where + "subject '" + s + "': '>' must be the last token");
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
}

void check_name(const std::string& n, const char* what, const std::string& origin,
                const std::string& where) {
  if (n.size() > 255) bad(origin, where + what + " is longer than 255 bytes");
  for (const char c : n)
    if (c <= ' ' || c == 0x7f || c == '.' || c == '*' || c == '>' || c == '/' || c == '\\')
      bad(origin, where + what + " '" + n +
                      "' holds a character JetStream refuses in a name (. * > / \\ or a space)");
}

}  // namespace

std::string stream_name_for(const std::string& subject) {
  std::string n = subject;
  for (char& c : n)
    if (c <= ' ' || c == 0x7f || c == '.' || c == '*' || c == '>' || c == '/' || c == '\\') c = '_';
  return n;
}

Config parse_config(const std::string& text, const std::string& origin) {
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    std::ostringstream m;
    m << "malformed TOML at line " << e.source().begin.line << ", column "
      << e.source().begin.column << ": " << e.description();
    bad(origin, m.str());
  }
  only_keys(root, {"nats", "connect_timeout", "status_interval", "out", "in"}, origin, "");
  Config c;
  const auto nats = root["nats"];
  if (!nats) bad(origin, "nats is missing: nats = [\"nats://127.0.0.1:4222\"]");
  if (auto one = nats.value<std::string>()) {
    c.servers.push_back(*one);
  } else if (const toml::array* a = nats.as_array()) {
    for (const auto& e : *a) {
      auto s = e.value<std::string>();
      if (!s || s->empty()) bad(origin, "nats must be an array of server URLs (strings)");
      c.servers.push_back(*s);
    }
  } else {
    bad(origin, "nats must be a server URL or an array of them");
  }
  if (c.servers.empty()) bad(origin, "nats names no server");
  for (const std::string& s : c.servers)
    if (s.find("://") == std::string::npos && s.find(':') == std::string::npos)
      bad(origin, "nats entry '" + s + "' is not a URL like nats://host:4222");
  c.connect_timeout = seconds_of(root, "connect_timeout", c.connect_timeout, 0.1, 3600, origin, "");
  c.status_interval = seconds_of(root, "status_interval", c.status_interval, 0, 86400, origin, "");

  const auto tables = [&](const char* key) -> std::vector<const toml::table*> {
    std::vector<const toml::table*> out;
    const auto node = root[key];
    if (!node) return out;
    const toml::array* a = node.as_array();
    if (a == nullptr)
      bad(origin, std::string(key) + " must be an array of tables: write [[" + key + "]]");
    for (const auto& e : *a) {
      const toml::table* t = e.as_table();
      if (t == nullptr) bad(origin, std::string(key) + " must hold tables: write [[" + key + "]]");
      out.push_back(t);
    }
    return out;
  };
  std::size_t i = 0;
  for (const toml::table* t : tables("out")) {
    const std::string where = "[[out]] #" + std::to_string(++i) + ": ";
    only_keys(
        *t,
        {"topic", "subject", "group", "stream", "replicas", "duplicate_window", "max_in_flight"},
        origin, where);
    OutRoute r;
    r.topic = text_of(*t, "topic", origin, where, true);
    r.subject = text_of(*t, "subject", origin, where, true);
    check_subject(r.subject, false, origin, where);
    r.group = text_of(*t, "group", origin, where, false, r.group);
    r.stream = text_of(*t, "stream", origin, where, false, stream_name_for(r.subject));
    check_name(r.stream, "stream", origin, where);
    r.replicas = static_cast<int>(int_of(*t, "replicas", 1, 1, 5, origin, where));
    const auto window =
        seconds_of(*t, "duplicate_window", std::chrono::minutes(2), 120, 86400, origin, where);
    r.duplicate_window = std::chrono::duration_cast<std::chrono::seconds>(window);
    r.max_in_flight =
        static_cast<std::uint32_t>(int_of(*t, "max_in_flight", 4096, 1, 65536, origin, where));
    c.outs.push_back(std::move(r));
  }
  i = 0;
  for (const toml::table* t : tables("in")) {
    const std::string where = "[[in]] #" + std::to_string(++i) + ": ";
    only_keys(*t, {"subject", "topic", "durable", "stream", "replicas", "batch"}, origin, where);
    InRoute r;
    r.subject = text_of(*t, "subject", origin, where, true);
    check_subject(r.subject, true, origin, where);
    r.topic = text_of(*t, "topic", origin, where, true);
    r.durable = text_of(*t, "durable", origin, where, true);
    check_name(r.durable, "durable", origin, where);
    r.stream = text_of(*t, "stream", origin, where, false, stream_name_for(r.subject));
    check_name(r.stream, "stream", origin, where);
    r.replicas = static_cast<int>(int_of(*t, "replicas", 1, 1, 5, origin, where));
    r.batch = static_cast<std::uint32_t>(int_of(*t, "batch", 256, 1, 4096, origin, where));
    c.ins.push_back(std::move(r));
  }
  if (c.outs.empty() && c.ins.empty())
    bad(origin, "nothing to bridge: add an [[out]] or an [[in]] table");
  return c;
}

Config load_config(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Error(ErrorCode::NotFound, "cannot read the configuration file " + path);
  std::ostringstream s;
  s << f.rdbuf();
  return parse_config(s.str(), path);
}

}  // namespace shmbus::bridge
