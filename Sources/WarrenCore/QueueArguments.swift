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
    func invalid(_ key: String, _ reason: String) -> BrokerError {
      .preconditionFailed("invalid arg '\(key)' for \(describe("queue", queue, vhost: vhost)): \(reason)")
    }
    for entry in arguments {
      let key = entry.key
      let value = entry.value
      switch key {
      case "x-expires", "x-message-ttl", "x-max-length", "x-max-length-bytes", "x-max-priority":
        guard let n = value.integerValue else { throw invalid(key, "\"expected integer, got \(typeName(value))\"") }
        if key == "x-expires" && n <= 0 { throw invalid(key, "{value_zero,\(n)}") }
        if n < 0 { throw invalid(key, "{value_negative,\(n)}") }
        if key == "x-max-priority" && n > 255 { throw invalid(key, "{value_too_large,\(n),255}") }
      case "x-dead-letter-exchange", "x-dead-letter-routing-key":
        guard value.stringValue != nil else { throw invalid(key, "\"expected string, got \(typeName(value))\"") }
        if key == "x-dead-letter-routing-key" && arguments["x-dead-letter-exchange"] == nil {
          throw invalid(key, "routing_key_but_no_dlx_defined")
        }
      case "x-overflow":
        guard let s = value.stringValue, ["drop-head", "reject-publish", "reject-publish-dlx"].contains(s) else {
          throw invalid(key, "{invalid_overflow_value,\(show(value))}")
        }
      case "x-queue-mode":
        guard let s = value.stringValue, ["default", "lazy"].contains(s) else {
          throw invalid(key, "{invalid_queue_mode,\(show(value))}")
        }
      case "x-queue-type":
        guard let s = value.stringValue, s == "classic" else {
          throw invalid(key, "only classic queues are supported, not \(show(value))")
        }
      case "x-single-active-consumer":
        guard value.boolValue != nil else { throw invalid(key, "\"expected bool, got \(typeName(value))\"") }
      default:
        continue
      }
    }
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
