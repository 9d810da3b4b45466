import AMQPProtocol
import WarrenCore
import Yams

/// A problem found in a configuration file: where, and what was expected.
public struct ConfigProblem: Error, Sendable, Equatable, CustomStringConvertible {
  public var file: String
  public var line: Int
  public var column: Int
  public var message: String

  public var description: String { "\(file):\(line):\(column): \(message)" }
}

/// Every problem found in a configuration file.
public struct ConfigProblems: Error, Sendable, CustomStringConvertible {
  public var problems: [ConfigProblem]
  public var description: String { self.problems.map(\.description).joined(separator: "\n") }
}

/// The `server` section: listeners, limits, logging.
public struct ServerSettings: Sendable, Equatable {
  public var amqpBind = "127.0.0.1"
  public var amqpPort = 5672
  /// Whether the plain (non-TLS) AMQP listener opens.
  public var amqpPlain = true
  /// The AMQPS port (opened when a certificate and key are set).
  public var tlsPort = 5671
  /// PEM files: the server's certificate chain, its key, and the CAs client certificates are checked against.
  public var tlsCertificate = ""
  public var tlsKey = ""
  public var tlsCA = ""
  /// `none`, `peer` or `require`; empty: `require` when a CA is given, else `none`.
  public var tlsVerify = ""
  /// `1.2` or `1.3`.
  public var tlsMinimumVersion = "1.2"
  /// Where EXTERNAL finds the user name: `common_name` or `subject_alternative_name`.
  public var tlsLoginFrom = "common_name"
  /// Whether the management and metrics ports speak HTTPS.
  public var managementTLS = false
  public var metricsTLS = false
  public var metricsBind = "127.0.0.1"
  public var metricsPort = 15692
  /// Whether `/metrics*` need basic authentication (Prometheus' `basic_auth`).
  public var metricsNeedAuthentication = false
  public var managementBind = "127.0.0.1"
  public var managementPort = 15672
  /// The largest request body the management API reads (RabbitMQ's `management.http.max_body_size`).
  public var managementMaxBody = 20 * 1024 * 1024
  public var dataDirectory = "data"
  public var heartbeat: UInt16 = 60
  public var frameMax: UInt32 = 131_072
  public var channelMax: UInt16 = 2047
  public var maxMessageSize = 128 * 1024 * 1024
  /// Milliseconds a delivery may stay unacknowledged (RabbitMQ's `consumer_timeout`); 0 disables.
  public var consumerTimeout = 1_800_000
  /// Connections open at once over the broker; 0 for no limit.
  public var connectionMax = 0
  /// Event loops for AMQPS sockets beside the broker's (0: the broker's loop serves them).
  public var connectionThreads = 0
  /// Whether the plain listener's sockets use those loops too.
  public var connectionThreadsPlain = false
  /// Milliseconds from connecting (TLS included) to connection.open-ok.
  public var handshakeTimeout = 10_000
  public var defaultVirtualHost = "/"
  public var logLevel = "info"
  /// The metric name prefix (`rabbitmq`, so that RabbitMQ's dashboards work).
  public var metricsPrefix = "rabbitmq"
  /// The memory high watermark: a fraction of the machine's (or container's) memory when at most 1, else bytes.
  /// Above it publishers are blocked (connection.blocked), as RabbitMQ's `vm_memory_high_watermark`.
  public var memoryHighWatermark = 0.4
  /// The free disk space, in bytes, below which publishers are blocked (RabbitMQ's `disk_free_limit`).
  public var diskFreeLimit = 50_000_000
  /// How long a graceful shutdown waits for publishers to finish and confirms to go out, in seconds.
  public var shutdownTimeout = 10.0
  /// Seconds an HTTP connection may send nothing (an unfinished request, an idle keep-alive) before it is closed.
  public var httpIdleTimeout = 30.0

  public init() {}

  /// Whether TLS is configured (a certificate and a key).
  public var tlsEnabled: Bool { !self.tlsCertificate.isEmpty && !self.tlsKey.isEmpty }

  /// The client-certificate check in effect: `none`, `peer` or `require`.
  public var effectiveTLSVerify: String {
    self.tlsVerify.isEmpty ? (self.tlsCA.isEmpty ? "none" : "require") : self.tlsVerify
  }

