// The harness's output: labels for figures (sizes, durations, rates, ratios),
// a Markdown report that goes to stdout and into a file, and JSON escaping.
#pragma once

#include <cstddef>
#include <string>

namespace shmbus_bench {

std::string strprintf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

std::string size_label(std::size_t n);                        // 64 B, 4 KiB, 1 MiB
std::string ns_label(double ns);                              // 85 ns, 1.28 us, 35.6 us, 2.10 ms
std::string group_digits(double v);                           // 1234567 -> "1,234,567"
std::string rate_label(double per_second, const char* unit);  // 17.08 Mmsg/s
std::string ratio_label(double r);                            // 1.50x, 12.3x, 1/9x

std::string json_escape(const std::string& s);

// Markdown: every line goes to stdout as it is written (progress goes to
// stderr) and is kept, so that the whole report can be saved at the end.
class Report {
 public:
  void out(const char* fmt, ...) __attribute__((format(printf, 2, 3)));
  void flush() const;
  // Writes what was printed so far to `path`; false (errno set) if it cannot.
  [[nodiscard]] bool save(const std::string& path) const;
  [[nodiscard]] const std::string& text() const noexcept { return md_; }

 private:
  std::string md_;
};

}  // namespace shmbus_bench
