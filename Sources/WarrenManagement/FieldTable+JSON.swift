import AMQPProtocol
import Foundation

extension JSONValue {
  /// An AMQP table as JSON, as RabbitMQ shows arguments and headers.
  init(_ table: FieldTable) {
    self = .object(table.entries.map { ($0.key, JSONValue($0.value)) })
  }

  /// An AMQP field value as JSON.
  init(_ value: FieldValue) {
    switch value {
    case .bool(let b): self = .bool(b)
    case .longString(let s): self = .string(s)
    case .array(let values): self = .array(values.map(JSONValue.init))
    case .table(let t): self = JSONValue(t)
    case .float(let f): self = .double(Double(f))
    case .double(let d): self = .double(d)
    case .void: self = .null
    case .bytes(let b): self = .string(String(decoding: b, as: UTF8.self))
    case .timestamp(let t): self = .int(Int64(clamping: t))
    case .decimal(let scale, let v): self = .double(Double(v) / pow(10, Double(scale)))
    default: self = .int(value.integerValue ?? 0)
    }
  }

  /// The AMQP table for a JSON object (arguments, headers): integers as signed 64-bit, text as long strings.
  func fieldTable() throws(ManagementError) -> FieldTable {
    switch self {
    case .null: return [:]
    case .object(let members):
      var table = FieldTable()
      for (key, value) in members { table[key] = try value.fieldValue() }
      return table
    default: throw .badRequest("arguments must be an object")
    }
  }

  func fieldValue() throws(ManagementError) -> FieldValue {
    switch self {
    case .null: return .void
    case .bool(let b): return .bool(b)
    case .int(let i): return .int64(i)
    case .double(let d): return .double(d)
    case .string(let s): return .longString(s)
    case .array(let items):
      var values: [FieldValue] = []
      for item in items { values.append(try item.fieldValue()) }
      return .array(values)
    case .object: return .table(try self.fieldTable())
    }
  }
}

extension JSONValue {
  /// Basic properties as RabbitMQ shows them in `/api/queues/.../get` (only those set).
  init(_ properties: BasicProperties) {
    var members: [(String, JSONValue)] = []
    if let v = properties.contentType { members.append(("content_type", .string(v))) }
    if let v = properties.contentEncoding { members.append(("content_encoding", .string(v))) }
    if let v = properties.headers { members.append(("headers", JSONValue(v))) }
    if let v = properties.deliveryMode { members.append(("delivery_mode", .int(Int64(v)))) }
    if let v = properties.priority { members.append(("priority", .int(Int64(v)))) }
    if let v = properties.correlationId { members.append(("correlation_id", .string(v))) }
    if let v = properties.replyTo { members.append(("reply_to", .string(v))) }
    if let v = properties.expiration { members.append(("expiration", .string(v))) }
    if let v = properties.messageId { members.append(("message_id", .string(v))) }
    if let v = properties.timestamp { members.append(("timestamp", .int(Int64(clamping: v)))) }
    if let v = properties.type { members.append(("type", .string(v))) }
    if let v = properties.userId { members.append(("user_id", .string(v))) }
    if let v = properties.appId { members.append(("app_id", .string(v))) }
    if let v = properties.clusterId { members.append(("cluster_id", .string(v))) }
    self = .object(members)
  }

  /// Basic properties from the JSON of `/api/exchanges/.../publish` (unknown keys are refused, as RabbitMQ does).
  func basicProperties() throws(ManagementError) -> BasicProperties {
    var properties = BasicProperties()
    guard case .object(let members) = self else {
      if case .null = self { return properties }
      throw .badRequest("properties must be an object")
    }
    for (key, value) in members {
      func text() throws(ManagementError) -> String {
        guard let s = value.stringValue else { throw .badRequest("property \(key) must be a string") }
        return s
      }
      func number(_ range: ClosedRange<Int64>) throws(ManagementError) -> Int64 {
        guard let n = value.intValue, range.contains(n) else { throw .badRequest("property \(key) out of range") }
        return n
      }
      switch key {
      case "content_type": properties.contentType = try text()
      case "content_encoding": properties.contentEncoding = try text()
      case "headers": properties.headers = try value.fieldTable()
      case "delivery_mode": properties.deliveryMode = UInt8(try number(1...2))
      case "priority": properties.priority = UInt8(try number(0...255))
      case "correlation_id": properties.correlationId = try text()
      case "reply_to": properties.replyTo = try text()
      case "expiration": properties.expiration = try text()
      case "message_id": properties.messageId = try text()
      case "timestamp": properties.timestamp = UInt64(try number(0...Int64.max))
      case "type": properties.type = try text()
      case "user_id": properties.userId = try text()
      case "app_id": properties.appId = try text()
      case "cluster_id": properties.clusterId = try text()
      default: throw .badRequest("unknown property \(key)")
      }
    }
    return properties
  }
}