  /// Whether a string can prefix metric names.
  public static func isValidMetricsPrefix(_ prefix: String) -> Bool {
    guard let first = prefix.unicodeScalars.first, first.isASCII,
      first == "_" || first == ":" || first.properties.isAlphabetic
    else { return false }
    return prefix.unicodeScalars.allSatisfy {
      $0.isASCII && ($0 == "_" || $0 == ":" || $0.properties.isAlphabetic || ("0"..."9").contains($0))
    }
  }

  /// The memory high watermark in bytes, for a machine with `totalMemory` bytes.
  public func memoryLimit(totalMemory: Int) -> Int {
    self.memoryHighWatermark <= 1 ? Int(Double(totalMemory) * self.memoryHighWatermark) : Int(self.memoryHighWatermark)
  }

  /// The limits offered to clients.
  public var limits: BrokerLimits {
    var limits = BrokerLimits()
    limits.heartbeat = self.heartbeat
    limits.frameMax = self.frameMax
    limits.channelMax = self.channelMax
    limits.maxMessageSize = self.maxMessageSize
    limits.consumerTimeout = self.consumerTimeout
    limits.handshakeTimeout = self.handshakeTimeout
    return limits
  }
}

/// A declared user.
public struct UserDefinition: Sendable, Equatable {
  public var name: String
  /// A plaintext password (allowed, with a warning at start).
  public var password: String?
  /// RabbitMQ's `rabbit_password_hashing_sha256` hash.
  public var passwordHash: String?
  /// RabbitMQ's user tags (`administrator`, `monitoring`, `management`).
  public var tags: [String]

  public init(name: String, password: String? = nil, passwordHash: String? = nil, tags: [String] = []) {
    self.name = name
    self.password = password
    self.passwordHash = passwordHash
    self.tags = tags
  }

  var user: User {
    if let passwordHash { return User(name: self.name, passwordHash: passwordHash, tags: self.tags) }
    return User(name: self.name, password: self.password ?? "", tags: self.tags)
  }
}

/// A user's permissions in a virtual host.
public struct PermissionDefinition: Sendable, Equatable {
  public var user: String
  public var vhost: String
  public var permission: Permission

  public init(user: String, vhost: String, permission: Permission) {
    self.user = user
    self.vhost = vhost
    self.permission = permission
  }
}

/// A policy or an operator policy of one vhost, as RabbitMQ's (applied to its queues and exchanges).
public struct PolicyDefinition: Sendable, Equatable {
  public var name: String
  public var vhost: String
  public var pattern: String
  public var applyTo: String
  public var priority: Int
  public var definition: FieldTable

  public init(
    name: String, vhost: String, pattern: String, applyTo: String, priority: Int, definition: FieldTable
  ) {
    self.name = name
    self.vhost = vhost
    self.pattern = pattern
    self.applyTo = applyTo
    self.priority = priority
    self.definition = definition
  }

  /// The policy the broker applies.
  public var policy: Policy {
    Policy(
      name: self.name, pattern: self.pattern, applyTo: Policy.ApplyTo(rawValue: self.applyTo) ?? .all,
      priority: self.priority, definition: self.definition)
  }

  /// What is wrong with the definition's values (checked as queue arguments are), or nil. Keys Warren does not
  /// apply (RabbitMQ's `ha-mode`, `federation-upstream`, ...) are accepted, so that RabbitMQ definitions load.
  public func definitionProblem(operator isOperator: Bool) -> String? {
    if isOperator {
      for entry in self.definition where Policy.queueKeys[entry.key] != nil && !Policy.operatorKeys.contains(entry.key)
      {
        return "policy '\(self.name)': an operator policy cannot set '\(entry.key)'"
      }
    }
    for entry in self.definition {
      guard let argument = Policy.queueKeys[entry.key] else { continue }
      var arguments: FieldTable = [argument: entry.value]
      if argument == "x-dead-letter-routing-key" { arguments["x-dead-letter-exchange"] = .longString("") }
      do throws(BrokerError) {
        _ = try QueueOptions(arguments: arguments, queue: "policy", vhost: self.vhost)
      } catch {
        let reason = error.replyText.split(separator: ": ", maxSplits: 1).last.map(String.init) ?? error.replyText
        return "policy '\(self.name)': invalid value for '\(entry.key)': \(reason)"
      }
    }
    if let alternate = self.definition["alternate-exchange"], alternate.stringValue == nil {
      return "policy '\(self.name)': alternate-exchange must be a string"
    }
    return nil
  }
}

