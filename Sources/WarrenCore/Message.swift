import AMQPProtocol
import NIOCore

/// The fixed-size part of a ``Message``: the lengths of the byte runs stored after it.
public struct MessageLayout: Sendable {
  @usableFromInline var exchangeLength: UInt8
  @usableFromInline var routingKeyLength: UInt8
  @usableFromInline var propertiesLength: UInt32
  @usableFromInline var bodyLength: UInt32
}

/// A published message: stored once, in one allocation, and shared by every queue it is routed to.
///
/// The exchange name, routing key, property bytes (as received) and body are copied into the object's own
/// tail storage, so a queued message pins no network buffer and costs one allocation; deliveries write the bytes
/// straight from it. Immutable once created.
public final class Message: ManagedBuffer<MessageLayout, UInt8> {
  /// Creates a message from received pieces (copied).
  public static func make(
    exchange: String,
    routingKey: String,
    rawProperties: ByteBuffer,
    body: ByteBuffer
  ) -> Message {
    let exchangeLength = min(exchange.utf8.count, 255)
    let routingKeyLength = min(routingKey.utf8.count, 255)
    let propertiesLength = rawProperties.readableBytes
    let bodyLength = body.readableBytes
    let total = exchangeLength + routingKeyLength + propertiesLength + bodyLength
    let buffer = Message.create(minimumCapacity: total) { _ in
      MessageLayout(
        exchangeLength: UInt8(exchangeLength), routingKeyLength: UInt8(routingKeyLength),
        propertiesLength: UInt32(propertiesLength), bodyLength: UInt32(bodyLength))
    }
    let message = unsafeDowncast(buffer, to: Message.self)
    message.withUnsafeMutablePointerToElements { start in
      var cursor = UnsafeMutableRawPointer(start)
      var exchange = exchange
      exchange.withUTF8 { bytes in
        if exchangeLength > 0 { cursor.copyMemory(from: bytes.baseAddress!, byteCount: exchangeLength) }
      }
      cursor += exchangeLength
      var routingKey = routingKey
      routingKey.withUTF8 { bytes in
        if routingKeyLength > 0 { cursor.copyMemory(from: bytes.baseAddress!, byteCount: routingKeyLength) }
      }
      cursor += routingKeyLength
      rawProperties.withUnsafeReadableBytes { bytes in
        if let base = bytes.baseAddress { cursor.copyMemory(from: base, byteCount: bytes.count) }
      }
      cursor += propertiesLength
      body.withUnsafeReadableBytes { bytes in
        if let base = bytes.baseAddress { cursor.copyMemory(from: base, byteCount: bytes.count) }
      }
    }
    return message
  }

  /// Creates a message, encoding the properties.
  public static func make(
    exchange: String, routingKey: String, properties: BasicProperties = .init(), body: ByteBuffer
  ) -> Message {
    var raw = ByteBuffer()
    properties.encode(into: &raw)
    return Message.make(exchange: exchange, routingKey: routingKey, rawProperties: raw, body: body)
  }

  /// Calls `body` with the four byte runs: exchange, routing key, property bytes, body.
  @inlinable
  public func withBytes<T>(
    _ body: (
      _ exchange: UnsafeRawBufferPointer, _ routingKey: UnsafeRawBufferPointer,
      _ properties: UnsafeRawBufferPointer, _ body: UnsafeRawBufferPointer
    ) throws -> T
  ) rethrows -> T {
    try self.withUnsafeMutablePointers { layout, start in
      let l = layout.pointee
      let base = UnsafeRawPointer(start)
      let exchange = UnsafeRawBufferPointer(start: base, count: Int(l.exchangeLength))
      let routingKey = UnsafeRawBufferPointer(start: base + Int(l.exchangeLength), count: Int(l.routingKeyLength))
      let propertiesStart = Int(l.exchangeLength) + Int(l.routingKeyLength)
      let properties = UnsafeRawBufferPointer(start: base + propertiesStart, count: Int(l.propertiesLength))
      let payload = UnsafeRawBufferPointer(
        start: base + propertiesStart + Int(l.propertiesLength), count: Int(l.bodyLength))
      return try body(exchange, routingKey, properties, payload)
    }
  }

  /// The exchange it was published to.
  public var exchange: String { self.withBytes { e, _, _, _ in String(decoding: e, as: UTF8.self) } }

  /// The routing key it was published with.
  public var routingKey: String { self.withBytes { _, r, _, _ in String(decoding: r, as: UTF8.self) } }

  /// The property flags and values as received (a copy).
  public var rawProperties: ByteBuffer { self.withBytes { _, _, p, _ in ByteBuffer(bytes: p) } }

  /// The body (a copy).
  public var body: ByteBuffer { self.withBytes { _, _, _, b in ByteBuffer(bytes: b) } }

