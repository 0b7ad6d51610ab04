// Writing JSON text by hand (safetensors headers, metrics.jsonl, data-set reports): string
// escaping per RFC 8259. Bytes >= 0x80 pass through unchanged (UTF-8 stays UTF-8).
#ifndef LOOM_CORE_JSON_H_
#define LOOM_CORE_JSON_H_

#include <string>
#include <string_view>

namespace loom {

// The body of a JSON string: '"' and '\' escaped, \n \t \r as such, other control characters
// as \u00XX.
std::string JsonEscape(std::string_view s);

// A JSON string literal: JsonEscape(s) in double quotes.
std::string JsonQuote(std::string_view s);

}  // namespace loom

#endif  // LOOM_CORE_JSON_H_
