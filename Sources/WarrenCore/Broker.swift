import AMQPProtocol

/// A user that may log in.
public struct User: Sendable, Equatable {
  /// The user name.
  public var name: String
  /// The password (the YAML issue adds RabbitMQ's hashes).
  public var password: String
  /// Whether the user may log in only from a loopback address (RabbitMQ's rule for `guest`).
  public var loopbackOnly: Bool

  public init(name: String, password: String, loopbackOnly: Bool = false) {
    self.name = name
    self.password = password
    self.loopbackOnly = loopbackOnly
  }
}

/// Limits negotiated with clients and enforced on them.
public struct BrokerLimits: Sendable, Equatable {
  /// The largest frame, as offered in connection.tune.
  public var frameMax: UInt32 = 131_072
  /// The most channels per connection, as offered in connection.tune.
  public var channelMax: UInt16 = 2047
  /// The heartbeat interval offered, in seconds (0 disables).
  public var heartbeat: UInt16 = 60
  /// The largest message body accepted.
  public var maxMessageSize: Int = 128 * 1024 * 1024

  public init() {}
}

/// The whole broker model: virtual hosts, users, exchange types and limits. Used on one event loop.
public final class Broker {
  /// The registered exchange types.
  public let registry: ExchangeRegistry
  /// Virtual hosts by name.
  public private(set) var vhosts: [String: VirtualHost] = [:]
  /// Users by name.
  public var users: [String: User] = [:]
  /// Limits for connections.
  public var limits: BrokerLimits
  /// The product name and version announced to clients.
  public let version: String

  private var lastConnectionID: UInt64 = 0

  /// Creates a broker with the default vhost `/` and the default user `guest` (loopback only), as RabbitMQ does.
  public init(
    registry: ExchangeRegistry = ExchangeRegistry(), limits: BrokerLimits = BrokerLimits(), version: String = "0.1.0"
  ) {
    self.registry = registry
    self.limits = limits
    self.version = version
    self.addVirtualHost("/")
    self.users["guest"] = User(name: "guest", password: "guest", loopbackOnly: true)
  }

  /// Adds a virtual host (a no-op if it exists) and returns it.
  @discardableResult
  public func addVirtualHost(_ name: String) -> VirtualHost {
    if let existing = self.vhosts[name] { return existing }
    let vhost = VirtualHost(name: name, registry: self.registry)
    self.vhosts[name] = vhost
    return vhost
  }

  /// A new identifier for a connection (exclusive queues are owned by it).
  public func nextConnectionID() -> UInt64 {
    self.lastConnectionID += 1
    return self.lastConnectionID
  }

  /// Checks credentials; returns the user or nil.
  public func authenticate(user name: String, password: String, fromLoopback: Bool) -> User? {
    guard let user = self.users[name], user.password == password else { return nil }
    if user.loopbackOnly && !fromLoopback { return nil }
    return user
  }
}
