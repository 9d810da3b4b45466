import AMQPProtocol

/// A binding: from a source exchange to a queue or an exchange, with a routing key and arguments.
public struct Binding: Equatable {
  /// The source exchange's name.
  public let source: String
  /// Where matching messages go.
  public let destination: Destination
  /// The binding key.
  public let routingKey: String
  /// The binding's arguments (the headers exchange matches on these).
  public let arguments: FieldTable

  public init(source: String, destination: Destination, routingKey: String, arguments: FieldTable) {
    self.source = source
    self.destination = destination
    self.routingKey = routingKey
    self.arguments = arguments
  }

  public static func == (lhs: Binding, rhs: Binding) -> Bool {
    lhs.source == rhs.source && lhs.destination == rhs.destination && lhs.routingKey == rhs.routingKey
      && lhs.arguments == rhs.arguments
  }
}

/// What a router sees of a message.
public struct RoutingInput {
  /// The routing key it was published with.
  public let routingKey: String
  /// The message (its properties carry the headers).
  public let message: Message

  public init(routingKey: String, message: Message) {
    self.routingKey = routingKey
    self.message = message
  }
}

/// The destinations a message is routed to, each at most once.
public struct RouteSet {
  @usableFromInline var destinations: [Destination] = []
  @usableFromInline var epoch: UInt64 = 0

  public init() {}

  /// Adds a destination unless it is already in the set.
  @inlinable
  public mutating func insert(_ destination: Destination) {
    if destination.routeEpoch != self.epoch {
      destination.routeEpoch = self.epoch
      self.destinations.append(destination)
    }
  }

  /// The number of destinations.
  public var count: Int { self.destinations.count }

  mutating func reset(epoch: UInt64) {
    self.destinations.removeAll(keepingCapacity: true)
    self.epoch = epoch
  }
}

/// An exchange type: the extension point of the broker, modelled on RabbitMQ's `rabbit_exchange_type`.
///
/// A type validates what is declared with it and makes a ``ExchangeRouter`` for each exchange of the type.
/// The router keeps its own index, updated as bindings come and go, so that routing a message never scans
/// every binding.
public protocol ExchangeType: Sendable {
  /// The name clients declare it by, e.g. `"direct"`.
  var name: String { get }
  /// A one-line description.
  var description: String { get }
  /// Checks an exchange's declare arguments; throw a 406 ``BrokerError`` to refuse them.
  func validate(exchangeArguments: FieldTable) throws(BrokerError)
  /// Checks an exchange's declare arguments knowing the other registered types (a type that routes like another
  /// checks that it exists); calls ``validate(exchangeArguments:)`` unless a type implements it.
  func validate(exchangeArguments: FieldTable, registry: ExchangeRegistry) throws(BrokerError)
  /// Checks a binding's key and arguments; throw a 406 ``BrokerError`` to refuse them.
  func validate(bindingKey: String, arguments: FieldTable) throws(BrokerError)
  /// Checks a binding knowing its exchange and the other types; calls ``validate(bindingKey:arguments:)`` unless a
  /// type implements it.
  func validate(bindingKey: String, arguments: FieldTable, exchange: Exchange, registry: ExchangeRegistry)
    throws(BrokerError)
  /// Makes the router of a newly created exchange of this type.
  func makeRouter(exchangeName: String, arguments: FieldTable) -> any ExchangeRouter
  /// Makes the router of a newly created exchange with what the broker offers it besides bindings (a queue that
  /// holds messages until they are due, publishing anew, the other types); calls
  /// ``makeRouter(exchangeName:arguments:)`` unless a type implements it. A type implements one of the two.
  func makeRouter(context: ExchangeContext) -> any ExchangeRouter
  /// The exchanges of this type every virtual host has from the start (`amq.topic` for topic); none by default.
  var predeclaredExchanges: [String] { get }
}

extension ExchangeType {
  public var predeclaredExchanges: [String] { [] }
  public func validate(exchangeArguments: FieldTable) throws(BrokerError) {}
  public func validate(exchangeArguments: FieldTable, registry: ExchangeRegistry) throws(BrokerError) {
    try self.validate(exchangeArguments: exchangeArguments)
  }
  public func makeRouter(context: ExchangeContext) -> any ExchangeRouter {
    self.makeRouter(exchangeName: context.exchangeName, arguments: context.arguments)
  }
  /// A type that implements ``makeRouter(context:)`` needs no other: this one routes nowhere.
  public func makeRouter(exchangeName: String, arguments: FieldTable) -> any ExchangeRouter { UnroutableRouter() }
  public func validate(bindingKey: String, arguments: FieldTable) throws(BrokerError) {}
  public func validate(bindingKey: String, arguments: FieldTable, exchange: Exchange, registry: ExchangeRegistry)
    throws(BrokerError)
  {
    try self.validate(bindingKey: bindingKey, arguments: arguments)
  }
}

