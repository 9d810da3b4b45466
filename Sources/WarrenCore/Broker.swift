import AMQPProtocol
import Crypto
import Foundation

/// A user that may log in.
public struct User: Sendable, Equatable {
  /// The user name.
  public var name: String
  /// The password as RabbitMQ stores it (`rabbit_password_hashing_sha256`): base64 of a 4-byte salt followed by
  /// SHA-256(salt + password). Definitions move between RabbitMQ and Warren with it unchanged.
  public var passwordHash: String
  /// Whether the user may log in only from a loopback address (RabbitMQ's rule for `guest`).
  public var loopbackOnly: Bool
  /// RabbitMQ's user tags: `administrator` (everything over HTTP), `monitoring`, `management`.
  public var tags: [String]

  /// A user with a plaintext password (hashed here with a random salt).
  public init(name: String, password: String, loopbackOnly: Bool = false, tags: [String] = []) {
    self.init(name: name, passwordHash: User.hash(password: password), loopbackOnly: loopbackOnly, tags: tags)
  }

  /// A user with a RabbitMQ password hash.
  public init(name: String, passwordHash: String, loopbackOnly: Bool = false, tags: [String] = []) {
    self.name = name
    self.passwordHash = passwordHash
    self.loopbackOnly = loopbackOnly
    self.tags = tags
  }

  /// Whether a peer's IP address is a loopback one (where `guest` may log in from).
  public static func isLoopback(address ip: String) -> Bool {
    ip.hasPrefix("127.") || ip == "::1" || ip.hasPrefix("::ffff:127.")
  }

  /// Whether the user has the `administrator` tag.
  public var isAdministrator: Bool { self.tags.contains("administrator") }

  /// RabbitMQ's `rabbit_password_hashing_sha256` of a password.
  public static func hash(password: String, salt: [UInt8]? = nil) -> String {
    let salt = salt ?? (0..<4).map { _ in UInt8.random(in: 0...255) }
    let digest = SHA256.hash(data: salt + Array(password.utf8))
    return Data(salt + Array(digest)).base64EncodedString()
  }

  /// Whether a password matches the hash.
  public func verify(password: String) -> Bool {
    guard let data = Data(base64Encoded: self.passwordHash), data.count == 36 else { return false }
    let bytes = [UInt8](data)
    return User.hash(password: password, salt: Array(bytes[0..<4])) == self.passwordHash
  }

  /// Whether a string is a well-formed RabbitMQ SHA-256 password hash.
  public static func isValidHash(_ hash: String) -> Bool {
    Data(base64Encoded: hash)?.count == 36
  }
}

/// What a user may do in a virtual host: three regular expressions over resource names, as in RabbitMQ
/// (`configure`: declare and delete; `write`: publish to and bind to; `read`: consume, get, purge and bind from).
/// An empty pattern matches nothing.
public struct Permission: Sendable, Equatable {
  public var configure: String
  public var write: String
  public var read: String

  public init(configure: String = ".*", write: String = ".*", read: String = ".*") {
    self.configure = configure
    self.write = write
    self.read = read
  }

  /// The kinds of access.
  public enum Access: String, Sendable { case configure, write, read }

