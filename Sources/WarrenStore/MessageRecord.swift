import NIOCore
import WarrenCore

/// What the store writes for a persistent message: its id, the durable queues it was routed to (by their store
/// numbers; one record however many queues: the body is stored once), and the message as the broker holds it
/// (exchange, routing key, property bytes as received, body). Little endian; every length is checked when reading
/// back.
public struct MessageRecord: Equatable, Sendable {
  /// The record kind, first byte of the payload: a persistent message, with the time it was enqueued.
  public static let kind: UInt8 = 3
  /// The kind of a transient message paged out under memory pressure: readable, but dropped at recovery.
  public static let transientKind: UInt8 = 4
  /// The kinds of records written before they carried a time (still read; their time is unknown, 0).
  static let untimedKind: UInt8 = 1
  static let untimedTransientKind: UInt8 = 2

  /// When it was enqueued, in milliseconds since 1970 (for TTL, across restarts); 0 when unknown.
  public var enqueuedAt: UInt64 = 0
  /// Whether the record carries its time (records written before times were kept do not, and encode as they were).
  public var isTimed = true

  /// Whether it holds a transient message paged out (not recovered after a restart).
  public var isTransient = false

  /// Unique and increasing within the store.
  public var id: UInt64
  /// The store numbers of the durable queues it was enqueued on.
  public var queues: [UInt32]
  public var exchange: [UInt8]
  public var routingKey: [UInt8]
  /// The content header's property flags and values, as received.
  public var properties: [UInt8]
  public var body: [UInt8]

  public init(
    id: UInt64, queues: [UInt32], exchange: [UInt8], routingKey: [UInt8], properties: [UInt8], body: [UInt8]
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
    var out: [UInt8] = []
    out.reserveCapacity(
      24 + 4 * self.queues.count + self.exchange.count + self.routingKey.count + self.properties.count
        + self.body.count)
    let kind =
      self.isTimed
      ? (self.isTransient ? Self.transientKind : Self.kind)
      : (self.isTransient ? Self.untimedTransientKind : Self.untimedKind)
    Self.encode(
      kind: kind, id: self.id, enqueuedAt: self.isTimed ? self.enqueuedAt : nil, queues: self.queues,
      exchange: self.exchange, routingKey: self.routingKey, properties: self.properties, body: self.body, into: &out)
    return out
  }

  /// Appends the payload of a record for `message` (its bytes copied once, straight from the message).
  public static func encode(
    id: UInt64, enqueuedAt: UInt64 = 0, queues: [UInt32], message: Message, transient: Bool = false,
    into out: inout [UInt8]
  ) {
    message.withBytes { exchange, routingKey, properties, body in
      Self.encode(
        kind: transient ? Self.transientKind : Self.kind, id: id, enqueuedAt: enqueuedAt, queues: queues,
        exchange: exchange, routingKey: routingKey, properties: properties, body: body, into: &out)
    }
  }

  /// Appends a whole record, header (length, CRC-32C) and payload, for `firstQueue` and then `moreQueues`: the
  /// store's open record keeps its first queue apart, so a message for one queue needs no array. Everything before
  /// the body is appended as zeros at once and filled in place, then the body: two appends, not a dozen (each
  /// append checks uniqueness and capacity: about 20 ns per small field, measured with a Swift microbenchmark on
  /// this machine). No temporary stack buffer: a dynamically sized one drew an AddressSanitizer report from the
  /// store fuzzer that did not reproduce (dynamic allocas are a known source of false reports).
  static func appendRecord(
    id: UInt64, enqueuedAt: UInt64, firstQueue: UInt32, moreQueues: [UInt32], message: Message, transient: Bool,
    to out: inout [UInt8]
  ) {
    message.withBytes { exchange, routingKey, properties, body in
      let exchange = UnsafeRawBufferPointer(rebasing: exchange.prefix(255))
      let routingKey = UnsafeRawBufferPointer(rebasing: routingKey.prefix(255))
      let queueCount = min(moreQueues.count + 1, 255)
      let headLength =
        SegmentFormat.recordHeaderSize + 1 + 8 + 8 + 1 + 4 * queueCount + 1 + exchange.count + 1 + routingKey.count + 4
        + properties.count + 4
      let start = out.count
      // No reserveCapacity: `out` is the store's buffer of many records; appends grow it geometrically.
      out.append(contentsOf: repeatElement(0, count: headLength))
      out.withUnsafeMutableBytes { buffer in
        let head = UnsafeMutableRawBufferPointer(rebasing: buffer[start..<(start + headLength)])
        var at = SegmentFormat.recordHeaderSize  // length and checksum are set once the payload is in place
        func store<T: FixedWidthInteger>(_ value: T) {
          head.storeBytes(of: value.littleEndian, toByteOffset: at, as: T.self)
          at += MemoryLayout<T>.size
        }
        func copy(_ bytes: UnsafeRawBufferPointer) {
          guard bytes.count > 0 else { return }
          UnsafeMutableRawBufferPointer(rebasing: head[at..<(at + bytes.count)]).copyMemory(from: bytes)
          at += bytes.count
        }
        store(transient ? Self.transientKind : Self.kind)
        store(id)
        store(enqueuedAt)
        store(UInt8(queueCount))
        store(firstQueue)
        for queue in moreQueues.prefix(queueCount - 1) { store(queue) }
        store(UInt8(exchange.count))
        copy(exchange)
        store(UInt8(routingKey.count))
        copy(routingKey)
        store(UInt32(properties.count))
        copy(properties)
        store(UInt32(body.count))
        precondition(at == headLength, "a record's head was mis-sized")
      }
      out.append(contentsOf: body)
      let payloadLength = out.count - start - SegmentFormat.recordHeaderSize
      out.withUnsafeMutableBytes { buffer in
        let payload = UnsafeRawBufferPointer(
          rebasing: buffer[
            (start + SegmentFormat.recordHeaderSize)..<(start + SegmentFormat.recordHeaderSize + payloadLength)])
        buffer.storeBytes(of: UInt32(payloadLength).littleEndian, toByteOffset: start, as: UInt32.self)
        buffer.storeBytes(of: CRC32C.checksum(payload).littleEndian, toByteOffset: start + 4, as: UInt32.self)
      }
    }
  }

