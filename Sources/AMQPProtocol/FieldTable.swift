import NIOCore

/// A value in an AMQP field table or array, with RabbitMQ's type tags
/// (`t b B s u I i l f d D S A T F V x`; see the 0-9-1 errata).
public enum FieldValue: Sendable, Equatable {
  case bool(Bool)  // t
  case int8(Int8)  // b
  case uint8(UInt8)  // B
  case int16(Int16)  // s
  case uint16(UInt16)  // u
  case int32(Int32)  // I
  case uint32(UInt32)  // i
  case int64(Int64)  // l
  case float(Float)  // f
  case double(Double)  // d
  case decimal(scale: UInt8, value: UInt32)  // D
  case longString(String)  // S (valid UTF-8)
  case array([FieldValue])  // A
  case timestamp(UInt64)  // T
  case table(FieldTable)  // F
  case void  // V
  case bytes([UInt8])  // x, and S that is not valid UTF-8

  /// The value as an integer, for any of the integer types.
  public var integerValue: Int64? {
    switch self {
    case .int8(let v): return Int64(v)
    case .uint8(let v): return Int64(v)
    case .int16(let v): return Int64(v)
    case .uint16(let v): return Int64(v)
    case .int32(let v): return Int64(v)
    case .uint32(let v): return Int64(v)
    case .int64(let v): return v
    default: return nil
    }
  }

  /// The value as a string, for `S`.
  public var stringValue: String? {
    if case .longString(let s) = self { return s }
    return nil
  }

  /// The value as a table, for `F`.
  public var tableValue: FieldTable? {
    if case .table(let t) = self { return t }
    return nil
  }

  /// The value as a boolean, for `t`.
  public var boolValue: Bool? {
    if case .bool(let b) = self { return b }
    return nil
  }
}

/// An AMQP field table: ordered key/value pairs, as they were on the wire.
public struct FieldTable: Sendable, Equatable, ExpressibleByDictionaryLiteral, Sequence {
  /// The deepest nesting of tables and arrays accepted from the wire or a file (a hostile client could otherwise
  /// nest thousands of levels and crash whatever walks the table recursively).
  public static let maxNestingDepth = 64
  @usableFromInline static let tooDeep = AMQPProtocolError.invalidValue(
    "field tables and arrays nested deeper than \(maxNestingDepth) levels")

  /// How deep tables and arrays nest in this table (1 for a flat table).
  public var nestingDepth: Int {
    var deepest = 1
    var pending: [(FieldValue, Int)] = self.entries.map { ($0.value, 1) }
    while let (value, depth) = pending.popLast() {
      deepest = Swift.max(deepest, depth)
      switch value {
      case .table(let table): pending += table.entries.map { ($0.value, depth + 1) }
      case .array(let values): pending += values.map { ($0, depth + 1) }
      default: break
      }
    }
    return deepest
  }
  /// One key and its value.
  public struct Entry: Sendable, Equatable {
    public var key: String
    public var value: FieldValue
    public init(key: String, value: FieldValue) {
      self.key = key
      self.value = value
    }
  }

  /// The entries in wire order.
  public var entries: [Entry]

  /// Creates a table from entries in order.
  public init(_ entries: [Entry] = []) {
    self.entries = entries
  }

  public init(dictionaryLiteral elements: (String, FieldValue)...) {
    self.entries = elements.map { Entry(key: $0.0, value: $0.1) }
  }

  /// Whether the table has no entries.
  public var isEmpty: Bool { self.entries.isEmpty }

  /// The number of entries.
  public var count: Int { self.entries.count }

  /// The first value stored under `key`; setting replaces it or appends a new entry.
  public subscript(key: String) -> FieldValue? {
    get { self.entries.first(where: { $0.key == key })?.value }
    set {
      if let index = self.entries.firstIndex(where: { $0.key == key }) {
        if let newValue { self.entries[index].value = newValue } else { self.entries.remove(at: index) }
      } else if let newValue {
        self.entries.append(Entry(key: key, value: newValue))
      }
    }
  }

  public func makeIterator() -> IndexingIterator<[Entry]> { self.entries.makeIterator() }

