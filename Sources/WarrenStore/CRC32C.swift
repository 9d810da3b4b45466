import CCRC32C

/// CRC-32C (Castagnoli), the checksum of every stored record: it detects torn and corrupted records at recovery.
///
/// Written here on purpose: none of the ecosystem packages this project may use provides CRC-32C (zlib's CRC-32,
/// in compress-nio, is another polynomial). The CPU's instruction (SSE 4.2) when there is one: it was 16% of the
/// broker's CPU for persistent 1 KiB messages with the table version; slicing-by-8 tables otherwise, computed once.
public enum CRC32C {
  /// Whether the CPU's CRC-32C instruction is used.
  public static let usesHardware = warren_crc32c_hardware_available() != 0
  static let tables: [[UInt32]] = {
    var tables = [[UInt32]](repeating: [UInt32](repeating: 0, count: 256), count: 8)
    for n in 0..<256 {
      var crc = UInt32(n)
      for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
      tables[0][n] = crc
    }
    for n in 0..<256 {
      var crc = tables[0][n]
      for k in 1..<8 {
        crc = tables[0][Int(crc & 0xFF)] ^ (crc >> 8)
        tables[k][n] = crc
      }
    }
    return tables
  }()

  /// The checksum of `bytes`, continuing from `crc` (0 to start).
  public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
    if self.usesHardware {
      guard let base = bytes.baseAddress else { return crc }
      return ~warren_crc32c_hardware(~crc, base, bytes.count)
    }
    return self.tableChecksum(bytes, continuing: crc)
  }

  /// The table version (CPUs without the instruction; tests compare the two).
  static func tableChecksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
    var crc = ~crc
    var index = 0
    let count = bytes.count
    self.tables.withUnsafeBufferPointer { t in
      let t0 = t[0]
      let t1 = t[1]
      let t2 = t[2]
      let t3 = t[3]
      let t4 = t[4]
      let t5 = t[5]
      let t6 = t[6]
      let t7 = t[7]
      while index + 8 <= count {
        let low =
          crc
          ^ (UInt32(bytes[index]) | UInt32(bytes[index + 1]) << 8 | UInt32(bytes[index + 2]) << 16
            | UInt32(bytes[index + 3]) << 24)
        crc =
          t7[Int(low & 0xFF)] ^ t6[Int((low >> 8) & 0xFF)] ^ t5[Int((low >> 16) & 0xFF)] ^ t4[Int(low >> 24)]
          ^ t3[Int(bytes[index + 4])] ^ t2[Int(bytes[index + 5])] ^ t1[Int(bytes[index + 6])]
          ^ t0[Int(bytes[index + 7])]
        index += 8
      }
      while index < count {
        crc = t0[Int((crc ^ UInt32(bytes[index])) & 0xFF)] ^ (crc >> 8)
        index += 1
      }
    }
    return ~crc
  }

  /// The checksum of a byte array.
  public static func checksum(_ bytes: [UInt8]) -> UInt32 {
    bytes.withUnsafeBytes { self.checksum($0) }
  }
}
