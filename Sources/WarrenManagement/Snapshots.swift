import AMQPProtocol
import Foundation
import WarrenCore
import WarrenServer

/// What the API shows of one queue, copied on the broker's loop (the JSON is made off it).
struct QueueSnapshot: Sendable {
  var vhost: String
  var name: String
  var durable: Bool
  var autoDelete: Bool
  var exclusive: Bool
  var arguments: FieldTable
  var type: String
  var policy: String?
  var operatorPolicy: String?
  var effectivePolicy: FieldTable
  var ready: Int
  var unacked: Int
  var readyBytes: Int
  var unackedBytes: Int
  var consumers: Int
  var published: Int
  var exclusiveConsumerTag: String?

  init(_ queue: Queue) {
    self.vhost = queue.vhost
    self.name = queue.name
    self.durable = queue.durable
    self.autoDelete = queue.autoDelete
    self.exclusive = queue.exclusiveOwner != nil
    self.arguments = queue.arguments
    self.type = queue.arguments["x-queue-type"]?.stringValue ?? "classic"
    self.policy = queue.policy?.name
    self.operatorPolicy = queue.operatorPolicy?.name
    var effective = queue.policy?.definition ?? [:]
    for entry in queue.operatorPolicy?.definition ?? [:] { effective[entry.key] = entry.value }
    self.effectivePolicy = effective
    self.ready = queue.messageCount
    self.unacked = queue.unackedCount
    self.readyBytes = queue.storage.bytes
    self.unackedBytes = queue.unackedBytes
    self.consumers = queue.consumers.count
    self.published = queue.messagesPublished
    self.exclusiveConsumerTag = queue.hasExclusiveConsumer ? queue.consumers.first?.tag : nil
  }

  var key: QueueKey { QueueKey(vhost: self.vhost, name: self.name) }
}

struct QueueKey: Hashable, Sendable {
  var vhost: String
  var name: String
}

/// One exchange, copied on the broker's loop.
struct ExchangeSnapshot: Sendable {
  var vhost: String
  var name: String
  var type: String
  var durable: Bool
  var autoDelete: Bool
  var isInternal: Bool
  var arguments: FieldTable
  var published: Int
  var policy: String?

  init(_ exchange: Exchange, vhost: VirtualHost) {
    self.vhost = vhost.name
    self.name = exchange.name
    self.type = exchange.type.name
    self.durable = exchange.durable
    self.autoDelete = exchange.autoDelete
    self.isInternal = exchange.isInternal
    self.arguments = exchange.arguments
    self.published = exchange.messagesPublished
    self.policy = exchange.name.isEmpty ? nil : Policy.applying(vhost.policies, to: exchange.name, queue: false)?.name
  }
}

/// One binding, copied on the broker's loop. The default exchange's implicit bindings are included, as RabbitMQ
/// lists them.
struct BindingSnapshot: Sendable {
  var vhost: String
  var source: String
  var destination: String
  var destinationType: String
  var routingKey: String
  var arguments: FieldTable

  init(
    vhost: String, source: String, destination: String, destinationType: String, routingKey: String,
    arguments: FieldTable
  ) {
    self.vhost = vhost
    self.source = source
    self.destination = destination
    self.destinationType = destinationType
    self.routingKey = routingKey
    self.arguments = arguments
  }

  init(_ binding: Binding, vhost: String) {
    self.vhost = vhost
    self.source = binding.source
    self.destination = binding.destination.name
    self.destinationType = binding.destination.queue != nil ? "queue" : "exchange"
    self.routingKey = binding.routingKey
    self.arguments = binding.arguments
  }

  init(defaultBindingOf queue: String, vhost: String) {
    self.vhost = vhost
    self.source = ""
    self.destination = queue
    self.destinationType = "queue"
    self.routingKey = queue
    self.arguments = [:]
  }

  /// RabbitMQ's `properties_key`: the routing key (`~` for an empty one), with a hash of the arguments when there
  /// are any; it names the binding in `/api/bindings/.../{props}`.
  var propertiesKey: String {
    let key = self.routingKey.isEmpty ? "~" : Self.quote(self.routingKey)
    if self.arguments.entries.isEmpty { return key }
    var hasher = FNV1a()
    for entry in self.arguments.entries.sorted(by: { $0.key < $1.key }) {
      hasher.add(entry.key)
      hasher.add("\(entry.value)")
    }
    return key + "~" + hasher.base64
  }

  private static func quote(_ text: String) -> String {
    text.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/%~")))
      ?? text
  }
}

/// A small stable hash for binding properties keys (not for security).
private struct FNV1a {
  private var state: UInt64 = 0xcbf2_9ce4_8422_2325

  mutating func add(_ text: String) {
    for byte in text.utf8 {
      self.state ^= UInt64(byte)
      self.state = self.state &* 0x100_0000_01b3
    }
    self.state ^= 0xff
  }

  var base64: String {
    var value = self.state.bigEndian
    let data = withUnsafeBytes(of: &value) { Data($0) }
    return data.base64EncodedString().replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "+", with: "-")
      .replacingOccurrences(of: "=", with: "")
  }
}

/// The broker-wide figures of `/api/overview` and `/api/nodes`.
struct OverviewSnapshot: Sendable {
  var counters: BrokerCounters.Values
  var connections: Int
  var channels: Int
  var consumers: Int
  var queues: Int
  var exchanges: Int
  var vhosts: Int
  var ready: Int
  var unacked: Int
  var alarms: ResourceAlarms
  /// Registered exchange types: name and description.
  var exchangeTypes: [ExchangeTypeInfo]
}

extension OverviewSnapshot {
  /// The figures, for what `visible` vhosts a caller sees (connections and channels counted over all).
  init(_ inspection: BrokerInspection, visible: (String) -> Bool) {
    var queues = 0
    var exchanges = 0
    var ready = 0
    var unacked = 0
    var consumers = 0
    var vhosts = 0
    for vhost in inspection.broker.vhosts.values where visible(vhost.name) {
      vhosts += 1
      exchanges += vhost.exchanges.count
      for queue in vhost.queues.values where !queue.isHolding {
        queues += 1
        ready += queue.messageCount
        unacked += queue.unackedCount
        consumers += queue.consumers.count
      }
    }
    var channels = 0
    inspection.forEachConnection { channels += $0.channels }
    self.init(
      counters: inspection.broker.counters.values, connections: inspection.connectionCount, channels: channels,
      consumers: consumers, queues: queues, exchanges: exchanges, vhosts: vhosts, ready: ready, unacked: unacked,
      alarms: inspection.alarms,
      exchangeTypes: ExchangeTypeInfo.all(inspection.broker.registry))
  }
}

/// An exchange type as the API lists it.
struct ExchangeTypeInfo: Sendable {
  var name: String
  var description: String

  /// The registered types, in name order.
  static func all(_ registry: ExchangeRegistry) -> [ExchangeTypeInfo] {
    registry.types.map { ExchangeTypeInfo(name: $0.name, description: $0.description) }
  }

  var json: JSONValue {
    .object([("name", .string(self.name)), ("description", .string(self.description)), ("enabled", true)])
  }
}