  /// Tables are equal when they map the same keys to equal values, in any order (RabbitMQ compares sorted
  /// tables: a redeclared binding with reordered arguments is the same binding).
  public static func == (lhs: FieldTable, rhs: FieldTable) -> Bool {
    guard lhs.entries.count == rhs.entries.count else { return false }
    if lhs.entries == rhs.entries { return true }
    for entry in lhs.entries where rhs[entry.key] != entry.value { return false }
    return true
  }
}

extension ByteBuffer {
  @inlinable
  public mutating func readAMQPOctet() throws(AMQPProtocolError) -> UInt8 {
    guard let v = self.readInteger(as: UInt8.self) else { throw .truncated("octet") }
    return v
  }

  @inlinable
  public mutating func readAMQPShort() throws(AMQPProtocolError) -> UInt16 {
    guard let v = self.readInteger(as: UInt16.self) else { throw .truncated("short") }
    return v
  }

  @inlinable
  public mutating func readAMQPLong() throws(AMQPProtocolError) -> UInt32 {
    guard let v = self.readInteger(as: UInt32.self) else { throw .truncated("long") }
    return v
  }

  @inlinable
  public mutating func readAMQPLongLong() throws(AMQPProtocolError) -> UInt64 {
    guard let v = self.readInteger(as: UInt64.self) else { throw .truncated("longlong") }
    return v
  }

  /// Reads a short string (u8 length + bytes) as UTF-8, repairing invalid sequences.
  @inlinable
  public mutating func readAMQPShortString() throws(AMQPProtocolError) -> String {
    guard let length = self.readInteger(as: UInt8.self),
      let s = self.readString(length: Int(length))
    else { throw .truncated("short string") }
    return s
  }

  /// Reads a long string (u32 length + bytes).
  @inlinable
  public mutating func readAMQPLongString() throws(AMQPProtocolError) -> [UInt8] {
    guard let length = self.readInteger(as: UInt32.self),
      let bytes = self.readBytes(length: Int(length))
    else { throw .truncated("long string") }
    return bytes
  }

  /// Writes a short string; longer than 255 bytes is cut at the last whole character within 255 (callers validate
  /// names before; a key read with invalid UTF-8 grows when its bytes become U+FFFD), so that what is written reads
  /// back as the same string and writes as the same bytes.
  @inlinable
  mutating func writeAMQPShortString(_ string: String) {
    let utf8 = string.utf8
    let count = utf8.count
    if count <= 255 {
      self.writeInteger(UInt8(count))
      self.writeString(string)
    } else {
      var cut = utf8.index(utf8.startIndex, offsetBy: 255)
      while cut > utf8.startIndex && utf8[cut] & 0xC0 == 0x80 { utf8.formIndex(before: &cut) }
      let length = utf8.distance(from: utf8.startIndex, to: cut)
      self.writeInteger(UInt8(length))
      self.writeBytes(utf8[..<cut])
    }
  }

  @inlinable
  mutating func writeAMQPLongString(_ bytes: [UInt8]) {
    self.writeInteger(UInt32(bytes.count))
    self.writeBytes(bytes)
  }

  /// Reads a field table (u32 byte length + entries). Tables and arrays nested deeper than
  /// ``FieldTable/maxNestingDepth`` are refused: everything that later walks a table (comparison, export, rendering)
  /// can then recurse safely.
  @inlinable
  public mutating func readAMQPFieldTable() throws(AMQPProtocolError) -> FieldTable {
    try self.readAMQPFieldTable(depth: 0)
  }

  @usableFromInline
  mutating func readAMQPFieldTable(depth: Int) throws(AMQPProtocolError) -> FieldTable {
    guard depth < FieldTable.maxNestingDepth else { throw FieldTable.tooDeep }
    guard let length = self.readInteger(as: UInt32.self) else { throw .truncated("field table") }
    guard var slice = self.readSlice(length: Int(length)) else { throw .truncated("field table") }
    var entries: [FieldTable.Entry] = []
    while slice.readableBytes > 0 {
      let key = try slice.readAMQPShortString()
      let value = try slice.readAMQPFieldValue(depth: depth + 1)
      entries.append(FieldTable.Entry(key: key, value: value))
    }
    return FieldTable(entries)
  }

