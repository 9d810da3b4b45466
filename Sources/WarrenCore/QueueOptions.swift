import AMQPProtocol

/// The `x-` arguments of queue.declare that RabbitMQ knows: validated on declare, compared on redeclare.
public enum QueueArguments {
  /// The arguments whose values must match when a queue is declared again.
  public static let equivalenceKeys = [
    "x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key", "x-max-length",
    "x-max-length-bytes", "x-max-priority", "x-overflow", "x-queue-mode", "x-queue-type", "x-single-active-consumer",
  ]

  /// Checks the types and ranges of the known arguments, with RabbitMQ's error texts.
  public static func validate(_ arguments: FieldTable, queue: String, vhost: String) throws(BrokerError) {
    _ = try QueueOptions(arguments: arguments, queue: queue, vhost: vhost)
  }

  /// The first of `keys` whose value differs between two argument tables (integers compare by value).
  public static func firstDifference(_ current: FieldTable, _ received: FieldTable, keys: [String]) -> String? {
    for key in keys {
      let a = current[key]
      let b = received[key]
      if let x = a?.integerValue, let y = b?.integerValue {
        if x != y { return key }
      } else if a != b {
        return key
      }
    }
    return nil
  }

  /// A value as RabbitMQ shows it in error texts.
  public static func show(_ value: FieldValue?) -> String {
    guard let value else { return "none" }
    switch value {
    case .longString(let s): return "'\(s)'"
    case .bool(let b): return "'\(b)'"
    default:
      if let n = value.integerValue { return "'\(n)'" }
      return "'\(value)'"
    }
  }

  /// Both sides of an inequivalent argument as RabbitMQ words them: plain values when both are set, "the value 'X'
  /// of type 'T'" beside "none" when one is missing.
  public static func showDifference(received: FieldValue?, current: FieldValue?) -> (String, String) {
    if received != nil && current != nil { return (self.show(received), self.show(current)) }
    func typed(_ value: FieldValue?) -> String {
      guard let value else { return "none" }
      let plain = self.show(value)
      return "the value \(plain) of type '\(self.wireTypeName(value))'"
    }
    return (typed(received), typed(current))
  }

  /// RabbitMQ's name of a field's wire type.
  static func wireTypeName(_ value: FieldValue) -> String {
    switch value {
    case .bool: return "bool"
    case .int8: return "byte"
    case .uint8: return "unsignedbyte"
    case .int16: return "short"
    case .uint16: return "unsignedshort"
    case .int32: return "signedint"
    case .uint32: return "unsignedint"
    case .int64: return "long"
    case .float: return "float"
    case .double: return "double"
    case .decimal: return "decimal"
    case .longString: return "longstr"
    case .bytes: return "binary"
    case .array: return "array"
    case .timestamp: return "timestamp"
    case .table: return "table"
    case .void: return "void"
    }
  }

  static func typeName(_ value: FieldValue) -> String {
    switch value {
    case .longString, .bytes: return "longstr"
    case .bool: return "bool"
    case .table: return "table"
    case .array: return "array"
    case .double, .float: return "double"
    case .void: return "void"
    case .timestamp: return "timestamp"
    case .decimal: return "decimal"
    default: return "long"
    }
  }
}

/// A queue's `x-` arguments, checked and parsed once at declare (and later from policies) into typed values.
public struct QueueOptions: Sendable, Equatable {
  /// What a full queue does with a new message (`x-overflow`).
  public enum Overflow: String, Sendable {
    case dropHead = "drop-head"
    case rejectPublish = "reject-publish"
    case rejectPublishDeadLetter = "reject-publish-dlx"
  }

  /// `x-message-ttl`, milliseconds.
  public var messageTTL: Int64?
  /// `x-expires`, milliseconds without use before the queue is deleted.
  public var expires: Int64?
  /// `x-max-length`, ready messages.
  public var maxLength: Int?
  /// `x-max-length-bytes`, ready body bytes.
  public var maxLengthBytes: Int?
  /// `x-overflow`.
  public var overflow: Overflow = .dropHead
  /// `x-dead-letter-exchange`.
  public var deadLetterExchange: String?
  /// `x-dead-letter-routing-key`.
  public var deadLetterRoutingKey: String?
  /// `x-max-priority`.
  public var maxPriority: Int?
  /// `x-single-active-consumer`.
  public var singleActiveConsumer = false
  /// `x-queue-mode: lazy`.
  public var isLazy = false
  /// `x-queue-type`.
  public var queueType: QueueType = .classic
  /// `x-delivery-limit` (quorum queues): a message requeued more often than this is dead-lettered.
  public var deliveryLimit: Int?
  /// `x-consumer-timeout`, milliseconds a delivery from this queue may stay unacknowledged.
  public var consumerTimeout: Int?

