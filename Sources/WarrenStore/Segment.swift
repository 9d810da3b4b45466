/// The layout of a segment file: an 8-byte magic, then records, each a length (u32, little endian), the CRC-32C of
/// the payload (u32) and the payload. A record is whole or it is not there: recovery checks length and checksum.
public enum SegmentFormat {
  /// The first bytes of every segment file.
  public static let magic: [UInt8] = Array("WRNSEG1\n".utf8)
  /// Bytes before each payload: length and checksum.
  public static let recordHeaderSize = 8
  /// The largest payload accepted (a record claiming more is damage, not a message).
  public static let maxPayload = 512 << 20

  /// A record's bytes: header and payload.
  public static func record(_ payload: [UInt8]) -> [UInt8] {
    var bytes: [UInt8] = []
    bytes.reserveCapacity(payload.count + self.recordHeaderSize)
    appendLittleEndian(UInt32(payload.count), to: &bytes)
    appendLittleEndian(CRC32C.checksum(payload), to: &bytes)
    bytes += payload
    return bytes
  }

  static func appendLittleEndian(_ value: UInt32, to bytes: inout [UInt8]) {
    for shift in stride(from: 0, to: 32, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
  }

  static func readLittleEndian(_ bytes: ArraySlice<UInt8>) -> UInt32 {
    var value: UInt32 = 0
    for (i, byte) in bytes.prefix(4).enumerated() { value |= UInt32(byte) << UInt32(i * 8) }
    return value
  }
}

/// What recovery found in one segment.
public struct SegmentScan: Equatable {
  /// The whole records, in order: offset of the record and its payload.
  public var records: [(offset: Int, payload: [UInt8])] = []
  /// Where the last whole record ends: the file is cut here when a torn tail follows.
  public var validEnd: Int
  /// Records in the middle whose checksum failed (skipped; their length was sound).
  public var corruptSkipped = 0
  /// Bytes after `validEnd` that are not a whole record (a write torn by a crash, or damage whose length cannot be
  /// trusted).
  public var tornTailBytes = 0

  public static func == (lhs: SegmentScan, rhs: SegmentScan) -> Bool {
    lhs.validEnd == rhs.validEnd && lhs.corruptSkipped == rhs.corruptSkipped && lhs.tornTailBytes == rhs.tornTailBytes
      && lhs.records.map(\.offset) == rhs.records.map(\.offset)
      && lhs.records.map(\.payload) == rhs.records.map(\.payload)
  }
}

/// Appends records to a segment file; ``sync()`` makes them durable (group commit: many appends, one sync).
public final class SegmentWriter {
  public let file: any StoreFile
  /// Bytes appended since the last sync.
  public private(set) var unsyncedBytes = 0

  /// Opens a segment for appending, writing its magic when it is new.
  public init(file: any StoreFile) throws(StoreError) {
    self.file = file
    if file.size == 0 {
      try file.append(bytes: SegmentFormat.magic)
      self.unsyncedBytes = SegmentFormat.magic.count
    }
  }

  /// Appends a record; returns its offset.
  @discardableResult
  public func append(_ payload: [UInt8]) throws(StoreError) -> Int {
    let offset = self.file.size
    let record = SegmentFormat.record(payload)
    try self.file.append(bytes: record)
    self.unsyncedBytes += record.count
    return offset
  }

  /// Makes everything appended durable.
  public func sync() throws(StoreError) {
    try self.file.sync()
    self.unsyncedBytes = 0
  }
}

/// Reads a segment back at recovery: every whole record, a corrupt record in the middle skipped and counted, a torn
/// tail found (and cut by ``recover(_:)``). It never traps on bad input.
public enum SegmentScanner {
  /// Scans a segment file's bytes.
  public static func scan(_ file: any StoreFile) throws(StoreError) -> SegmentScan {
    let size = file.size
    let magic = SegmentFormat.magic
    guard size >= magic.count, try file.read(at: 0, count: magic.count) == magic else {
      return SegmentScan(validEnd: 0, tornTailBytes: size)  // not even the magic: nothing to keep
    }
    var scan = SegmentScan(validEnd: magic.count)
    var offset = magic.count
    // Read in chunks: a segment is at most tens of MiB.
    let bytes = try file.read(at: 0, count: size)
    while offset < size {
      guard size - offset >= SegmentFormat.recordHeaderSize else { break }
      let length = Int(SegmentFormat.readLittleEndian(bytes[offset..<(offset + 4)]))
      let checksum = SegmentFormat.readLittleEndian(bytes[(offset + 4)..<(offset + 8)])
      let start = offset + SegmentFormat.recordHeaderSize
      guard length <= SegmentFormat.maxPayload, start + length <= size else { break }  // short or implausible
      let payload = Array(bytes[start..<(start + length)])
      if CRC32C.checksum(payload) == checksum {
        scan.records.append((offset, payload))
      } else if start + length == size {
        break  // the last record does not check: torn by a crash
      } else {
        scan.corruptSkipped += 1
      }
      offset = start + length
      scan.validEnd = offset
    }
    scan.tornTailBytes = size - scan.validEnd
    return scan
  }

  /// Scans a segment and cuts a torn tail, so new records follow the last good one.
  public static func recover(_ file: any StoreFile) throws(StoreError) -> SegmentScan {
    let scan = try self.scan(file)
    if scan.tornTailBytes > 0 { try file.truncate(to: scan.validEnd) }
    return scan
  }
}