  /// Writes a field table (u32 byte length + entries).
  public mutating func writeAMQPFieldTable(_ table: FieldTable) {
    let lengthIndex = self.writerIndex
    self.writeInteger(UInt32(0))
    for entry in table.entries {
      self.writeAMQPShortString(entry.key)
      self.writeAMQPFieldValue(entry.value)
    }
    self.setInteger(UInt32(self.writerIndex - lengthIndex - 4), at: lengthIndex)
  }

  /// Moves past a field table, checking its structure, without building it.
  @usableFromInline
  mutating func skipAMQPFieldTable(depth: Int = 0) throws(AMQPProtocolError) {
    guard depth < FieldTable.maxNestingDepth else { throw FieldTable.tooDeep }
    guard let length = self.readInteger(as: UInt32.self) else { throw .truncated("field table") }
    guard var slice = self.readSlice(length: Int(length)) else { throw .truncated("field table") }
    while slice.readableBytes > 0 {
      try slice.skipAMQPShortString()
      try slice.skipAMQPFieldValue(depth: depth + 1)
    }
  }

  @usableFromInline
  mutating func skipAMQPShortString() throws(AMQPProtocolError) {
    guard let length = self.readInteger(as: UInt8.self), self.readableBytes >= Int(length) else {
      throw .truncated("short string")
    }
    self.moveReaderIndex(forwardBy: Int(length))
  }

  @usableFromInline
  mutating func skipAMQPBytes(_ count: Int, _ what: String) throws(AMQPProtocolError) {
    guard self.readableBytes >= count else { throw .truncated(what) }
    self.moveReaderIndex(forwardBy: count)
  }

  mutating func skipAMQPFieldValue(depth: Int) throws(AMQPProtocolError) {
    let tag = try self.readAMQPOctet()
    switch tag {
    case UInt8(ascii: "t"), UInt8(ascii: "b"), UInt8(ascii: "B"): try self.skipAMQPBytes(1, "octet")
    case UInt8(ascii: "s"), UInt8(ascii: "u"): try self.skipAMQPBytes(2, "short")
    case UInt8(ascii: "I"), UInt8(ascii: "i"), UInt8(ascii: "f"): try self.skipAMQPBytes(4, "long")
    case UInt8(ascii: "l"), UInt8(ascii: "d"), UInt8(ascii: "T"): try self.skipAMQPBytes(8, "longlong")
    case UInt8(ascii: "D"): try self.skipAMQPBytes(5, "decimal")
    case UInt8(ascii: "S"), UInt8(ascii: "x"):
      let length = try self.readAMQPLong()
      try self.skipAMQPBytes(Int(length), "long string")
    case UInt8(ascii: "A"):
      guard let length = self.readInteger(as: UInt32.self), var slice = self.readSlice(length: Int(length)) else {
        throw .truncated("field array")
      }
      guard depth < FieldTable.maxNestingDepth else { throw FieldTable.tooDeep }
      while slice.readableBytes > 0 { try slice.skipAMQPFieldValue(depth: depth + 1) }
    case UInt8(ascii: "F"): try self.skipAMQPFieldTable(depth: depth)
    case UInt8(ascii: "V"): break
    default: throw .unknownFieldType(tag)
    }
  }