  /// The decoded properties (decoded on each call: the delivery path never needs them).
  public var properties: BasicProperties {
    ContentHeader(classID: 60, bodySize: 0, rawProperties: self.rawProperties).properties
  }

  /// Whether the properties include headers (read from the property flags, nothing decoded).
  @inlinable public var hasHeaders: Bool {
    self.withBytes { _, _, properties, _ in properties.count >= 2 && properties[0] & 0x20 != 0 }
  }

  /// The `priority` property (0 when absent), read from the property bytes without decoding them.
  @inlinable public var priority: UInt8 {
    self.withBytes { _, _, properties, _ in
      Self.offset(of: 0x0800, in: properties).map { properties[$0] } ?? 0
    }
  }

  /// Where the value of the property with flag `bit` (delivery-mode 0x1000 or priority 0x0800) starts in the
  /// property bytes, skipping only what comes before it (content-type, content-encoding, headers, delivery-mode);
  /// nil when it is absent or the bytes are short. A continuation flag word (not sent by AMQP 0-9-1 clients)
  /// counts as absent.
  @inlinable static func offset(of bit: UInt16, in properties: UnsafeRawBufferPointer) -> Int? {
    guard properties.count >= 2 else { return nil }
    let flags = UInt16(properties[0]) << 8 | UInt16(properties[1])
    guard flags & bit != 0, flags & 0x0001 == 0 else { return nil }
    var offset = 2
    for shortString: UInt16 in [0x8000, 0x4000] where flags & shortString != 0 {
      guard offset < properties.count else { return nil }
      offset += 1 + Int(properties[offset])
    }
    if flags & 0x2000 != 0 {
      guard offset + 4 <= properties.count else { return nil }
      let length =
        Int(properties[offset]) << 24 | Int(properties[offset + 1]) << 16 | Int(properties[offset + 2]) << 8
        | Int(properties[offset + 3])
      offset += 4 + length
    }
    if bit == 0x0800 && flags & 0x1000 != 0 { offset += 1 }  // priority comes after delivery-mode
    return offset < properties.count ? offset : nil
  }

  /// Whether the properties include an expiration (read from the property flags, nothing decoded).
  @inlinable public var hasExpiration: Bool {
    self.withBytes { _, _, properties, _ in properties.count >= 2 && properties[0] & 0x01 != 0 }
  }

  /// The per-message TTL in milliseconds from the `expiration` property (decoded; only called for messages that
  /// have one), nil when absent or not a non-negative integer.
  public var expirationMilliseconds: Int64? {
    guard self.hasExpiration, let text = self.properties.expiration else { return nil }
    return Self.parseExpiration(text)
  }

  /// An `expiration` property's milliseconds, as RabbitMQ reads it: a non-negative integer in decimal.
  public static func parseExpiration(_ text: String) -> Int64? {
    guard let value = Int64(text), value >= 0 else { return nil }
    return value
  }

  /// The body size in bytes.
  @inlinable public var bodySize: Int { self.withUnsafeMutablePointerToHeader { Int($0.pointee.bodyLength) } }

  /// Whether the publisher asked for the message to be persisted (delivery mode 2), read from the property bytes
  /// without decoding them: only content-type, content-encoding and headers come before delivery-mode.
  @inlinable public var isPersistent: Bool {
    self.withBytes { _, _, properties, _ in
      Self.offset(of: 0x1000, in: properties).map { properties[$0] == 2 } ?? false
    }
  }
}

/// A message in a queue: the shared message plus what is particular to this queue (32 bytes).
public struct QueuedMessage {
  /// The message.
  public var message: Message
  /// When it was enqueued, in nanoseconds of uptime of the queue's ``BrokerClock`` (for TTL).
  public var enqueuedAt: UInt64
  /// The position in the queue, increasing with each enqueue (wrapping); requeued messages go back to it.
  public var sequence: UInt32
  /// Whether it was delivered before and requeued.
  public var redelivered: Bool
  /// How many times it was delivered and came back (a quorum queue's `x-delivery-count`); declared here to sit in
  /// the padding after `redelivered` (the struct stays 32 bytes).
  public var deliveryCount: UInt16 = 0
  /// Where the queue's storage keeps it on disk (its own encoding), 0 when it is not stored.
  public var storageReference: UInt64

  public init(
    message: Message, sequence: UInt32, enqueuedAt: UInt64 = 0, redelivered: Bool = false, storageReference: UInt64 = 0
  ) {
    self.message = message
    self.enqueuedAt = enqueuedAt
    self.sequence = sequence
    self.redelivered = redelivered
    self.storageReference = storageReference
  }

  /// Whether this message was enqueued before `other` (serial number arithmetic: sequences wrap).
  @inlinable
  public func precedes(_ other: QueuedMessage) -> Bool {
    Int32(bitPattern: self.sequence &- other.sequence) < 0
  }
}
