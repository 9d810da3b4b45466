import WarrenCore

/// Everything a scrape reports about the broker, copied on its event loop in one hop and rendered elsewhere.
public struct MetricsSnapshot: Sendable {
  /// The broker's monotonic counts.
  public var counters = BrokerCounters.Values()
  /// Open client connections (handshaking ones included).
  public var connectionCount = 0
  /// Open channels.
  public var channelCount = 0
  /// Consumers.
  public var consumerCount = 0
  /// Queues.
  public var queueCount = 0
  /// The sums over every queue (its name and vhost are empty).
  public var queueTotals = QueueSample(vhost: "", name: "")
  /// Bytes received from and sent to the clients connected now.
  public var connectionBytesReceived = 0
  public var connectionBytesSent = 0
  /// Per-object samples; empty unless asked for.
  public var queues: [QueueSample] = []
  public var exchanges: [ExchangeSample] = []
  public var connections: [ConnectionSample] = []
  /// The resource alarms in effect.
  public var alarms = ResourceAlarms()
  /// Limits in effect (RabbitMQ's vhost and user limits, `connection_max`): kind (`vhost`, `user`), its name, the
  /// limit's name, the value, and what it counts now.
  public var limits: [(kind: String, name: String, limit: String, value: Int, current: Int)] = []

  public init() {}
}

/// One queue's figures.
public struct QueueSample: Sendable {
  public var vhost: String
  public var name: String
  public var ready = 0
  public var unacked = 0
  public var readyBytes = 0
  public var unackedBytes = 0
  public var consumers = 0
  public var published = 0

  public init(vhost: String, name: String) {
    self.vhost = vhost
    self.name = name
  }

  /// Adds another queue's figures to these (for the totals).
  public mutating func add(_ other: QueueSample) {
    self.ready += other.ready
    self.unacked += other.unacked
    self.readyBytes += other.readyBytes
    self.unackedBytes += other.unackedBytes
    self.consumers += other.consumers
    self.published += other.published
  }
}

/// One exchange's figures.
public struct ExchangeSample: Sendable {
  public var vhost: String
  public var name: String
  public var type: String
  public var published: Int

  public init(vhost: String, name: String, type: String, published: Int) {
    self.vhost = vhost
    self.name = name
    self.type = type
    self.published = published
  }
}

/// One client connection's figures.
public typealias ConnectionSample = ConnectionSummary