  @usableFromInline
  mutating func readAMQPFieldValue(depth: Int) throws(AMQPProtocolError) -> FieldValue {
    let tag = try self.readAMQPOctet()
    switch tag {
    case UInt8(ascii: "t"): return .bool(try self.readAMQPOctet() != 0)
    case UInt8(ascii: "b"): return .int8(Int8(bitPattern: try self.readAMQPOctet()))
    case UInt8(ascii: "B"): return .uint8(try self.readAMQPOctet())
    case UInt8(ascii: "s"): return .int16(Int16(bitPattern: try self.readAMQPShort()))
    case UInt8(ascii: "u"): return .uint16(try self.readAMQPShort())
    case UInt8(ascii: "I"): return .int32(Int32(bitPattern: try self.readAMQPLong()))
    case UInt8(ascii: "i"): return .uint32(try self.readAMQPLong())
    case UInt8(ascii: "l"): return .int64(Int64(bitPattern: try self.readAMQPLongLong()))
    case UInt8(ascii: "f"): return .float(Float(bitPattern: try self.readAMQPLong()))
    case UInt8(ascii: "d"): return .double(Double(bitPattern: try self.readAMQPLongLong()))
    case UInt8(ascii: "D"):
      let scale = try self.readAMQPOctet()
      return .decimal(scale: scale, value: try self.readAMQPLong())
    case UInt8(ascii: "S"):
      let bytes = try self.readAMQPLongString()
      if let s = String(validating: bytes, as: UTF8.self) { return .longString(s) }
      return .bytes(bytes)
    case UInt8(ascii: "x"): return .bytes(try self.readAMQPLongString())
    case UInt8(ascii: "A"):
      guard let length = self.readInteger(as: UInt32.self), var slice = self.readSlice(length: Int(length)) else {
        throw .truncated("field array")
      }
      guard depth < FieldTable.maxNestingDepth else { throw FieldTable.tooDeep }
      var values: [FieldValue] = []
      while slice.readableBytes > 0 { values.append(try slice.readAMQPFieldValue(depth: depth + 1)) }
      return .array(values)
    case UInt8(ascii: "T"): return .timestamp(try self.readAMQPLongLong())
    case UInt8(ascii: "F"): return .table(try self.readAMQPFieldTable(depth: depth))
    case UInt8(ascii: "V"): return .void
    default: throw .unknownFieldType(tag)
    }
  }

  mutating func writeAMQPFieldValue(_ value: FieldValue) {
    switch value {
    case .bool(let v):
      self.writeInteger(UInt8(ascii: "t"))
      self.writeInteger(UInt8(v ? 1 : 0))
    case .int8(let v):
      self.writeInteger(UInt8(ascii: "b"))
      self.writeInteger(v)
    case .uint8(let v):
      self.writeInteger(UInt8(ascii: "B"))
      self.writeInteger(v)
    case .int16(let v):
      self.writeInteger(UInt8(ascii: "s"))
      self.writeInteger(v)
    case .uint16(let v):
      self.writeInteger(UInt8(ascii: "u"))
      self.writeInteger(v)
    case .int32(let v):
      self.writeInteger(UInt8(ascii: "I"))
      self.writeInteger(v)
    case .uint32(let v):
      self.writeInteger(UInt8(ascii: "i"))
      self.writeInteger(v)
    case .int64(let v):
      self.writeInteger(UInt8(ascii: "l"))
      self.writeInteger(v)
    case .float(let v):
      self.writeInteger(UInt8(ascii: "f"))
      self.writeInteger(v.bitPattern)
    case .double(let v):
      self.writeInteger(UInt8(ascii: "d"))
      self.writeInteger(v.bitPattern)
    case .decimal(let scale, let v):
      self.writeInteger(UInt8(ascii: "D"))
      self.writeInteger(scale)
      self.writeInteger(v)
    case .longString(let s):
      self.writeInteger(UInt8(ascii: "S"))
      self.writeInteger(UInt32(s.utf8.count))
      self.writeString(s)
    case .array(let values):
      self.writeInteger(UInt8(ascii: "A"))
      let lengthIndex = self.writerIndex
      self.writeInteger(UInt32(0))
      for v in values { self.writeAMQPFieldValue(v) }
      self.setInteger(UInt32(self.writerIndex - lengthIndex - 4), at: lengthIndex)
    case .timestamp(let v):
      self.writeInteger(UInt8(ascii: "T"))
      self.writeInteger(v)
    case .table(let t):
      self.writeInteger(UInt8(ascii: "F"))
      self.writeAMQPFieldTable(t)
    case .void:
      self.writeInteger(UInt8(ascii: "V"))
    case .bytes(let b):
      self.writeInteger(UInt8(ascii: "x"))
      self.writeAMQPLongString(b)
    }
  }
}
