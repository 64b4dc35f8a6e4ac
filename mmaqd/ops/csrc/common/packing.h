// Sub-byte weight codes as mmaqd/ops/packing.py stores them: a k-bit code in a 2-, 4- or 8-bit field, the first
// code of a byte in its low bits, each output channel's row starting on a byte boundary.
#pragma once
#include <cstdint>

#include "host_device.h"

namespace mmaqd {

MMAQD_HOST_DEVICE inline int field_bits(int bits) { return bits <= 2 ? 2 : (bits <= 4 ? 4 : 8); }

// the k-th code of a packed row
MMAQD_HOST_DEVICE inline int unpack_code(const uint8_t* row, int64_t k, int fb) {
  const int per_byte = 8 / fb;
  return (row[k / per_byte] >> ((k % per_byte) * fb)) & ((1 << fb) - 1);
}

}  // namespace mmaqd
