import AMQPProtocol

/// Why a message left its queue without being consumed: the `reason` of its `x-death` entry.
public enum DeadLetterReason: String, Sendable, CaseIterable {
  /// basic.reject or basic.nack without requeue.
  case rejected
  /// Its TTL passed.
  case expired
  /// The queue went over `x-max-length` or `x-max-length-bytes`.
  case maxlen
  /// It was delivered more often than `x-delivery-limit` allows.
  case deliveryLimit = "delivery_limit"
}

extension VirtualHost {
  /// Republishes a message a queue dead-lettered to the queue's dead-letter exchange, as RabbitMQ 3.x does: with
  /// an `x-death` entry for (queue, reason) added first or counted again, the `x-first-death-*` headers on the
  /// first death, the `expiration` moved to `original-expiration`, routed with `x-dead-letter-routing-key` (the CC
  /// header then dropped) or with its own routing keys. A missing exchange drops it silently; so does a cycle in
  /// which nothing was rejected (the queues it would come back to are left out). At most once: no confirm waits.
  func deadLetter(_ message: Message, from queue: Queue, reason: DeadLetterReason) {
    guard let exchangeName = queue.options.deadLetterExchange else {
      self.counters.values.countDeadLettered(reason, toExchange: false)
      return
    }
    self.counters.values.countDeadLettered(reason, toExchange: true)
    guard let exchange = self.exchanges[exchangeName] else { return }
    var properties = message.properties
    var headers = properties.headers ?? [:]
    let ccKeys = Self.routingKeys(in: headers["CC"])
    let deathKeys = [message.routingKey] + ccKeys
    var death: FieldTable = [
      "count": .int64(1), "exchange": .longString(message.exchange), "queue": .longString(queue.name),
      "reason": .longString(reason.rawValue), "routing-keys": .array(deathKeys.map { .longString($0) }),
      "time": .timestamp(self.clock.wallSeconds),
    ]
    if let expiration = properties.expiration {
      death["original-expiration"] = .longString(expiration)
      properties.expiration = nil
    }
    var deaths: [FieldValue] = []
    if case .array(let existing)? = headers["x-death"] { deaths = existing }
    if let index = deaths.firstIndex(where: { Self.isDeath($0, queue: queue.name, reason: reason) }),
      case .table(var previous) = deaths[index]
    {
      previous["count"] = .int64((previous["count"]?.integerValue ?? 0) + 1)
      death = previous
      deaths.remove(at: index)
    }
    death.entries.sort { $0.key < $1.key }
    deaths.insert(.table(death), at: 0)
    if headers["x-death"] == nil {
      headers["x-first-death-exchange"] = .longString(message.exchange)
      headers["x-first-death-queue"] = .longString(queue.name)
      headers["x-first-death-reason"] = .longString(reason.rawValue)
    }
    headers["x-death"] = .array(deaths)
    var keys = deathKeys
    if let routingKey = queue.options.deadLetterRoutingKey {
      keys = [routingKey]
      headers["CC"] = nil
    }
    properties.headers = headers
    let deadLettered = Message.make(
      exchange: exchangeName, routingKey: keys[0], properties: properties, body: message.body)
    var targets = self.queues(routing: deadLettered, keys: keys, from: exchange)
    if reason != .rejected {
      targets.removeAll { Self.isCycle(deaths, to: $0.name) }
    }
    for target in targets { target.enqueue(deadLettered) }
  }

  /// Whether dead-lettering to `queue` closes a cycle with no rejection in it: its `x-death` entries, most recent
  /// first, reach one for `queue` and none on the way (that one included) says rejected (RabbitMQ's check).
  static func isCycle(_ deaths: [FieldValue], to queue: String) -> Bool {
    for case .table(let death) in deaths {
      if death["reason"] == .longString(DeadLetterReason.rejected.rawValue) { return false }
      if death["queue"] == .longString(queue) { return true }
    }
    return false
  }

  static func isDeath(_ value: FieldValue, queue: String, reason: DeadLetterReason) -> Bool {
    guard case .table(let death) = value else { return false }
    return death["queue"] == .longString(queue) && death["reason"] == .longString(reason.rawValue)
  }

  /// The routing keys of a `CC` or `BCC` header (a string or an array of strings).
  static func routingKeys(in value: FieldValue?) -> [String] {
    switch value {
    case .array(let values)?: return values.compactMap(\.stringValue)
    case .longString(let key)?: return [key]
    default: return []
    }
  }
}
