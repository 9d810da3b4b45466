/// The layout of a segment file: a header, then records, each a length (u32, little endian), the CRC-32C of the
/// payload (u32) and the payload. A record is whole or it is not there: recovery checks length and checksum.
///
/// Headers: `WRNSEG1\n` (the topology log, and segments written before files were reused), or `WRNSEG2\n` and the
/// id of the first message the segment holds (u64): a reused file keeps an older segment's bytes past what was
/// written into it, and those records, all with lower ids, end the scan.
public enum SegmentFormat {
  /// The first bytes of the topology log and of older segments.
  public static let magic: [UInt8] = Array("WRNSEG1\n".utf8)
  /// The first bytes of a segment with its first message id.
  public static let magicWithFirstID: [UInt8] = Array("WRNSEG2\n".utf8)
  /// The size of a segment's header with its first message id.
  public static let headerSize = 16
  /// Message ids above this are damage (a counter from 1 does not get there).
  public static let largestMessageID: UInt64 = 1 << 62

  /// A segment's header: ``magicWithFirstID`` and the id of its first message.
  public static func header(firstID: UInt64) -> [UInt8] {
    var bytes = Self.magicWithFirstID
    Self.appendLittleEndian(UInt32(truncatingIfNeeded: firstID), to: &bytes)
    Self.appendLittleEndian(UInt32(truncatingIfNeeded: firstID >> 32), to: &bytes)
    return bytes
  }
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
  /// trusted), or an older segment's records in a reused file.
  public var tornTailBytes = 0
  /// The header's size (8 for ``SegmentFormat/magic``, 16 with a first message id).
  public var headerSize = SegmentFormat.magic.count
  /// The header's first message id (0 without one): later messages must get higher ids, even when no record of
  /// the segment survived.
  public var firstID: UInt64 = 0

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
  /// Scans a segment file's bytes. `messageID` reads a record's message id: with a ``SegmentFormat/header(firstID:)``
  /// header, a record with a lower id is an older segment's (the file was reused) and ends the scan.
  public static func scan(_ file: any StoreFile, messageID: (ArraySlice<UInt8>) -> UInt64? = { _ in nil })
    throws(StoreError) -> SegmentScan
  {
    let size = file.size
    let magic = SegmentFormat.magic
    guard size >= magic.count else { return SegmentScan(validEnd: 0, tornTailBytes: size) }
    let bytes = try file.read(at: 0, count: size)
    var firstID: UInt64?
    var headerSize = magic.count
    if bytes[0..<magic.count].elementsEqual(SegmentFormat.magicWithFirstID), size >= SegmentFormat.headerSize {
      let low = UInt64(SegmentFormat.readLittleEndian(bytes[8..<12]))
      let id = low | UInt64(SegmentFormat.readLittleEndian(bytes[12..<16])) << 32
      // Ids are counted from 1 and never come near 2^62: a header claiming more is damage.
      guard id <= SegmentFormat.largestMessageID else { return SegmentScan(validEnd: 0, tornTailBytes: size) }
      firstID = id
      headerSize = SegmentFormat.headerSize
    } else if !bytes[0..<magic.count].elementsEqual(magic) {
      return SegmentScan(validEnd: 0, tornTailBytes: size)  // not even the header: nothing to keep
    }
    var scan = SegmentScan(validEnd: headerSize)
    scan.headerSize = headerSize
    scan.firstID = firstID ?? 0
    var offset = headerSize
    // Damaged records count as skipped only when a good record follows them; after the last good one they are
    // the tail (torn by a crash, or an older segment's bytes in a reused file).
    var damagedSinceGood = 0
    while offset < size {
      guard size - offset >= SegmentFormat.recordHeaderSize else { break }
      let length = Int(SegmentFormat.readLittleEndian(bytes[offset..<(offset + 4)]))
      let checksum = SegmentFormat.readLittleEndian(bytes[(offset + 4)..<(offset + 8)])
      let start = offset + SegmentFormat.recordHeaderSize
      guard length <= SegmentFormat.maxPayload, start + length <= size else { break }  // short or implausible
      let payload = bytes[start..<(start + length)]
      if CRC32C.checksum(Array(payload)) == checksum {
        if let firstID, let id = messageID(payload), id < firstID { break }  // an older segment's record
        scan.records.append((offset, Array(payload)))
        scan.corruptSkipped += damagedSinceGood
        damagedSinceGood = 0
        scan.validEnd = start + length
      } else {
        damagedSinceGood += 1
      }
      offset = start + length
    }
    scan.tornTailBytes = size - scan.validEnd
    return scan
  }

  /// Scans a segment and cuts a torn tail, so new records follow the last good one.
  public static func recover(_ file: any StoreFile, messageID: (ArraySlice<UInt8>) -> UInt64? = { _ in nil })
    throws(StoreError) -> SegmentScan
  {
    let scan = try self.scan(file, messageID: messageID)
    if scan.tornTailBytes > 0 { try file.truncate(to: scan.validEnd) }
    return scan
  }
}
