#ifndef WARREN_CRC32C_HW_H
#define WARREN_CRC32C_HW_H

#include <stddef.h>
#include <stdint.h>

/// Whether this CPU has the CRC-32C instruction (x86-64 SSE 4.2; on other CPUs: never, and the table version runs).
int warren_crc32c_hardware_available(void);

/// CRC-32C of `bytes` with the CPU's instruction, continuing from `crc` (the register value: already inverted).
/// Call only when warren_crc32c_hardware_available() is true.
uint32_t warren_crc32c_hardware(uint32_t crc, const void *bytes, size_t count);

#endif