/// The routing index of one exchange. Called on the broker's event loop only.
public protocol ExchangeRouter: AnyObject {
  /// A binding from this exchange was added.
  func bindingAdded(_ binding: Binding)
  /// A binding from this exchange was removed.
  func bindingRemoved(_ binding: Binding)
  /// The exchange is being deleted (its bindings are removed first).
  func exchangeDeleted()
  /// Adds the destinations of a message to `routes`.
  func route(_ input: RoutingInput, into routes: inout RouteSet)
}

extension ExchangeRouter {
  public func exchangeDeleted() {}
}

/// Routes nowhere (the router of a type that makes its routers with a context, made without one).
final class UnroutableRouter: ExchangeRouter {
  func bindingAdded(_ binding: Binding) {}
  func bindingRemoved(_ binding: Binding) {}
  func route(_ input: RoutingInput, into routes: inout RouteSet) {}
}

/// Exchange types by name. The core registers direct and fanout; plugins register theirs at start-up.
public struct ExchangeRegistry: Sendable {
  private var byName: [String: any ExchangeType] = [:]

  /// A registry with the core's types: direct and fanout.
  public init() {
    self.register(DirectExchangeType())
    self.register(FanoutExchangeType())
  }

  /// Adds (or replaces) a type under its name.
  public mutating func register(_ type: any ExchangeType) {
    self.byName[type.name] = type
  }

  /// The type registered under a name.
  public func type(named name: String) -> (any ExchangeType)? {
    self.byName[name]
  }

  /// The names of every registered type, sorted.
  public var names: [String] { self.byName.keys.sorted() }

  /// Every registered type, sorted by name.
  public var types: [any ExchangeType] { self.names.compactMap { self.byName[$0] } }
}

/// `direct`: a message goes to the bindings whose key equals its routing key.
public struct DirectExchangeType: ExchangeType {
  public init() {}
  public var name: String { "direct" }
  public var description: String { "AMQP direct exchange, as per the AMQP specification" }
  public var predeclaredExchanges: [String] { ["amq.direct"] }
  public func makeRouter(exchangeName: String, arguments: FieldTable) -> any ExchangeRouter { DirectRouter() }
}

final class DirectRouter: ExchangeRouter {
  /// The destinations of one key; `singleQueue` when that is exactly one queue (the common case, routed without
  /// building a route set).
  struct Route {
    var destinations: [Destination]
    var singleQueue: Queue?
  }

  private var byKey: [String: Route] = [:]
  private var bindings: [String: [Binding]] = [:]

  func bindingAdded(_ binding: Binding) {
    self.bindings[binding.routingKey, default: []].append(binding)
    self.rebuild(binding.routingKey)
  }

  func bindingRemoved(_ binding: Binding) {
    self.bindings[binding.routingKey]?.removeAll { $0 == binding }
    if self.bindings[binding.routingKey]?.isEmpty == true { self.bindings[binding.routingKey] = nil }
    self.rebuild(binding.routingKey)
  }

  private func rebuild(_ key: String) {
    guard let list = self.bindings[key] else {
      self.byKey[key] = nil
      return
    }
    var unique: [Destination] = []
    for b in list where !unique.contains(b.destination) { unique.append(b.destination) }
    let single = unique.count == 1 ? unique[0].queue : nil
    self.byKey[key] = Route(destinations: unique, singleQueue: single)
  }

  /// The one queue a key routes to, if it routes to exactly one queue and nothing else.
  @inline(__always)
  func singleQueue(for key: String) -> Queue? {
    self.byKey[key]?.singleQueue
  }

  func route(_ input: RoutingInput, into routes: inout RouteSet) {
    guard let route = self.byKey[input.routingKey] else { return }
    for d in route.destinations { routes.insert(d) }
  }
}

/// `fanout`: a message goes to every binding, whatever its routing key.
public struct FanoutExchangeType: ExchangeType {
  public init() {}
  public var name: String { "fanout" }
  public var description: String { "AMQP fanout exchange, as per the AMQP specification" }
  public var predeclaredExchanges: [String] { ["amq.fanout"] }
  public func makeRouter(exchangeName: String, arguments: FieldTable) -> any ExchangeRouter { FanoutRouter() }
}

final class FanoutRouter: ExchangeRouter {
  private var bindings: [Binding] = []
  private var destinations: [Destination] = []

  func bindingAdded(_ binding: Binding) {
    self.bindings.append(binding)
    self.rebuild()
  }

  func bindingRemoved(_ binding: Binding) {
    self.bindings.removeAll { $0 == binding }
    self.rebuild()
  }

  private func rebuild() {
    var unique: [Destination] = []
    for b in self.bindings where !unique.contains(b.destination) { unique.append(b.destination) }
    self.destinations = unique
  }

  func route(_ input: RoutingInput, into routes: inout RouteSet) {
    for d in self.destinations { routes.insert(d) }
  }
}
