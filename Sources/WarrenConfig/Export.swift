import AMQPProtocol
import Foundation
import WarrenCore
import Yams

extension WarrenConfiguration {
  /// The topology as RabbitMQ's definitions JSON (`rabbitmqctl import_definitions` reads it). Plaintext
  /// passwords are hashed the way RabbitMQ does.
  public func rabbitMQDefinitionsJSON() throws -> String {
    var object = self.definitionsObject(rabbitSpelling: true)
    object["rabbit_version"] = "3.10.8"
    object["product_name"] = "Warren"
    let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    return String(decoding: data, as: UTF8.self)
  }

  /// The topology in Warren's YAML form (the `server` section left out).
  public func yaml() throws -> String {
    try Yams.dump(object: self.definitionsObject(rabbitSpelling: false), sortKeys: true)
  }

  func definitionsObject(rabbitSpelling: Bool) -> [String: Any] {
    [
      "vhosts": self.vhosts.map { ["name": $0] },
      "users": self.users.map { user -> [String: Any] in
        [
          "name": user.name, "password_hash": user.passwordHash ?? User.hash(password: user.password ?? ""),
          "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": [String](),
        ]
      },
      "permissions": self.permissions.map {
        [
          "user": $0.user, "vhost": $0.vhost, "configure": $0.permission.configure, "write": $0.permission.write,
          "read": $0.permission.read,
        ]
      },
      "policies": self.policies.map { policy -> [String: Any] in
        [
          "name": policy.name, "vhost": policy.vhost, "pattern": policy.pattern,
          rabbitSpelling ? "apply-to" : "apply_to": policy.applyTo, "priority": policy.priority,
          "definition": Self.json(policy.definition),
        ]
      },
      "exchanges": self.exchanges.map { exchange -> [String: Any] in
        [
          "name": exchange.name, "vhost": exchange.vhost, "type": exchange.type, "durable": exchange.durable,
          "auto_delete": exchange.autoDelete, "internal": exchange.isInternal,
          "arguments": Self.json(exchange.arguments),
        ]
      },
      "queues": self.queues.map { queue -> [String: Any] in
        [
          "name": queue.name, "vhost": queue.vhost, "durable": queue.durable, "auto_delete": queue.autoDelete,
          "arguments": Self.json(queue.arguments),
        ]
      },
      "bindings": self.bindings.map { binding -> [String: Any] in
        [
          "source": binding.source, "vhost": binding.vhost, "destination": binding.destination,
          "destination_type": binding.destinationKind.rawValue, "routing_key": binding.routingKey,
          "arguments": Self.json(binding.arguments),
        ]
      },
    ]
  }

  static func json(_ table: FieldTable) -> [String: Any] {
    var object: [String: Any] = [:]
    for entry in table { object[entry.key] = Self.json(entry.value) }
    return object
  }

  static func json(_ value: FieldValue) -> Any {
    switch value {
    case .bool(let b): return b
    case .longString(let s): return s
    case .array(let values): return values.map(Self.json)
    case .table(let t): return Self.json(t)
    case .float(let f): return Double(f)
    case .double(let d): return d
    case .void: return NSNull()
    case .bytes(let b): return String(decoding: b, as: UTF8.self)
    case .timestamp(let t): return Int(t)
    case .decimal(let scale, let v): return Double(v) / pow(10, Double(scale))
    default: return Int(value.integerValue ?? 0)
    }
  }
}
