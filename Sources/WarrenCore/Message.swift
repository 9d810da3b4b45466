import AMQPProtocol
import NIOCore

/// A published message: stored once, shared by every queue it is routed to.
public final class Message: Sendable {
  /// The exchange it was published to.
  public let exchange: String
  /// The routing key it was published with.
  public let routingKey: String
  /// The property flags and values as received; deliveries forward these bytes unchanged.
  public let rawProperties: ByteBuffer
  /// The body.
  public let body: ByteBuffer

  /// Creates a message.
  public init(
    exchange: String,
    routingKey: String,
    rawProperties: ByteBuffer,
    body: ByteBuffer
  ) {
    self.exchange = exchange
    self.routingKey = routingKey
    self.rawProperties = rawProperties
    self.body = body
  }

  /// Creates a message, encoding the properties.
  public convenience init(exchange: String, routingKey: String, properties: BasicProperties = .init(), body: ByteBuffer)
  {
    var raw = ByteBuffer()
    properties.encode(into: &raw)
    self.init(exchange: exchange, routingKey: routingKey, rawProperties: raw, body: body)
  }

  /// The decoded properties (decoded on each call: the delivery path never needs them).
  public var properties: BasicProperties {
    ContentHeader(classID: 60, bodySize: 0, rawProperties: self.rawProperties).properties
  }

  /// The body size in bytes.
  @inlinable public var bodySize: Int { self.body.readableBytes }

  /// Whether the publisher asked for the message to be persisted (delivery mode 2).
  public var isPersistent: Bool { self.properties.deliveryMode == 2 }
}

/// A message in a queue: the shared message plus what is particular to this queue.
public struct QueuedMessage: Sendable {
  /// The message.
  public var message: Message
  /// The position in the queue, increasing with each enqueue; requeued messages go back to their position.
  public var sequence: UInt64
  /// Whether it was delivered before and requeued.
  public var redelivered: Bool

  public init(message: Message, sequence: UInt64, redelivered: Bool = false) {
    self.message = message
    self.sequence = sequence
    self.redelivered = redelivered
  }
}