/// A declared exchange.
public struct ExchangeDefinition: Sendable, Equatable {
  public var vhost: String
  public var name: String
  public var type: String
  public var durable: Bool
  public var autoDelete: Bool
  public var isInternal: Bool
  public var arguments: FieldTable
}

/// A declared queue.
public struct QueueDefinition: Sendable, Equatable {
  public var vhost: String
  public var name: String
  public var durable: Bool
  public var autoDelete: Bool
  public var arguments: FieldTable
}

/// A declared binding, to a queue or an exchange.
public struct BindingDefinition: Sendable, Equatable {
  public enum DestinationKind: String, Sendable { case queue, exchange }
  public var vhost: String
  public var source: String
  public var destination: String
  public var destinationKind: DestinationKind
  public var routingKey: String
  public var arguments: FieldTable
}

/// Warren's configuration: server settings and the topology applied at boot.
public struct WarrenConfiguration: Sendable, Equatable {
  public var server = ServerSettings()
  public var vhosts: [String] = ["/"]
  public var users: [UserDefinition] = []
  public var permissions: [PermissionDefinition] = []
  public var policies: [PolicyDefinition] = []
  public var operatorPolicies: [PolicyDefinition] = []
  public var exchanges: [ExchangeDefinition] = []
  public var queues: [QueueDefinition] = []
  public var bindings: [BindingDefinition] = []
  /// Limits by vhost and by user (a vhost's or user's `limits:`).
  public var vhostLimits: [String: VirtualHostLimits] = [:]
  public var userLimits: [String: UserLimits] = [:]

  public init() {}

  /// Things worth a warning at start (plaintext passwords).
  public var warnings: [String] {
    self.users.filter { $0.passwordHash == nil }.map {
      "user '\($0.name)' has a plaintext password in the configuration; prefer password_hash"
    }
  }

  /// Declares the topology on a broker (made before the listener opens). Idempotent: an entity that exists with
  /// the same properties is left as it is; one that exists with other properties is an error.
  public func apply(to broker: Broker) throws(BrokerError) {
    for name in self.vhosts { broker.addVirtualHost(name) }
    for user in self.users { broker.users[user.name] = user.user }
    for grant in self.permissions {
      broker.addVirtualHost(grant.vhost)
      broker.permissions[grant.user, default: [:]][grant.vhost] = grant.permission
    }
    _ = self.applyLimits(to: broker)
    _ = self.applyPolicies(to: broker)
    for exchange in self.exchanges { try exchange.declare(on: broker) }
    for queue in self.queues { try queue.declare(on: broker) }
    for binding in self.bindings { _ = try binding.declare(on: broker) }
  }

  /// Sets the file's vhost and user limits (the ones the file names; others are left as they are); returns what
  /// changed.
  public func applyLimits(to broker: Broker) -> [String] {
    var log: [String] = []
    for (name, limits) in self.vhostLimits.sorted(by: { $0.key < $1.key }) {
      let vhost = broker.addVirtualHost(name)
      if vhost.limits != limits {
        vhost.limits = limits
        log.append("set the limits of vhost '\(name)'")
      }
    }
    for (name, limits) in self.userLimits.sorted(by: { $0.key < $1.key }) where broker.userLimits[name] != limits {
      broker.userLimits[name] = limits
      log.append("set the limits of user '\(name)'")
    }
    return log
  }

  /// Gives every vhost its policies and operator policies from the file (replacing what it had, so that a policy
  /// removed from the file goes) and applies them to existing queues and exchanges; returns what changed.
  public func applyPolicies(to broker: Broker) -> [String] {
    var log: [String] = []
    let names = Set(self.policies.map(\.vhost) + self.operatorPolicies.map(\.vhost))
    for name in names { broker.addVirtualHost(name) }
    for (name, vhost) in broker.vhosts.sorted(by: { $0.key < $1.key }) {
      let policies = self.policies.filter { $0.vhost == name }.map(\.policy)
      let operatorPolicies = self.operatorPolicies.filter { $0.vhost == name }.map(\.policy)
      let before = (vhost.policies + vhost.operatorPolicies).map(\.summary)
      let after = (policies + operatorPolicies).map(\.summary)
      if before == after { continue }
      log.append(
        "policies of vhost '\(name)': "
          + (policies.isEmpty ? "none" : policies.map(\.name).joined(separator: ", "))
          + (operatorPolicies.isEmpty
            ? "" : "; operator policies: " + operatorPolicies.map(\.name).joined(separator: ", ")))
      log += vhost.setPolicies(policies, operatorPolicies: operatorPolicies)
    }
    return log
  }

