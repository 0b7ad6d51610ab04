#include "csrc/data/text_input.h"

#include <sys/stat.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstring>

#include "csrc/core/logging.h"

namespace loom::data {

namespace {
constexpr size_t kBufferBytes = size_t{1} << 20;
}

StatusOr<std::unique_ptr<LineReader>> LineReader::Open(const std::string& path) {
  std::unique_ptr<LineReader> r(new LineReader());
  r->path_ = path;
  r->file_ = std::fopen(path.c_str(), "rb");
  if (r->file_ == nullptr) return NotFoundError(path + ": cannot open: " + std::strerror(errno));
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) r->file_bytes_ = st.st_size;
  r->buf_.resize(kBufferBytes);
  return r;
}

LineReader::~LineReader() {
  if (file_ != nullptr) std::fclose(file_);
}

bool LineReader::Fill() {
  if (eof_) return false;
  const size_t n = std::fread(buf_.data(), 1, buf_.size(), file_);
  if (n == 0) {
    if (std::ferror(file_)) {
      status_ = DataLossError(path_ + ": read error after line " + std::to_string(line_number_) +
                              ": " + std::strerror(errno));
    }
    eof_ = true;
    return false;
  }
  begin_ = 0;
  end_ = n;
  return true;
}

bool LineReader::Next(std::string_view* line) {
  carry_.clear();
  bool have_carry = false;
  while (true) {
    if (begin_ == end_ && !Fill()) {
      if (!have_carry) return false;
      *line = carry_;  // the last line, without a newline
      break;
    }
    const char* start = buf_.data() + begin_;
    const void* nl = std::memchr(start, '\n', end_ - begin_);
    if (nl != nullptr) {
      const size_t len = static_cast<const char*>(nl) - start;
      consumed_ += len + 1;
      begin_ += len + 1;
      if (!have_carry) {
        *line = std::string_view(start, len);
      } else {
        carry_.append(start, len);
        *line = carry_;
      }
      break;
    }
    carry_.append(start, end_ - begin_);
    consumed_ += end_ - begin_;
    begin_ = end_;
    have_carry = true;
  }
  if (!line->empty() && line->back() == '\r') line->remove_suffix(1);
  ++line_number_;
  return true;
}

Status SplitFields(std::string_view line, char delim, std::vector<std::string_view>* fields,
                   std::vector<std::string>* scratch) {
  fields->clear();
  scratch->clear();
  std::vector<size_t> doubled_fields;  // indices of fields whose text lives in scratch
  size_t i = 0;
  const size_t n = line.size();
  while (true) {
    if (i < n && line[i] == '"') {
      // Quoted field.
      size_t j = i + 1;
      bool doubled = false;
      while (true) {
        if (j >= n) {
          return InvalidArgumentError("unterminated quote in field " +
                                      std::to_string(fields->size() + 1));
        }
        if (line[j] == '"') {
          if (j + 1 < n && line[j + 1] == '"') {
            doubled = true;
            j += 2;
            continue;
          }
          break;
        }
        ++j;
      }
      std::string_view inner = line.substr(i + 1, j - i - 1);
      if (doubled) {
        std::string s;
        for (size_t k = 0; k < inner.size(); ++k) {
          s.push_back(inner[k]);
          if (inner[k] == '"') ++k;
        }
        scratch->push_back(std::move(s));
        doubled_fields.push_back(fields->size());
      }
      fields->push_back(inner);
      i = j + 1;
      if (i == n) break;
      if (line[i] != delim) {
        return InvalidArgumentError("text after the closing quote of field " +
                                    std::to_string(fields->size()));
      }
      ++i;
      if (i == n) {
        fields->push_back(std::string_view());
        break;
      }
      continue;
    }
    const size_t next = line.find(delim, i);
    if (next == std::string_view::npos) {
      fields->push_back(line.substr(i));
      break;
    }
    fields->push_back(line.substr(i, next - i));
    i = next + 1;
  }
  // Point doubled-quote fields at their unescaped copies (scratch no longer grows).
  for (size_t k = 0; k < doubled_fields.size(); ++k) (*fields)[doubled_fields[k]] = (*scratch)[k];
  return Status::Ok();
}