  static func encode(
    kind: UInt8, id: UInt64, enqueuedAt: UInt64?, queues: [UInt32], exchange: some Collection<UInt8>,
    routingKey: some Collection<UInt8>, properties: some Collection<UInt8>, body: some Collection<UInt8>,
    into out: inout [UInt8]
  ) {
    out.append(kind)
    Self.put(id, &out)
    if let enqueuedAt { Self.put(enqueuedAt, &out) }
    out.append(UInt8(truncatingIfNeeded: min(queues.count, 255)))
    for queue in queues.prefix(255) { Self.put(queue, &out) }
    out.append(UInt8(min(exchange.count, 255)))
    out += exchange.prefix(255)
    out.append(UInt8(min(routingKey.count, 255)))
    out += routingKey.prefix(255)
    Self.put(UInt32(properties.count), &out)
    out += properties
    Self.put(UInt32(body.count), &out)
    out += body
  }

  /// Reads a payload back; nil when it is not a whole, well-formed message record.
  public init?(decoding payload: some Collection<UInt8>) {
    var reader = Reader(bytes: Array(payload))
    guard let summary = Summary(reading: &reader) else { return nil }
    reader.offset = summary.exchangeOffset
    guard let exchange = reader.short(), let routingKey = reader.short(), let properties = reader.long(),
      let body = reader.long()
    else { return nil }
    self.init(
      id: summary.id, queues: summary.queues, exchange: exchange, routingKey: routingKey, properties: properties,
      body: body)
    self.isTransient = summary.isTransient
    self.enqueuedAt = summary.enqueuedAt
    self.isTimed = summary.isTimed
  }

  /// The message this record holds.
  public var message: Message {
    Message.make(
      exchange: String(decoding: self.exchange, as: UTF8.self),
      routingKey: String(decoding: self.routingKey, as: UTF8.self), rawProperties: ByteBuffer(bytes: self.properties),
      body: ByteBuffer(bytes: self.body))
  }

  /// What recovery needs of a record without copying its body: id, queues, body size; checked whole.
  public struct Summary: Equatable {
    public var id: UInt64
    public var queues: [UInt32]
    public var bodySize: Int
    /// A transient message paged out: recovery drops it.
    public var isTransient: Bool
    /// When it was enqueued, milliseconds since 1970 (0: unknown).
    public var enqueuedAt: UInt64
    /// Whether the record carries its time (kinds 3 and 4).
    public var isTimed: Bool
    var exchangeOffset: Int

    /// Reads a payload's summary; nil when the payload is not a whole, well-formed message record.
    public init?(decoding payload: [UInt8]) {
      var reader = Reader(bytes: payload)
      self.init(reading: &reader)
    }

    init?(reading reader: inout Reader) {
      guard let kind = reader.byte(), (MessageRecord.untimedKind...MessageRecord.transientKind).contains(kind),
        let id = reader.integer(UInt64.self)
      else { return nil }
      let timed = kind == MessageRecord.kind || kind == MessageRecord.transientKind
      guard let enqueuedAt = timed ? reader.integer(UInt64.self) : 0, let count = reader.byte() else { return nil }
      var queues: [UInt32] = []
      queues.reserveCapacity(Int(count))
      for _ in 0..<count {
        guard let queue = reader.integer(UInt32.self) else { return nil }
        queues.append(queue)
      }
      let exchangeOffset = reader.offset
      guard reader.skipShort(), reader.skipShort(), reader.skipLong(),
        let bodySize = reader.integer(UInt32.self), reader.skip(Int(bodySize)), reader.isAtEnd
      else { return nil }
      self.id = id
      self.queues = queues
      self.bodySize = Int(bodySize)
      self.isTransient = kind == MessageRecord.transientKind || kind == MessageRecord.untimedTransientKind
      self.enqueuedAt = enqueuedAt
      self.isTimed = timed
      self.exchangeOffset = exchangeOffset
    }
  }

  /// The message id of a record's payload (after its kind byte); nil when it is not a message record.
  public static func messageID(in payload: ArraySlice<UInt8>) -> UInt64? {
    guard payload.count >= 9, let kind = payload.first, (Self.untimedKind...Self.transientKind).contains(kind) else {
      return nil
    }
    var id: UInt64 = 0
    for (i, byte) in payload.dropFirst().prefix(8).enumerated() { id |= UInt64(byte) << UInt64(i * 8) }
    return id
  }

  static func put<T: FixedWidthInteger>(_ value: T, _ out: inout [UInt8]) {
    withUnsafeBytes(of: value.littleEndian) { out.append(contentsOf: $0) }
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

    mutating func skip(_ count: Int) -> Bool { self.take(count) != nil }

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

    mutating func skipShort() -> Bool {
      guard let count = self.byte() else { return false }
      return self.skip(Int(count))
    }

    mutating func skipLong() -> Bool {
      guard let count = self.integer(UInt32.self) else { return false }
      return self.skip(Int(count))
    }
  }
}
