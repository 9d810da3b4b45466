import AMQPProtocol
import WarrenCore

/// `x-consistent-hash`, as in RabbitMQ's rabbitmq_consistent_hash_exchange plugin: a message goes to exactly one
/// of the bound destinations, chosen by hashing its routing key (or the header named by the exchange argument
/// `hash-header`, or the property named by `hash-property`: `message_id`, `correlation_id` or `timestamp`) onto a
/// ring. A binding's key is its weight: a destination bound with weight 2 gets about twice the messages of one
/// bound with weight 1, and adding or removing a destination moves only the messages that must move.
///
/// This is also the worked example of a custom exchange type: see `docs/custom-exchange-type.md`.
public struct ConsistentHashExchangeType: ExchangeType {
  /// Ring points per unit of weight: enough that weights hold to within a few percent (fewer when the weights
  /// are so large that the ring would pass ``maxRingPoints``).
  static let pointsPerWeight = 1000
  static let maxRingPoints = 2_000_000

  public init() {}
  public var name: String { "x-consistent-hash" }
  public var description: String { "Consistent Hashing Exchange" }

  public func validate(exchangeArguments: FieldTable) throws(BrokerError) {
    if exchangeArguments["hash-header"] != nil && exchangeArguments["hash-property"] != nil {
      throw .preconditionFailed("hash-header and hash-property are mutually exclusive")
    }
    if let header = exchangeArguments["hash-header"], header.stringValue?.isEmpty != false {
      throw .preconditionFailed("hash-header must be a non-empty string")
    }
    if let property = exchangeArguments["hash-property"] {
      guard let name = property.stringValue, ["message_id", "correlation_id", "timestamp"].contains(name) else {
        throw .preconditionFailed(
          "hash-property must be one of message_id, correlation_id, timestamp; got \(QueueArguments.show(property))")
      }
    }
  }

  public func validate(bindingKey: String, arguments: FieldTable) throws(BrokerError) {
    guard let weight = Int(bindingKey), weight > 0, weight <= 1_000_000 else {
      throw .preconditionFailed(
        "the binding key of a consistent hash exchange is a weight: a positive integer, not '\(bindingKey)'")
    }
  }

  public func makeRouter(exchangeName: String, arguments: FieldTable) -> any ExchangeRouter {
    let source: ConsistentHashRouter.Source
    if let header = arguments["hash-header"]?.stringValue {
      source = .header(header)
    } else if let property = arguments["hash-property"]?.stringValue {
      source = .property(property)
    } else {
      source = .routingKey
    }
    return ConsistentHashRouter(source: source)
  }
}

/// The ring of one consistent hash exchange.
public final class ConsistentHashRouter: ExchangeRouter {
  enum Source {
    case routingKey
    case header(String)
    case property(String)
  }

  let source: Source
  private var bindings: [Binding] = []
  /// Sorted by point.
  private var ring: [(point: UInt64, destination: Destination)] = []

  init(source: Source) {
    self.source = source
  }

  public func bindingAdded(_ binding: Binding) {
    self.bindings.append(binding)
    self.rebuild()
  }

  public func bindingRemoved(_ binding: Binding) {
    self.bindings.removeAll { $0 == binding }
    self.rebuild()
  }

  private func rebuild() {
    var ring: [(point: UInt64, destination: Destination)] = []
    let totalWeight = self.bindings.reduce(0) { $0 + (Int($1.routingKey) ?? 1) }
    let perWeight = max(
      1,
      min(ConsistentHashExchangeType.pointsPerWeight, ConsistentHashExchangeType.maxRingPoints / max(1, totalWeight)))
    for binding in self.bindings {
      let weight = Int(binding.routingKey) ?? 1
      let identity = "\(binding.destination.queue != nil ? "q" : "e"):\(binding.destination.name)"
      for replica in 0..<(weight * perWeight) {
        ring.append((stableHash("\(identity)#\(binding.routingKey)#\(replica)"), binding.destination))
      }
    }
    ring.sort { $0.point < $1.point }
    self.ring = ring
  }

  public func route(_ input: RoutingInput, into routes: inout RouteSet) {
    guard !self.ring.isEmpty, let key = self.hashKey(input) else { return }
    let point = stableHash(key)
    // The first ring point at or after the message's point, wrapping around.
    var low = 0
    var high = self.ring.count
    while low < high {
      let mid = (low + high) / 2
      if self.ring[mid].point < point { low = mid + 1 } else { high = mid }
    }
    routes.insert(self.ring[low == self.ring.count ? 0 : low].destination)
  }

  private func hashKey(_ input: RoutingInput) -> String? {
    switch self.source {
    case .routingKey:
      return input.routingKey
    case .header(let name):
      guard let value = input.message.properties.headers?[name] else { return nil }
      switch value {
      case .longString(let s): return s
      default: return "\(value)"
      }
    case .property(let name):
      let properties = input.message.properties
      switch name {
      case "message_id": return properties.messageId
      case "correlation_id": return properties.correlationId
      default: return properties.timestamp.map { String($0) }
      }
    }
  }
}

/// FNV-1a over the UTF-8 bytes, finished with splitmix64's mixer: stable across runs and platforms.
func stableHash(_ string: String) -> UInt64 {
  var hash: UInt64 = 0xcbf2_9ce4_8422_2325
  for byte in string.utf8 {
    hash ^= UInt64(byte)
    hash &*= 0x0000_0100_0000_01B3
  }
  hash ^= hash >> 30
  hash &*= 0xbf58_476d_1ce4_e5b9
  hash ^= hash >> 27
  hash &*= 0x94d0_49bb_1331_11eb
  hash ^= hash >> 31
  return hash
}
