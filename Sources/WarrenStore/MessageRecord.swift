/// What the store writes for a persistent message: its id, the durable queues it was routed to (one record however
/// many queues: the body is stored once), and the message as the broker holds it (exchange, routing key, property
/// bytes as received, body). Little endian; every length is checked when reading back.
public struct MessageRecord: Equatable, Sendable {
  /// The record kind, first byte of the payload.
  public static let kind: UInt8 = 1

  /// Unique and increasing within the store: the ack log names messages by it.
  public var id: UInt64
  /// The durable queues it was enqueued on.
  public var queues: [String]
  public var exchange: [UInt8]
  public var routingKey: [UInt8]
  /// The content header's property flags and values, as received.
  public var properties: [UInt8]
  public var body: [UInt8]

  public init(
    id: UInt64, queues: [String], exchange: [UInt8], routingKey: [UInt8], properties: [UInt8], body: [UInt8]
  ) {
    self.id = id
    self.queues = queues
    self.exchange = exchange
    self.routingKey = routingKey
    self.properties = properties
    self.body = body
  }

  /// The record's payload.
  public func encoded() -> [UInt8] {
    var out: [UInt8] = [Self.kind]
    out.reserveCapacity(32 + self.exchange.count + self.routingKey.count + self.properties.count + self.body.count)
    Self.put(self.id, &out)
    out.append(UInt8(truncatingIfNeeded: min(self.queues.count, 255)))
    for queue in self.queues.prefix(255) { Self.putShort(Array(queue.utf8), &out) }
    Self.putShort(self.exchange, &out)
    Self.putShort(self.routingKey, &out)
    Self.putLong(self.properties, &out)
    Self.putLong(self.body, &out)
    return out
  }

  /// Reads a payload back; nil when it is not a whole, well-formed message record.
  public init?(decoding payload: [UInt8]) {
    var reader = Reader(bytes: payload)
    guard reader.byte() == Self.kind, let id = reader.integer(UInt64.self), let count = reader.byte() else {
      return nil
    }
    var queues: [String] = []
    for _ in 0..<count {
      guard let name = reader.short() else { return nil }
      queues.append(String(decoding: name, as: UTF8.self))
    }
    guard let exchange = reader.short(), let routingKey = reader.short(), let properties = reader.long(),
      let body = reader.long(), reader.isAtEnd
    else { return nil }
    self.init(id: id, queues: queues, exchange: exchange, routingKey: routingKey, properties: properties, body: body)
  }

  static func put<T: FixedWidthInteger>(_ value: T, _ out: inout [UInt8]) {
    withUnsafeBytes(of: value.littleEndian) { out.append(contentsOf: $0) }
  }

  static func putShort(_ bytes: [UInt8], _ out: inout [UInt8]) {
    let bytes = bytes.prefix(255)
    out.append(UInt8(bytes.count))
    out += bytes
  }

  static func putLong(_ bytes: [UInt8], _ out: inout [UInt8]) {
    Self.put(UInt32(bytes.count), &out)
    out += bytes
  }

  /// Reads with bounds checks: every read past the end is nil.
  struct Reader {
    let bytes: [UInt8]
    var offset = 0

    var isAtEnd: Bool { self.offset == self.bytes.count }

    mutating func take(_ count: Int) -> ArraySlice<UInt8>? {
      guard count >= 0, self.bytes.count - self.offset >= count else { return nil }
      defer { self.offset += count }
      return self.bytes[self.offset..<(self.offset + count)]
    }

    mutating func byte() -> UInt8? { self.take(1)?.first }

    mutating func integer<T: FixedWidthInteger>(_ type: T.Type) -> T? {
      guard let slice = self.take(MemoryLayout<T>.size) else { return nil }
      var value = T.zero
      for (i, byte) in slice.enumerated() { value |= T(byte) << (8 * i) }
      return value
    }

    mutating func short() -> [UInt8]? {
      guard let count = self.byte(), let slice = self.take(Int(count)) else { return nil }
      return Array(slice)
    }

    mutating func long() -> [UInt8]? {
      guard let count = self.integer(UInt32.self), let slice = self.take(Int(count)) else { return nil }
      return Array(slice)
    }
  }
}
