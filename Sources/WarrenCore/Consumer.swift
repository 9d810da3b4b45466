import AMQPProtocol

/// The side of a consumer that a queue delivers into: a channel of a client connection.
public protocol DeliveryChannel: AnyObject {
  /// Whether the channel can take another delivery for this consumer now: flow, prefetch (the consumer's and the
  /// channel's), a writable socket.
  func canDeliver(to consumer: Consumer) -> Bool
  /// Delivers a message; the channel assigns the delivery tag and, unless no-ack, tracks it until settled.
  func deliver(_ message: QueuedMessage, from queue: Queue, to consumer: Consumer)
  /// The queue went away under the consumer (deleted); the channel tells the client if it can.
  func consumerCancelledByServer(_ consumer: Consumer)
}

/// A publisher that a queue can slow down: it stops reading from its socket until resumed.
public protocol FlowControlledPublisher: AnyObject {
  /// A queue it published to is behind its consumers: stop reading after the current read.
  func holdBackPublishing()
  /// The queues that held it back have caught up: read again.
  func resumePublishing()
}

/// A subscription of a channel to a queue.
///
/// The consumer holds its channel strongly; the channel holds its consumers and removes them from their queues
/// when it goes (basic.cancel, channel or connection closed), which breaks the cycle.
public final class Consumer {
  /// The consumer tag, unique on its channel.
  public let tag: String
  /// The consumer tag's bytes, for writing deliveries.
  public let tagBytes: [UInt8]
  /// The queue consumed from.
  public let queue: Queue
  /// Whether deliveries count as acknowledged when sent.
  public let noAck: Bool
  /// Whether it is the queue's only consumer.
  public let exclusive: Bool
  /// The most unacknowledged deliveries it may hold (basic.qos, per consumer); 0 is no limit.
  public var prefetchCount: Int
  /// Its deliveries not yet settled: the prefetch credit in use, kept by its channel.
  public var unacked: Int = 0
  /// The channel it belongs to.
  public let channel: any DeliveryChannel
  /// The consume arguments.
  public let arguments: FieldTable

  public init(
    tag: String,
    queue: Queue,
    noAck: Bool,
    exclusive: Bool,
    prefetchCount: Int,
    channel: any DeliveryChannel,
    arguments: FieldTable = [:]
  ) {
    self.tag = tag
    self.tagBytes = Array(tag.utf8.prefix(255))
    self.queue = queue
    self.noAck = noAck
    self.exclusive = exclusive
    self.prefetchCount = prefetchCount
    self.channel = channel
    self.arguments = arguments
  }

  /// Whether its own prefetch limit leaves room for another delivery.
  @inlinable public var hasCapacity: Bool { self.prefetchCount == 0 || self.unacked < self.prefetchCount }
}
