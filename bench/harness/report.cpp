#include "report.hpp"

#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <fstream>

namespace shmbus_bench {

std::string strprintf(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char buf[1024];
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

std::string size_label(std::size_t n) {
  if (n >= (1u << 20) && n % (1u << 20) == 0) return std::to_string(n >> 20) + " MiB";
  if (n >= 1024 && n % 1024 == 0) return std::to_string(n >> 10) + " KiB";
  return std::to_string(n) + " B";
}

std::string ns_label(double ns) {
  if (ns >= 10'000'000) return strprintf("%.0f ms", ns / 1e6);
  if (ns >= 1'000'000) return strprintf("%.2f ms", ns / 1e6);
  if (ns >= 10'000) return strprintf("%.1f us", ns / 1e3);
  if (ns >= 1'000) return strprintf("%.2f us", ns / 1e3);
  return strprintf("%.0f ns", ns);
}

std::string group_digits(double v) {
  const long long n = std::llround(v);
  const std::string digits = std::to_string(n < 0 ? -n : n);
  std::string s = n < 0 ? "-" : "";
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) s += ',';
    s += digits[i];
  }
  return s;
}

std::string rate_label(double per_second, const char* unit) {
  if (per_second >= 1e9) return strprintf("%.2f G%s", per_second / 1e9, unit);
  if (per_second >= 1e6) return strprintf("%.2f M%s", per_second / 1e6, unit);
  if (per_second >= 1e3) return strprintf("%.1f k%s", per_second / 1e3, unit);
  return strprintf("%.0f %s", per_second, unit);
}

std::string ratio_label(double r) {
  if (!(r > 0) || !std::isfinite(r)) return "-";
  if (r < 0.1) return strprintf("1/%.0fx", 1.0 / r);  // e.g. zero-copy against a 1 MiB memcpy
  if (r >= 100) return strprintf("%.0fx", r);
  if (r >= 10) return strprintf("%.1fx", r);
  return strprintf("%.2fx", r);
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (const char c : s) {
    switch (c) {
      case '"':
        o += "\\\"";
        break;
      case '\\':
        o += "\\\\";
        break;
      case '\n':
        o += "\\n";
        break;
      case '\t':
        o += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20)
          o += strprintf("\\u%04x", c);
        else
          o += c;
    }
  }
  return o;
}

void Report::out(const char* fmt, ...) {
  char buf[4096];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  std::fputs(buf, stdout);
  md_ += buf;
}

void Report::flush() const {
  std::fflush(stdout);
}

bool Report::save(const std::string& path) const {
  std::ofstream f(path);
  f << md_;
  f.close();
  return static_cast<bool>(f);
}

}  // namespace shmbus_bench
