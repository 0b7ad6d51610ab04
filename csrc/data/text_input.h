// Line-oriented text input for the converters: a buffered line reader that knows its file
// and line number (for "file:line" errors), field splitting with optional double quotes, and
// strict number parsing (the whole field must be the number; nothing is silently truncated).
#ifndef LOOM_DATA_TEXT_INPUT_H_
#define LOOM_DATA_TEXT_INPUT_H_

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "csrc/core/status.h"

namespace loom::data {

class LineReader {
 public:
  static StatusOr<std::unique_ptr<LineReader>> Open(const std::string& path);
  ~LineReader();

  // Next line without its "\n" (and a "\r" before it). The view is valid until the next call.
  // Returns false at the end of the file or on a read error (then status() is not OK).
  bool Next(std::string_view* line);
  const Status& status() const { return status_; }
  int64_t line_number() const { return line_number_; }  // 1-based, of the last line returned
  int64_t bytes_consumed() const { return consumed_; }
  int64_t file_bytes() const { return file_bytes_; }
  const std::string& path() const { return path_; }
  // "path:line", for messages.
  std::string Where() const { return path_ + ":" + std::to_string(line_number_); }

 private:
  LineReader() = default;
  bool Fill();

  std::string path_;
  FILE* file_ = nullptr;
  std::vector<char> buf_;
  size_t begin_ = 0, end_ = 0;
  bool eof_ = false;
  std::string carry_;
  int64_t line_number_ = 0;
  int64_t consumed_ = 0;
  int64_t file_bytes_ = 0;
  Status status_;
};

// Splits `line` at `delim`. A field that starts with '"' runs to the next unpaired '"' (which
// must be followed by the delimiter or the end); "" inside it is one quote. Views point into
// `line` or, for fields with doubled quotes, into `scratch`. Returns InvalidArgument for an
// unterminated quote or text after a closing quote.
Status SplitFields(std::string_view line, char delim, std::vector<std::string_view>* fields,
                   std::vector<std::string>* scratch);

// Splits a value list ("1^2^3") at `sep`; an empty string gives no values.
void SplitList(std::string_view text, char sep, std::vector<std::string_view>* out);

// Strict parsers: ASCII spaces around the value are ignored; anything else that is not part
// of the number is an error. Messages quote the text.
Status ParseInt64(std::string_view text, int base, int64_t* out);
Status ParseDouble(std::string_view text, double* out);

// Removes leading and trailing ASCII spaces and tabs.
std::string_view Trim(std::string_view s);

// Escaping for one-value-per-field TSV files (vocabularies): \\, \t, \n, \r.
std::string EscapeTsv(std::string_view s);
std::string UnescapeTsv(std::string_view s);

// Periodic progress lines on rank 0: "<what>: 1.23M rows, 845k rows/s, 37.1%, ETA 0:45".
class Progress {
 public:
  // `total` is the amount of work in the unit passed to Update (bytes, rows); 0 = unknown.
  Progress(std::string what, int64_t total, double interval_seconds = 5.0);
  // Logs when the interval has passed since the last line.
  void Update(int64_t rows, int64_t done);
  // Logs the final line: rows, elapsed time, rows/s.
  void Finish(int64_t rows);

 private:
  double Now() const;
  std::string what_;
  int64_t total_;
  double interval_;
  double start_, last_;
};

// "1.23M", "845k", "912".
std::string HumanCount(double n);

}  // namespace loom::data

#endif  // LOOM_DATA_TEXT_INPUT_H_