void SplitList(std::string_view text, char sep, std::vector<std::string_view>* out) {
  out->clear();
  if (text.empty()) return;
  size_t i = 0;
  while (true) {
    const size_t next = text.find(sep, i);
    if (next == std::string_view::npos) {
      out->push_back(text.substr(i));
      return;
    }
    out->push_back(text.substr(i, next - i));
    i = next + 1;
  }
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

Status ParseInt64(std::string_view text, int base, int64_t* out) {
  std::string_view t = Trim(text);
  if (base == 16 && t.size() > 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'X')) t.remove_prefix(2);
  if (!t.empty() && t.front() == '+') t.remove_prefix(1);
  const auto r = std::from_chars(t.data(), t.data() + t.size(), *out, base);
  if (t.empty() || r.ec != std::errc() || r.ptr != t.data() + t.size()) {
    return InvalidArgumentError("'" + std::string(text) + "' is not " +
                                (base == 16 ? "a hexadecimal" : "an") + " integer" +
                                (r.ec == std::errc::result_out_of_range ? " in int64 range" : ""));
  }
  return Status::Ok();
}

Status ParseDouble(std::string_view text, double* out) {
  std::string_view t = Trim(text);
  if (!t.empty() && t.front() == '+') t.remove_prefix(1);
  const auto r = std::from_chars(t.data(), t.data() + t.size(), *out);
  if (t.empty() || r.ec != std::errc() || r.ptr != t.data() + t.size() || !std::isfinite(*out)) {
    return InvalidArgumentError("'" + std::string(text) + "' is not a finite number");
  }
  return Status::Ok();
}

std::string EscapeTsv(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

std::string UnescapeTsv(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      const char c = s[++i];
      out.push_back(c == 't' ? '\t' : c == 'n' ? '\n' : c == 'r' ? '\r' : c);
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::string HumanCount(double n) {
  char buf[32];
  if (n >= 1e9) {
    std::snprintf(buf, sizeof(buf), "%.2fG", n / 1e9);
  } else if (n >= 1e6) {
    std::snprintf(buf, sizeof(buf), "%.2fM", n / 1e6);
  } else if (n >= 1e4) {
    std::snprintf(buf, sizeof(buf), "%.0fk", n / 1e3);
  } else {
    std::snprintf(buf, sizeof(buf), "%.0f", n);
  }
  return buf;
}

Progress::Progress(std::string what, int64_t total, double interval_seconds)
    : what_(std::move(what)), total_(total), interval_(interval_seconds) {
  start_ = last_ = Now();
}

double Progress::Now() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void Progress::Update(int64_t rows, int64_t done) {
  const double now = Now();
  if (now - last_ < interval_) return;
  last_ = now;
  const double elapsed = now - start_;
  const double rate = rows / std::max(elapsed, 1e-9);
  char buf[160];
  if (total_ > 0 && done > 0) {
    const double frac = std::min(1.0, static_cast<double>(done) / total_);
    const double eta = elapsed * (1.0 - frac) / std::max(frac, 1e-9);
    std::snprintf(buf, sizeof(buf), "%s rows, %s rows/s, %.1f%%, ETA %d:%02d",
                  HumanCount(rows).c_str(), HumanCount(rate).c_str(), 100.0 * frac,
                  static_cast<int>(eta) / 60, static_cast<int>(eta) % 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%s rows, %s rows/s", HumanCount(rows).c_str(),
                  HumanCount(rate).c_str());
  }
  LOOM_LOG_RANK0(INFO) << what_ << ": " << buf;
}

void Progress::Finish(int64_t rows) {
  const double elapsed = Now() - start_;
  char buf[128];
  std::snprintf(buf, sizeof(buf), "%lld rows in %.1f s (%s rows/s)", static_cast<long long>(rows),
                elapsed, HumanCount(rows / std::max(elapsed, 1e-9)).c_str());
  LOOM_LOG_RANK0(INFO) << what_ << ": done, " << buf;
}

}  // namespace loom::data
