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

  static func limitsObject(_ values: [(name: String, value: Int)]) -> [String: Any] {
    Dictionary(values.map { ($0.name, $0.value as Any) }, uniquingKeysWith: { first, _ in first })
  }

  func definitionsObject(rabbitSpelling: Bool) -> [String: Any] {
    var object = self.topologyObject(rabbitSpelling: rabbitSpelling)
    if rabbitSpelling {
      // RabbitMQ keeps vhost limits as runtime parameters (its import ignores `limits` on a vhost entry).
      object["parameters"] = self.vhosts.compactMap { name -> [String: Any]? in
        guard let limits = self.vhostLimits[name], !limits.isEmpty else { return nil }
        return ["vhost": name, "component": "vhost-limits", "name": "limits", "value": Self.limitsObject(limits.named)]
      }
    }
    return object
  }

  private func topologyObject(rabbitSpelling: Bool) -> [String: Any] {
    [
      "vhosts": self.vhosts.map { name -> [String: Any] in
        guard !rabbitSpelling, let limits = self.vhostLimits[name], !limits.isEmpty else { return ["name": name] }
        return [
          "name": name,
          "limits": Self.limitsObject(limits.named),
        ]
      },
      "users": self.users.map { user -> [String: Any] in
        var object: [String: Any] = [
          "name": user.name, "password_hash": user.passwordHash ?? User.hash(password: user.password ?? ""),
          "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": user.tags,
        ]
        if let limits = self.userLimits[user.name], !limits.isEmpty {
          object["limits"] = Self.limitsObject(limits.named)
        }
        return object
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

extension WarrenConfiguration {
  /// The running topology of a broker, as a configuration: vhosts, users (with their hashes), permissions, and the
  /// exchanges, queues and bindings clients or files declared (not the default and `amq.*` exchanges, not
  /// exclusive queues, which belong to a connection). Call it on the broker's event loop.
  public init(runningTopologyOf broker: Broker) {
    self.init()
    self.vhosts = broker.vhosts.keys.sorted()
    for (name, vhost) in broker.vhosts where !vhost.limits.isEmpty { self.vhostLimits[name] = vhost.limits }
    self.userLimits = broker.userLimits.filter { !$0.value.isEmpty }
    self.users = broker.users.values.sorted { $0.name < $1.name }.map {
      UserDefinition(name: $0.name, passwordHash: $0.passwordHash, tags: $0.tags)
    }
    self.permissions = broker.permissions.keys.sorted().flatMap { user in
      (broker.permissions[user] ?? [:]).keys.sorted().map { vhost in
        PermissionDefinition(user: user, vhost: vhost, permission: broker.permissions[user]![vhost]!)
      }
    }
    for vhostName in self.vhosts {
      guard let vhost = broker.vhosts[vhostName] else { continue }
      self.policies += vhost.policies.map { PolicyDefinition(vhost: vhostName, $0) }
      self.operatorPolicies += vhost.operatorPolicies.map { PolicyDefinition(vhost: vhostName, $0) }
      for exchange in vhost.exchanges.values.sorted(by: { $0.name < $1.name })
      where !exchange.name.isEmpty && !exchange.name.hasPrefix("amq.") {
        self.exchanges.append(
          ExchangeDefinition(
            vhost: vhostName, name: exchange.name, type: exchange.type.name, durable: exchange.durable,
            autoDelete: exchange.autoDelete, isInternal: exchange.isInternal, arguments: exchange.arguments))
      }
      for queue in vhost.queues.values.sorted(by: { $0.name < $1.name })
      where queue.exclusiveOwner == nil && !queue.isHolding {  // a holding queue is the broker's, made by its exchange
        self.queues.append(
          QueueDefinition(
            vhost: vhostName, name: queue.name, durable: queue.durable, autoDelete: queue.autoDelete,
            arguments: queue.arguments))
      }
      for binding in vhost.bindings.sorted(by: { ($0.source, $0.destination.name) < ($1.source, $1.destination.name) })
      {
        if binding.destination.queue?.exclusiveOwner != nil {
          continue
        }
        self.bindings.append(
          BindingDefinition(
            vhost: vhostName, source: binding.source, destination: binding.destination.name,
            destinationKind: binding.destination.queue != nil ? .queue : .exchange,
            routingKey: binding.routingKey, arguments: binding.arguments))
      }
    }
  }
}

extension PolicyDefinition {
  /// The definition of a policy a vhost applies.
  public init(vhost: String, _ policy: Policy) {
    self.init(
      name: policy.name, vhost: vhost, pattern: policy.pattern, applyTo: policy.applyTo.rawValue,
      priority: policy.priority, definition: policy.definition)
  }
}
