// CRC-32C (Castagnoli, polynomial 0x1EDC6F41, reflected 0x82F63B78), the checksum of every
// header, block and footer of the Loom log format. Uses the SSE4.2 crc32 instruction when the
// CPU has it and a slicing-by-8 table otherwise; both give the same value.
//   Crc32c("123456789") == 0xE3069283 (the standard check value).
#ifndef LOOM_DATA_CRC32C_H_
#define LOOM_DATA_CRC32C_H_

#include <cstddef>
#include <cstdint>

namespace loom::data {

// CRC of data[0..n) continuing from `crc` (the CRC of the bytes before; 0 to start).
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n);
inline uint32_t Crc32c(const void* data, size_t n) { return Crc32cExtend(0, data, n); }

// The portable table version, exposed so tests can check the hardware path against it.
uint32_t Crc32cExtendPortable(uint32_t crc, const void* data, size_t n);

}  // namespace loom::data

#endif  // LOOM_DATA_CRC32C_H_
