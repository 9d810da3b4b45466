/// What the broker has done since it started: monotonic counts for the metrics endpoint.
///
/// The counts are plain integers bumped on the broker's event loop (no atomics, no locks on the publish and
/// deliver paths); a scrape copies ``values`` on the same loop.
public final class BrokerCounters {
  /// The counts.
  public var values = Values()

  public init() {}

  /// The counts, as a value that can leave the event loop.
  public struct Values: Sendable, Equatable {
    public var connectionsOpened = 0
    public var connectionsClosed = 0
    public var channelsOpened = 0
    public var channelsClosed = 0
    public var queuesDeclared = 0
    public var queuesCreated = 0
    public var queuesDeleted = 0
    public var authAttemptsSucceeded = 0
    public var authAttemptsFailed = 0
    /// Publishes received (basic.publish with its content).
    public var messagesReceived = 0
    /// Publishes received on channels in confirm mode.
    public var messagesReceivedConfirm = 0
    /// Publishes that reached at least one queue.
    public var messagesRouted = 0
    /// Publishes that reached no queue and were not mandatory.
    public var messagesUnroutableDropped = 0
    /// Mandatory publishes that reached no queue and went back with basic.return.
    public var messagesUnroutableReturned = 0
    /// Publishes confirmed (basic.ack to the publisher).
    public var messagesConfirmed = 0
    public var messagesDeliveredConsumeAutoAck = 0
    public var messagesDeliveredConsumeManualAck = 0
    public var messagesDeliveredGetAutoAck = 0
    public var messagesDeliveredGetManualAck = 0
    /// basic.get answered with get-empty.
    public var messagesGetEmpty = 0
    /// Deliveries (consume or get) of messages that had been delivered before.
    public var messagesRedelivered = 0
    /// Deliveries acknowledged by consumers.
    public var messagesAcknowledged = 0
    /// Messages dead-lettered to an exchange, by reason (RabbitMQ's `dead_letter_strategy="at_most_once"`).
    public var messagesDeadLettered: [Int] = Array(repeating: 0, count: DeadLetterReason.allCases.count)
    /// Messages that left a queue for a reason that dead-letters, with no dead-letter exchange: dropped
    /// (`dead_letter_strategy="disabled"`).
    public var messagesDeadLetterDisabled: [Int] = Array(repeating: 0, count: DeadLetterReason.allCases.count)
    /// Received message body sizes: counts per bucket of ``BrokerCounters/messageSizeBuckets`` (the last is +Inf).
    public var messageSizeCounts = [Int](repeating: 0, count: BrokerCounters.messageSizeBuckets.count + 1)
    /// The sum of the received message body sizes.
    public var messageSizeSum = 0

    public init() {}

    /// Counts a message dead-lettered (or dropped, with no dead-letter exchange) for `reason`.
    mutating func countDeadLettered(_ reason: DeadLetterReason, toExchange: Bool) {
      let index = DeadLetterReason.allCases.firstIndex(of: reason)!
      if toExchange { self.messagesDeadLettered[index] += 1 } else { self.messagesDeadLetterDisabled[index] += 1 }
    }

    /// Messages delivered to consumers and basic.get, in either acknowledgement mode.
    public var messagesDelivered: Int {
      self.messagesDeliveredConsumeAutoAck + self.messagesDeliveredConsumeManualAck + self.messagesDeliveredGetAutoAck
        + self.messagesDeliveredGetManualAck
    }
  }

  /// Upper bounds of the message size histogram, as RabbitMQ 4's `rabbitmq_global_message_size_bytes`: 64 B and
  /// every power of 4 above it up to 512 MiB.
  public static let messageSizeBuckets: [Int] = (0..<12).map { 64 << (2 * $0) } + [512 * 1024 * 1024]

  /// Counts a received message of `size` body bytes.
  @inlinable
  public func recordMessageSize(_ size: Int) {
    self.values.messageSizeCounts[Self.messageSizeBucketIndex(size)] &+= 1
    self.values.messageSizeSum &+= size
  }

  /// The histogram bucket of a size: the first whose upper bound is at least `size` (64, 256, 1024, ...).
  @inlinable
  public static func messageSizeBucketIndex(_ size: Int) -> Int {
    if size <= 64 { return 0 }
    let bits = Int.bitWidth - (size - 1).leadingZeroBitCount  // size <= 2^bits
    let index = (bits - 5) / 2  // the least k with 2^(6+2k) >= size
    return index < 12 ? index : (size <= 512 * 1024 * 1024 ? 12 : 13)
  }
}