  func pattern(for access: Access) -> String {
    switch access {
    case .configure: return self.configure
    case .write: return self.write
    case .read: return self.read
    }
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
  /// Milliseconds a delivery may stay unacknowledged before its channel is closed (406, RabbitMQ's
  /// `consumer_timeout`); 0 disables. A queue's `x-consumer-timeout` takes precedence.
  public var consumerTimeout: Int = 1_800_000
  /// Milliseconds a client has from connecting (TLS handshake included) to connection.open-ok (RabbitMQ's
  /// `handshake_timeout`).
  public var handshakeTimeout: Int = 10_000

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
  /// Limits by user (RabbitMQ's `max-connections`, `max-channels`).
  public var userLimits: [String: UserLimits] = [:]
  /// Connections and channels open now, by user (for the user limits).
  public var userConnections: [String: Int] = [:]
  public var userChannels: [String: Int] = [:]
  /// Connections open at once over the whole broker (RabbitMQ's `connection_max`); nil for no limit.
  public var connectionMax: Int?
  /// Connections past connection.open now.
  public var openConnectionCount = 0
  /// Permissions by user, then by virtual host. A user without an entry for a vhost cannot open it.
  public var permissions: [String: [String: Permission]] = [:]
  private var compiledPatterns: [String: Regex<AnyRegexOutput>] = [:]
  /// Limits for connections.
  public var limits: BrokerLimits
  /// The product name and version announced to clients.
  public let version: String
  /// What the broker has done since it started (for the metrics endpoint).
  public let counters = BrokerCounters()
  /// The broker's time (refreshed by the event loop once per batch; manual in tests).
  public let clock: BrokerClock

  private var lastConnectionID: UInt64 = 0
  /// Runs the queues' timers (TTL, `x-expires`) of every virtual host, now and added later.
  public weak var timers: (any QueueTimers)? {
    didSet { for vhost in self.vhosts.values { vhost.timers = self.timers } }
  }
  /// Called with each virtual host added after it is set (the store attaches its storage and observer).
  public var virtualHostAdded: ((VirtualHost) -> Void)?

  /// Creates a broker with the default vhost (`/` unless told otherwise) and the default user `guest` (loopback
  /// only, all permissions in the default vhost), as RabbitMQ does.
  public init(
    registry: ExchangeRegistry = ExchangeRegistry(), limits: BrokerLimits = BrokerLimits(), version: String = "0.1.0",
    defaultVirtualHost: String = "/", clock: BrokerClock = BrokerClock()
  ) {
    self.registry = registry
    self.clock = clock
    self.limits = limits
    self.version = version
    self.addVirtualHost(defaultVirtualHost)
    self.users["guest"] = User(name: "guest", password: "guest", loopbackOnly: true, tags: ["administrator"])
    self.permissions["guest"] = [defaultVirtualHost: Permission()]
  }

  /// Whether a user may open a virtual host.
  public func mayOpen(virtualHost: String, user: String) -> Bool {
    self.permissions[user]?[virtualHost] != nil
  }

  /// Checks an access to a resource (an exchange or queue name) and throws RabbitMQ's 403 when it is refused.
  public func authorize(
    _ access: Permission.Access, _ kind: String, _ name: String, vhost: String, user: String
  ) throws(BrokerError) {
    guard let permission = self.permissions[user]?[vhost] else {
      throw .accessRefused("access to \(kind) '\(name)' in vhost '\(vhost)' refused for user '\(user)'")
    }
    let pattern = permission.pattern(for: access)
    if pattern == ".*" { return }
    if !pattern.isEmpty, let regex = self.regex(pattern), (try? regex.firstMatch(in: name)) != nil { return }
    throw .accessRefused("access to \(kind) '\(name)' in vhost '\(vhost)' refused for user '\(user)'")
  }

  private func regex(_ pattern: String) -> Regex<AnyRegexOutput>? {
    if let cached = self.compiledPatterns[pattern] { return cached }
    guard let regex = try? Regex(pattern) else { return nil }
    self.compiledPatterns[pattern] = regex
    return regex
  }

  /// Adds a virtual host (a no-op if it exists) and returns it.
  @discardableResult
  public func addVirtualHost(_ name: String) -> VirtualHost {
    if let existing = self.vhosts[name] { return existing }
    let vhost = VirtualHost(name: name, registry: self.registry, counters: self.counters, clock: self.clock)
    vhost.timers = self.timers
    self.vhosts[name] = vhost
    self.virtualHostAdded?(vhost)
    return vhost
  }

  /// Removes a virtual host: every queue (with its messages), exchange and binding in it, its permissions. Its
  /// connections are the caller's to close first.
  public func removeVirtualHost(_ name: String) {
    guard let vhost = self.vhosts.removeValue(forKey: name) else { return }
    vhost.removeAll()
    for user in self.permissions.keys { self.permissions[user]?[name] = nil }
  }

  /// A new identifier for a connection (exclusive queues are owned by it).
  public func nextConnectionID() -> UInt64 {
    self.lastConnectionID += 1
    return self.lastConnectionID
  }

  /// The user a verified TLS client certificate names (EXTERNAL): it must exist; no password is checked.
  public func authenticate(certificateUser name: String, fromLoopback: Bool) -> User? {
    guard let user = self.users[name] else { return nil }
    if user.loopbackOnly && !fromLoopback { return nil }
    return user
  }

  /// Checks credentials; returns the user or nil.
  public func authenticate(user name: String, password: String, fromLoopback: Bool) -> User? {
    guard let user = self.users[name], user.verify(password: password) else { return nil }
    if user.loopbackOnly && !fromLoopback { return nil }
    return user
  }
}
