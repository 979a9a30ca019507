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

void append_position(std::string& out, std::uint32_t partition, char separator,
                     std::uint64_t offset) {
  char buf[48];  // 10 + 1 + 20 digits
  char* e = std::to_chars(buf, buf + 10, partition).ptr;
  *e++ = separator;
  e = std::to_chars(e, buf + sizeof buf, offset).ptr;
  out.append(buf, e);
}

std::string message_id(const std::string& bus, const std::string& topic, std::uint64_t generation,
                       std::uint32_t partition, std::uint64_t offset) {
  std::string id = message_id_prefix(bus, topic, generation);
  append_position(id, partition, '/', offset);
  return id;
}

namespace {
// Reads "<partition><separator><offset>", both whole unsigned decimals.
bool parse_position(std::string_view text, char separator, std::uint32_t& partition,
                    std::uint64_t& offset) noexcept {
  const std::size_t at = text.find(separator);
  if (at == std::string_view::npos || at == 0 || at + 1 >= text.size()) return false;
  const char* end = text.data() + text.size();
  const auto rp = std::from_chars(text.data(), text.data() + at, partition);
  const auto ro = std::from_chars(text.data() + at + 1, end, offset);
  return rp.ec == std::errc{} && rp.ptr == text.data() + at && ro.ec == std::errc{} &&
         ro.ptr == end;
}
}  // namespace

namespace {
// A strict reader of small JSON objects, enough for JetStream's publish acks:
// keys are matched as keys (never inside values), numbers are whole unsigned
// decimals that fit 64 bits, and anything it does not follow fails the whole
// read. Nesting is bounded; every read checks the end of the text.
class JsonScan {
 public:
  explicit JsonScan(std::string_view t) noexcept : t_(t) {}

  // Walks an object, calling member(key) with the scan at the member's value;
  // member reads (or skips) the value and says whether it could.
  template <class F>
  bool object(F&& member) noexcept {
    if (!eat('{')) return false;
    if (eat('}')) return true;
    for (;;) {
      std::string_view key;
      if (!string(key) || !eat(':') || !member(key)) return false;
      if (eat('}')) return true;
      if (!eat(',')) return false;
    }
  }
  // A string's raw contents (escapes left as they are: the keys and values
  // compared here have none).
  bool string(std::string_view& out) noexcept {
    ws();
    if (i_ >= t_.size() || t_[i_] != '"') return false;
    const std::size_t start = ++i_;
    while (i_ < t_.size()) {
      const auto c = static_cast<unsigned char>(t_[i_]);
      if (c == '"') {
        out = t_.substr(start, i_ - start);
        ++i_;
        return true;
      }
      if (c < 0x20) return false;
      i_ += c == '\\' ? 2 : 1;
    }
    return false;
  }
  bool number(std::uint64_t& v) noexcept {
    ws();
    const char* end = t_.data() + t_.size();
    const auto r = std::from_chars(t_.data() + i_, end, v);  // no sign, no overflow
    if (r.ec != std::errc{}) return false;
    i_ = static_cast<std::size_t>(r.ptr - t_.data());
    return i_ >= t_.size() || (t_[i_] != '.' && t_[i_] != 'e' && t_[i_] != 'E');
  }
  bool literal(std::string_view word) noexcept {
    ws();
    if (!t_.substr(i_).starts_with(word)) return false;
    i_ += word.size();
    return true;
  }
  // Skips one value of any kind, at most `depth` levels deep.
  bool skip(int depth) noexcept {
    ws();
    if (i_ >= t_.size()) return false;
    const char c = t_[i_];
    if (c == '"') {
      std::string_view ignored;
      return string(ignored);
    }
    if (c == '{') return depth > 0 && object([&](std::string_view) { return skip(depth - 1); });
    if (c == '[') {
      if (depth == 0) return false;
      ++i_;
      if (eat(']')) return true;
      for (;;) {
        if (!skip(depth - 1)) return false;
        if (eat(']')) return true;
        if (!eat(',')) return false;
      }
    }
    if (literal("true") || literal("false") || literal("null")) return true;
    const std::size_t start = i_;  // a number of any form: its characters
    while (i_ < t_.size() &&
           std::string_view("+-.eE0123456789").find(t_[i_]) != std::string_view::npos)
      ++i_;
    return i_ > start;
  }
  [[nodiscard]] bool at_end() noexcept {
    ws();
    return i_ == t_.size();
  }

 private:
  void ws() noexcept {
    while (i_ < t_.size() && (t_[i_] == ' ' || t_[i_] == '\t' || t_[i_] == '\n' || t_[i_] == '\r'))
      ++i_;
  }
  bool eat(char c) noexcept {
    ws();
    if (i_ >= t_.size() || t_[i_] != c) return false;
    ++i_;
    return true;
  }
  std::string_view t_;
  std::size_t i_ = 0;
};
constexpr int kMaxJsonDepth = 4;
}  // namespace

PubAck parse_pub_ack(std::string_view json) noexcept {
  PubAck a;
  // The server writes it compactly: not even whitespace around it.
  if (json.size() > kMaxPubAck || json.size() < 2 || json.front() != '{' || json.back() != '}')
    return a;
  JsonScan j(json);
  bool stream = false, seq = false, error = false, duplicate = false, code = false;
  std::uint64_t seq_v = 0, code_v = 0;
  const bool read = j.object([&](std::string_view key) {
    if (key == "stream") {
      std::string_view v;
      return stream = j.string(v);
    }
    if (key == "seq") return seq = j.number(seq_v);
    if (key == "duplicate") {
      if (j.literal("true")) return duplicate = true;
      return j.literal("false");
    }
    if (key == "error") {
      error = true;
      return j.object([&](std::string_view k) {
        if (k == "err_code") return code = j.number(code_v);
        return j.skip(kMaxJsonDepth);
      });
    }
    return j.skip(kMaxJsonDepth);
  }) && j.at_end();
  if (!read) return a;
  if (error) {
    a.err_code = code && code_v <= 1'000'000 ? static_cast<int>(code_v) : 0;
    return a;
  }
  if (!stream || !seq) return a;
  a.ok = true;
  a.seq = seq_v;
  a.duplicate = duplicate;
  return a;
}

bool parse_ack_token(std::string_view token, std::uint32_t& partition,
                     std::uint64_t& offset) noexcept {
  return parse_position(token, '.', partition, offset);
}

bool parse_message_id(std::string_view id, std::uint32_t& partition,
                      std::uint64_t& offset) noexcept {
  const std::size_t b = id.rfind('/');
  if (b == std::string_view::npos || b == 0) return false;
  const std::size_t a = id.rfind('/', b - 1);
  if (a == std::string_view::npos) return false;
  return parse_position(id.substr(a + 1), '/', partition, offset);  // "<p>/<o>": one '/' left
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