  /// The queue types declare accepts: a quorum queue is a durable queue with RabbitMQ's quorum semantics
  /// (delivery counts and limits), on this single node.
  public enum QueueType: String, Sendable {
    case classic
    case quorum
  }

  /// No options: an ordinary queue.
  public init() {}

  /// Parses declare arguments with RabbitMQ's checks and error texts (406 PRECONDITION_FAILED).
  public init(arguments: FieldTable, queue: String, vhost: String) throws(BrokerError) {
    func invalid(_ key: String, _ reason: String) -> BrokerError {
      .preconditionFailed("invalid arg '\(key)' for \(describe("queue", queue, vhost: vhost)): \(reason)")
    }
    for entry in arguments {
      let key = entry.key
      let value = entry.value
      switch key {
      case "x-expires", "x-message-ttl", "x-max-length", "x-max-length-bytes", "x-max-priority":
        guard let n = value.integerValue else {
          throw invalid(key, "\"expected integer, got \(QueueArguments.typeName(value))\"")
        }
        if key == "x-expires" && n <= 0 { throw invalid(key, "{value_zero,\(n)}") }
        if n < 0 { throw invalid(key, "{value_negative,\(n)}") }
        if key == "x-max-priority" && n > 255 { throw invalid(key, "{value_too_large,\(n),255}") }
        switch key {
        case "x-expires": self.expires = Int64(n)
        case "x-message-ttl": self.messageTTL = Int64(n)
        case "x-max-length": self.maxLength = Int(n)
        case "x-max-length-bytes": self.maxLengthBytes = Int(n)
        default: self.maxPriority = Int(n)
        }
      case "x-dead-letter-exchange", "x-dead-letter-routing-key":
        guard let s = value.stringValue else {
          throw invalid(key, "\"expected string, got \(QueueArguments.typeName(value))\"")
        }
        if key == "x-dead-letter-routing-key" {
          if arguments["x-dead-letter-exchange"] == nil { throw invalid(key, "routing_key_but_no_dlx_defined") }
          self.deadLetterRoutingKey = s
        } else {
          self.deadLetterExchange = s
        }
      case "x-overflow":
        guard let s = value.stringValue, let overflow = Overflow(rawValue: s) else {
          throw invalid(key, "{invalid_overflow_value,\(QueueArguments.show(value))}")
        }
        self.overflow = overflow
      case "x-queue-mode":
        guard let s = value.stringValue, ["default", "lazy"].contains(s) else {
          throw invalid(key, "{invalid_queue_mode,\(QueueArguments.show(value))}")
        }
        self.isLazy = s == "lazy"
      case "x-queue-type":
        guard let s = value.stringValue else {
          throw invalid(key, "{unacceptable_type,\(QueueArguments.typeName(value))}")
        }
        guard let type = QueueType(rawValue: s) else {
          throw invalid(key, "\"unsupported queue type '\(s)'\"")  // streams, too, until they exist
        }
        self.queueType = type
      case "x-consumer-timeout":
        guard let n = value.integerValue else {
          throw invalid(key, "\"expected integer, got \(QueueArguments.typeName(value))\"")
        }
        if n < 0 { throw invalid(key, "{value_negative,\(n)}") }
        self.consumerTimeout = Int(n)
      case "x-delivery-limit":
        if let n = value.integerValue, n >= 0 { self.deliveryLimit = Int(n) }  // other values ignored, as RabbitMQ
      case "x-single-active-consumer":
        guard let b = value.boolValue else {
          throw invalid(key, "\"expected bool, got \(QueueArguments.typeName(value))\"")
        }
        self.singleActiveConsumer = b
      default:
        continue
      }
    }
    if self.queueType == .quorum {
      for key in ["x-max-priority", "x-queue-mode"] where arguments[key] != nil {
        throw .preconditionFailed(
          "invalid arg '\(key)' for \(describe("queue", queue, vhost: vhost)) of queue type rabbit_quorum_queue")
      }
    } else {
      self.deliveryLimit = nil  // a classic queue ignores it, as RabbitMQ 3.x
    }
  }

  /// A quorum queue's properties, checked as RabbitMQ does: durable, not exclusive, not auto-delete.
  public func checkProperties(durable: Bool, exclusive: Bool, autoDelete: Bool, queue: String, vhost: String)
    throws(BrokerError)
  {
    guard self.queueType == .quorum else { return }
    let invalid = !durable ? "non-durable" : exclusive ? "exclusive-owner" : autoDelete ? "auto-delete" : nil
    if let invalid {
      throw .preconditionFailed("invalid property '\(invalid)' for \(describe("queue", queue, vhost: vhost))")
    }
  }
}