  /// Applies what a reloaded file adds to a live broker (vhosts, users, permissions, exchanges, queues,
  /// bindings) and returns a line for each addition and for each difference it leaves alone.
  public func applyAdditions(to broker: Broker) -> [String] {
    var log: [String] = []
    for name in self.vhosts where broker.vhosts[name] == nil {
      broker.addVirtualHost(name)
      log.append("added vhost '\(name)'")
    }
    for user in self.users {
      if broker.users[user.name] == nil {
        broker.users[user.name] = user.user
        log.append("added user '\(user.name)'")
      } else if let hash = user.passwordHash, broker.users[user.name]?.passwordHash != hash {
        log.append("not changed: the password of existing user '\(user.name)'")
      }
    }
    for grant in self.permissions {
      switch broker.permissions[grant.user]?[grant.vhost] {
      case nil:
        broker.permissions[grant.user, default: [:]][grant.vhost] = grant.permission
        log.append("added permissions of user '\(grant.user)' in vhost '\(grant.vhost)'")
      case let existing? where existing != grant.permission:
        log.append("not changed: the permissions of user '\(grant.user)' in vhost '\(grant.vhost)'")
      default:
        break
      }
    }
    log += self.applyLimits(to: broker)
    log += self.applyPolicies(to: broker)
    for exchange in self.exchanges {
      let existed = broker.vhosts[exchange.vhost]?.exchanges[exchange.name] != nil
      do {
        try exchange.declare(on: broker)
        if !existed { log.append("added exchange '\(exchange.name)' in vhost '\(exchange.vhost)'") }
      } catch {
        log.append("not changed: \(error.replyText)")
      }
    }
    for queue in self.queues {
      let existed = broker.vhosts[queue.vhost]?.queues[queue.name] != nil
      do {
        try queue.declare(on: broker)
        if !existed { log.append("added queue '\(queue.name)' in vhost '\(queue.vhost)'") }
      } catch {
        log.append("not changed: \(error.replyText)")
      }
    }
    for binding in self.bindings {
      do {
        if try binding.declare(on: broker) {
          log.append(
            "added binding from '\(binding.source)' to \(binding.destinationKind.rawValue) '\(binding.destination)'"
              + " with key '\(binding.routingKey)' in vhost '\(binding.vhost)'")
        }
      } catch {
        log.append("not changed: \(error.replyText)")
      }
    }
    return log
  }
}

extension ExchangeDefinition {
  /// exchange.declare on the broker (406 when it exists with other properties).
  func declare(on broker: Broker) throws(BrokerError) {
    try broker.addVirtualHost(self.vhost).declareExchange(
      name: self.name, type: self.type, durable: self.durable, autoDelete: self.autoDelete,
      isInternal: self.isInternal, arguments: self.arguments)
  }
}

extension QueueDefinition {
  /// queue.declare on the broker (406 when it exists with other properties).
  func declare(on broker: Broker) throws(BrokerError) {
    try broker.addVirtualHost(self.vhost).declareQueue(
      name: self.name, durable: self.durable, autoDelete: self.autoDelete, arguments: self.arguments, connection: 0,
      ignoringLimits: true)
  }
}

extension BindingDefinition {
  /// queue.bind or exchange.bind on the broker; returns whether the binding is new.
  func declare(on broker: Broker) throws(BrokerError) -> Bool {
    let vhost = broker.addVirtualHost(self.vhost)
    let before = vhost.bindings.count
    switch self.destinationKind {
    case .queue:
      try vhost.bindQueue(
        self.destination, to: self.source, routingKey: self.routingKey, arguments: self.arguments, connection: 0)
    case .exchange:
      try vhost.bindExchange(
        destination: self.destination, source: self.source, routingKey: self.routingKey, arguments: self.arguments)
    }
    return vhost.bindings.count > before
  }
}
