// What travels in NATS headers: the message id, keys and properties as text.
// Everything read back is untrusted (it came over the network): each decoder
// bounds what it accepts and says no rather than guess.
#include <algorithm>
#include <charconv>
#include <cstdio>

#include "bridge.hpp"

namespace shmbus::bridge {

std::string message_id_prefix(const std::string& bus, const std::string& topic,
                              std::uint64_t generation) {
  char gen[24];
  std::snprintf(gen, sizeof gen, "/%llx/", static_cast<unsigned long long>(generation));
  return bus + "/" + topic + gen;
}

std::string message_id(const std::string& bus, const std::string& topic, std::uint64_t generation,
                       std::uint32_t partition, std::uint64_t offset) {
  return message_id_prefix(bus, topic, generation) + std::to_string(partition) + "/" +
         std::to_string(offset);
}

namespace {
// The unsigned decimal right after `"name":` (spaces allowed around ':'), or
// nullopt. Reads at most 20 digits.
std::optional<std::uint64_t> json_number(std::string_view json, std::string_view quoted_name) {
  const std::size_t at = json.find(quoted_name);
  if (at == std::string_view::npos) return std::nullopt;
  std::size_t i = at + quoted_name.size();
  while (i < json.size() && json[i] == ' ')
    ++i;
  if (i >= json.size() || json[i] != ':') return std::nullopt;
  ++i;
  while (i < json.size() && json[i] == ' ')
    ++i;
  std::uint64_t v = 0;
  const auto r = std::from_chars(json.data() + i, json.data() + std::min(json.size(), i + 20), v);
  if (r.ec != std::errc{}) return std::nullopt;
  return v;
}
}  // namespace

PubAck parse_pub_ack(std::string_view json) noexcept {
  PubAck a;
  if (json.size() > kMaxPubAck || json.size() < 2 || json.front() != '{' || json.back() != '}')
    return a;
  if (json.find("\"error\"") != std::string_view::npos) {
    const auto code = json_number(json, "\"err_code\"");
    a.err_code = code && *code <= 1'000'000 ? static_cast<int>(*code) : 0;
    return a;
  }
  const auto seq = json_number(json, "\"seq\"");
  if (!seq || json.find("\"stream\"") == std::string_view::npos) return a;
  a.ok = true;
  a.seq = *seq;
  const std::size_t d = json.find("\"duplicate\"");
  if (d != std::string_view::npos) {
    std::string_view rest = json.substr(d + 11);
    while (!rest.empty() && (rest.front() == ' ' || rest.front() == ':'))
      rest.remove_prefix(1);
    a.duplicate = rest.starts_with("true");
  }
  return a;
}

bool parse_ack_token(std::string_view token, std::uint32_t& partition,
                     std::uint64_t& offset) noexcept {
  const std::size_t dot = token.find('.');
  if (dot == std::string_view::npos || dot == 0 || dot + 1 >= token.size()) return false;
  const char* end = token.data() + token.size();
  const auto rp = std::from_chars(token.data(), token.data() + dot, partition);
  const auto ro = std::from_chars(token.data() + dot + 1, end, offset);
  return rp.ec == std::errc{} && rp.ptr == token.data() + dot && ro.ec == std::errc{} &&
         ro.ptr == end;
}

bool parse_message_id(std::string_view id, std::uint32_t& partition,
                      std::uint64_t& offset) noexcept {
  const std::size_t b = id.rfind('/');
  if (b == std::string_view::npos || b == 0) return false;
  const std::size_t a = id.rfind('/', b - 1);
  if (a == std::string_view::npos) return false;
  const std::string_view p = id.substr(a + 1, b - a - 1), o = id.substr(b + 1);
  const auto rp = std::from_chars(p.data(), p.data() + p.size(), partition);
  const auto ro = std::from_chars(o.data(), o.data() + o.size(), offset);
  return rp.ec == std::errc{} && rp.ptr == p.data() + p.size() && ro.ec == std::errc{} &&
         ro.ptr == o.data() + o.size() && !p.empty() && !o.empty();
}

namespace {
bool unreserved(unsigned char c) noexcept {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.' || c == '~';
}
int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}
std::span<const std::byte> bytes_of(std::string_view s) noexcept {
  return std::as_bytes(std::span(s.data(), s.size()));
}
}  // namespace

std::string percent_encode(std::span<const std::byte> bytes) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(bytes.size());
  for (const std::byte b : bytes) {
    const auto c = static_cast<unsigned char>(b);
    if (unreserved(c)) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

std::optional<std::string> percent_decode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      if (!unreserved(static_cast<unsigned char>(text[i]))) return std::nullopt;
      out.push_back(text[i]);
      continue;
    }
    if (i + 2 >= text.size()) return std::nullopt;
    const int hi = hex_value(text[i + 1]), lo = hex_value(text[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

std::string encode_properties(const Properties& props) {
  std::string out;
  for (const Property& p : props) {
    if (!out.empty()) out.push_back('&');
    out += percent_encode(bytes_of(p.name));
    out.push_back('=');
    out += percent_encode(bytes_of(p.value));
  }
  return out;
}

std::optional<std::vector<std::pair<std::string, std::string>>> decode_properties(
    std::string_view text) {
  std::vector<std::pair<std::string, std::string>> out;
  if (text.empty()) return out;
  std::size_t encoded = 0;  // as Properties would encode them: 4 bytes a pair + name + value
  std::size_t start = 0;
  for (;;) {
    const std::size_t amp = text.find('&', start);
    const std::string_view pair =
        text.substr(start, amp == std::string_view::npos ? amp : amp - start);
    const std::size_t eq = pair.find('=');
    if (eq == std::string_view::npos) return std::nullopt;
    auto name = percent_decode(pair.substr(0, eq));
    auto value = percent_decode(pair.substr(eq + 1));
    if (!name || !value || name->empty() || name->size() > kMaxPropertyName) return std::nullopt;
    encoded += 4 + name->size() + value->size();
    out.emplace_back(std::move(*name), std::move(*value));
    if (out.size() > kMaxProperties || encoded > kMaxPropertyBytes) return std::nullopt;
    if (amp == std::string_view::npos) break;
    start = amp + 1;
  }
  return out;
}

}  // namespace shmbus::bridge
