import AMQPProtocol

/// RabbitMQ's limits of a virtual host; nil or a negative value is no limit.
public struct VirtualHostLimits: Sendable, Equatable {
  /// Connections open at once; 0 refuses every connection.
  public var maxConnections: Int?
  /// Queues; 0 refuses every new queue.
  public var maxQueues: Int?

  public init(maxConnections: Int? = nil, maxQueues: Int? = nil) {
    self.maxConnections = maxConnections
    self.maxQueues = maxQueues
  }

  public var isEmpty: Bool { self.maxConnections == nil && self.maxQueues == nil }

  /// Takes the limits given by RabbitMQ's names (`max-connections`, `max-queues`); others are ignored.
  public mutating func merge(_ values: [String: Int]) {
    if let value = values["max-connections"] { self.maxConnections = value }
    if let value = values["max-queues"] { self.maxQueues = value }
  }

  /// The limits set, by RabbitMQ's names, in its order.
  public var named: [(name: String, value: Int)] {
    [("max-connections", self.maxConnections), ("max-queues", self.maxQueues)].compactMap { n, v in v.map { (n, $0) } }
  }
}

/// RabbitMQ's limits of a user (over all its connections); nil or a negative value is no limit.
public struct UserLimits: Sendable, Equatable {
  public var maxConnections: Int?
  /// Channels open at once over all the user's connections.
  public var maxChannels: Int?

  public init(maxConnections: Int? = nil, maxChannels: Int? = nil) {
    self.maxConnections = maxConnections
    self.maxChannels = maxChannels
  }

  public var isEmpty: Bool { self.maxConnections == nil && self.maxChannels == nil }

  /// The limits set, by RabbitMQ's names, in its order.
  public var named: [(name: String, value: Int)] {
    [("max-connections", self.maxConnections), ("max-channels", self.maxChannels)].compactMap { n, v in
      v.map { (n, $0) }
    }
  }
}

/// A virtual host: its exchanges, queues and bindings, and routing. Used on the broker's event loop only.
public final class VirtualHost {
  /// Its name, e.g. `/`.
  public let name: String
  /// Its exchanges by name, the default exchange `""` included.
  public private(set) var exchanges: [String: Exchange] = [:]
  /// Its queues by name.
  public private(set) var queues: [String: Queue] = [:]
  /// The default exchange: routes to the queue named by the routing key.
  public let defaultExchange: Exchange
  /// RabbitMQ's vhost limits (`max-connections`, `max-queues`).
  public var limits = VirtualHostLimits()
  /// Connections open on it now (counted for `max-connections`).
  public var connectionCount = 0

  let registry: ExchangeRegistry
  /// The broker's counters (queues declared, created and deleted).
  public let counters: BrokerCounters
  /// The broker's time: queues stamp messages with it.
  public let clock: BrokerClock
  /// Makes the storage of each new queue; `recoverable` is true for a durable queue that is neither exclusive nor
  /// auto-delete (the store keeps its persistent messages). In memory by default.
  public var makeQueueStorage: (_ name: String, _ recoverable: Bool) -> any QueueStorage = { _, _ in
    InMemoryQueueStorage()
  }
  /// Hears of every exchange, queue and binding created or deleted (the store records the durable ones).
  public var topologyObserver: (any TopologyObserver)?
  /// Runs queues' timers (message TTL, `x-expires`); without one (a bare vhost in a test) expiry happens only
  /// when a queue is used.
  public weak var timers: (any QueueTimers)? {
    didSet {
      // Timers asked for before there were timers (queues recovered before the broker's loop runs) are set now.
      guard let timers else { return }
      for queue in self.queues.values {
        if let deadline = queue.scheduledTimer { timers.schedule(queue, at: deadline) }
      }
    }
  }
  /// The holders of holding queues by queue name (``ExchangeContext/register(_:)``).
  private var holders: [String: WeakHolder] = [:]
  /// Bumped by every change that can change where a message goes; a ``RouteCache`` is valid for one version.
  public private(set) var topologyVersion: UInt64 = 0
  /// The policies of this vhost, and its operator policies (``setPolicies(_:operatorPolicies:)``).
  public internal(set) var policies: [Policy] = []
  public internal(set) var operatorPolicies: [Policy] = []
  /// The channels consuming direct reply-to replies, by their reply-to names.
  var directReplyTargets: [String: WeakReplyTarget] = [:]
  private var routes = RouteSet()
  private var routeEpoch: UInt64 = 0
  private var serverNamedCounter: UInt64 = 0

  /// Creates a virtual host with the default exchange and the predeclared `amq.*` exchanges of every registered
  /// type that has one.
  public init(
    name: String, registry: ExchangeRegistry, counters: BrokerCounters = BrokerCounters(),
    clock: BrokerClock = BrokerClock()
  ) {
    self.name = name
    self.registry = registry
    self.counters = counters
    self.clock = clock
    self.defaultExchange = Exchange(
      name: "", type: DirectExchangeType(), durable: true, autoDelete: false, isInternal: false, arguments: [:])
    self.exchanges[""] = self.defaultExchange
    for type in registry.types {
      for exchangeName in type.predeclaredExchanges {
        self.exchanges[exchangeName] = Exchange(
          name: exchangeName, type: type, durable: true, autoDelete: false, isInternal: false, arguments: [:],
          vhost: self)
      }
    }
  }

  // MARK: Exchanges

  /// exchange.declare, with RabbitMQ's checks and replies.
  @discardableResult
  public func declareExchange(
    name: String,
    type typeName: String,
    passive: Bool = false,
    durable: Bool = false,
    autoDelete: Bool = false,
    isInternal: Bool = false,
    arguments: FieldTable = [:]
  ) throws(BrokerError) -> Exchange {
    if passive {
      if name.isEmpty { throw .accessRefused("operation not permitted on the default exchange") }
      guard let existing = self.exchanges[name] else {
        throw .notFound("no \(describe("exchange", name, vhost: self.name))")
      }
      return existing
    }
    if name.isEmpty {
      throw .accessRefused("operation not permitted on the default exchange")
    }
    try validateName(name, kind: "exchange")
    guard let type = self.registry.type(named: typeName) else {
      throw .commandInvalid("unknown exchange type '\(typeName)'")
    }
    if name.hasPrefix("amq.") && self.exchanges[name] == nil {
      throw .accessRefused("exchange name '\(name)' contains reserved prefix 'amq.*'")
    }
    if let existing = self.exchanges[name] {
      func inequivalent(_ arg: String, _ received: String, _ current: String) -> BrokerError {
        .preconditionFailed(
          "inequivalent arg '\(arg)' for \(describe("exchange", name, vhost: self.name)): "
            + "received '\(received)' but current is '\(current)'")
      }
      if existing.type.name != typeName { throw inequivalent("type", typeName, existing.type.name) }
      if existing.durable != durable { throw inequivalent("durable", "\(durable)", "\(existing.durable)") }
      if existing.autoDelete != autoDelete {
        throw inequivalent("auto_delete", "\(autoDelete)", "\(existing.autoDelete)")
      }
      if existing.isInternal != isInternal {
        throw inequivalent("internal", "\(isInternal)", "\(existing.isInternal)")
      }
      if let key = QueueArguments.firstDifference(existing.arguments, arguments, keys: ["alternate-exchange"]) {
        throw .preconditionFailed(
          "inequivalent arg '\(key)' for \(describe("exchange", name, vhost: self.name)): "
            + "received \(QueueArguments.show(arguments[key])) but current is \(QueueArguments.show(existing.arguments[key]))"
        )
      }
      return existing
    }
    if let alternate = arguments["alternate-exchange"], alternate.stringValue == nil {
      throw .preconditionFailed(
        "invalid arg 'alternate-exchange' for \(describe("exchange", name, vhost: self.name)): not a string")
    }
    try type.validate(exchangeArguments: arguments, registry: self.registry)
    let exchange = Exchange(
      name: name, type: type, durable: durable, autoDelete: autoDelete, isInternal: isInternal, arguments: arguments,
      vhost: self)
    self.exchanges[name] = exchange
    exchange.policyAlternateExchange =
      Policy.applying(self.policies, to: name, queue: false)?.definition["alternate-exchange"]?.stringValue
    self.topologyObserver?.exchangeDeclared(exchange, in: self)
    return exchange
  }

  /// exchange.delete.
  public func deleteExchange(name: String, ifUnused: Bool = false) throws(BrokerError) {
    if name.isEmpty { throw .accessRefused("operation not permitted on the default exchange") }
    if name.hasPrefix("amq.") {
      throw .accessRefused("deletion of system \(describe("exchange", name, vhost: self.name)) not allowed")
    }
    guard let exchange = self.exchanges[name] else { return }  // idempotent, as RabbitMQ 3.x
    if ifUnused && !exchange.outgoingBindings.isEmpty {
      throw .preconditionFailed("\(describe("exchange", name, vhost: self.name)) in use")
    }
    self.removeExchange(exchange)
  }

  private func removeExchange(_ exchange: Exchange) {
    for binding in exchange.outgoingBindings { self.removeBinding(binding, autoDeleteSource: false) }
    for binding in exchange.incomingBindings { self.removeBinding(binding, autoDeleteSource: true) }
    exchange.router.exchangeDeleted()
    exchange.isDeleted = true
    self.topologyVersion &+= 1
    self.exchanges[exchange.name] = nil
    self.topologyObserver?.exchangeDeleted(exchange, in: self)
  }

  /// The exchange a client publishes to, or the error RabbitMQ gives.
  @inlinable
  public func exchangeForPublish(_ name: String) throws(BrokerError) -> Exchange {
    guard let exchange = self.exchanges[name] else {
      throw .notFound("no \(describe("exchange", name, vhost: self.name))")
    }
    if exchange.isInternal {
      throw .accessRefused("cannot publish to internal \(describe("exchange", name, vhost: self.name))")
    }
    return exchange
  }

  // MARK: Queues

  func bumpTopologyVersion() { self.topologyVersion &+= 1 }

  /// A queue asks for ``Queue/timerFired(deadline:)`` at `deadline` (uptime nanoseconds).
  func scheduleTimer(for queue: Queue, at deadline: UInt64) {
    self.timers?.schedule(queue, at: deadline)
  }

  /// queue.declare, with RabbitMQ's checks and replies. `connection` identifies the declaring connection.
  @discardableResult
  public func declareQueue(
    name requestedName: String,
    passive: Bool = false,
    durable: Bool = false,
    exclusive: Bool = false,
    autoDelete: Bool = false,
    arguments: FieldTable = [:],
    connection: UInt64,
    ignoringLimits: Bool = false
  ) throws(BrokerError) -> Queue {
    if passive {
      let queue = try self.queue(named: requestedName, connection: connection)
      queue.markUsed()  // as RabbitMQ: a passive declare renews an x-expires lease too
      return queue
    }
    try validateName(requestedName, kind: "queue")
    self.counters.values.queuesDeclared += 1
    var name = requestedName
    var holder: (any MessageHolder)?
    if name.isEmpty {
      name = self.makeServerName()
    } else if name.hasPrefix("amq.") {
      // Only the broker declares a holding queue (recovering it after a restart).
      holder = connection == 0 && self.queues[name] == nil ? self.holders[name]?.holder : nil
      guard holder != nil else { throw .accessRefused("queue name '\(name)' contains reserved prefix 'amq.*'") }
    }
    if let existing = self.queues[name] {
      try self.checkExclusive(existing, connection: connection)
      if existing.exclusiveOwner != nil && !exclusive {
        // RabbitMQ answers a non-exclusive redeclare of an exclusive queue, even from its owner, with 405.
        throw .resourceLocked(Self.lockedText(existing, vhost: self.name))
      }
      func inequivalent(_ arg: String, _ received: Bool, _ current: Bool) -> BrokerError {
        .preconditionFailed(
          "inequivalent arg '\(arg)' for \(describe("queue", name, vhost: self.name)): "
            + "received '\(received)' but current is '\(current)'")
      }
      if existing.durable != durable { throw inequivalent("durable", durable, existing.durable) }
      if (existing.exclusiveOwner != nil) != exclusive {
        throw inequivalent("exclusive", exclusive, existing.exclusiveOwner != nil)
      }
      if existing.autoDelete != autoDelete { throw inequivalent("auto_delete", autoDelete, existing.autoDelete) }
      if let key = QueueArguments.firstDifference(existing.arguments, arguments, keys: QueueArguments.equivalenceKeys) {
        let (received, current) = QueueArguments.showDifference(
          received: arguments[key], current: existing.arguments[key])
        throw .preconditionFailed(
          "inequivalent arg '\(key)' for \(describe("queue", name, vhost: self.name)): "
            + "received \(received) but current is \(current)"
        )
      }
      existing.markUsed()
      return existing
    }
    if let limit = self.limits.maxQueues, limit >= 0, self.queues.count >= limit, !ignoringLimits {
      throw .preconditionFailed(
        "cannot declare queue '\(name)': queue limit in vhost '\(self.name)' (\(limit)) is reached")
    }
    let options = try QueueOptions(arguments: arguments, queue: name, vhost: self.name)
    try options.checkProperties(
      durable: durable, exclusive: exclusive, autoDelete: autoDelete, queue: name, vhost: self.name)
    return self.createQueue(
      name: name, durable: durable, exclusiveOwner: exclusive ? connection : nil, autoDelete: autoDelete,
      arguments: arguments, options: options, holder: holder)
  }

  private func createQueue(
    name: String, durable: Bool, exclusiveOwner: UInt64?, autoDelete: Bool, arguments: FieldTable,
    options: QueueOptions, holder: (any MessageHolder)?
  ) -> Queue {
    var storage = self.makeStorage(name, recoverable: durable && exclusiveOwner == nil && !autoDelete, options: options)
    if let holder { storage = DueOrderedStorage(base: storage, holder: holder) }
    let queue = Queue(
      name: name, vhost: self.name, durable: durable, exclusiveOwner: exclusiveOwner, autoDelete: autoDelete,
      arguments: arguments, options: options, clock: self.clock, storage: storage)
    queue.owner = self
    self.queues[name] = queue
    self.applyPolicies(to: queue)
    queue.markUsed()  // starts the x-expires period
    if queue.mayExpire {
      if self.timers == nil && queue.storage.count > 0 {
        // Recovery: what expired (or came due) while the broker was down goes once everything is recovered (the
        // bindings its dead-letter exchange or holder routes it by come after the queues).
        queue.scheduleTimer(at: self.clock.nowNanoseconds)
      } else {
        queue.expireHead()
      }
    }
    self.counters.values.queuesCreated += 1
    self.topologyVersion &+= 1
    self.topologyObserver?.queueDeclared(queue, in: self)
    // Every queue is bound to the default exchange by its name (implicitly: the default exchange routes by name).
    return queue
  }

  private func makeStorage(_ name: String, recoverable: Bool, options: QueueOptions) -> any QueueStorage {
    let storage = self.makeQueueStorage(name, recoverable)
    guard let maxPriority = options.maxPriority, maxPriority > 0 else { return storage }
    return PriorityQueueStorage(base: storage, maxPriority: maxPriority)
  }

  /// The queue a connection may use, or 404 / 405 as RabbitMQ answers (403 for a holding queue: it is the
  /// broker's).
  public func queue(named name: String, connection: UInt64) throws(BrokerError) -> Queue {
    guard let queue = self.queues[name] else {
      throw .notFound("no \(describe("queue", name, vhost: self.name))")
    }
    try self.checkExclusive(queue, connection: connection)
    try Self.checkNotHolding(queue, vhost: self.name)
    return queue
  }

  static func checkNotHolding(_ queue: Queue, vhost: String) throws(BrokerError) {
    if queue.isHolding {
      throw .accessRefused(
        "access to \(describe("queue", queue.name, vhost: vhost)) refused: it holds an exchange's delayed messages")
    }
  }

  // MARK: Holding queues

  func register(_ holder: any MessageHolder, queueName: String) {
    self.holders[queueName] = WeakHolder(holder: holder)
    (self.queues[queueName]?.storage as? DueOrderedStorage)?.holder = holder
  }

  func holdingQueue(named name: String, holder: any MessageHolder, durable: Bool) -> Queue {
    if let queue = self.queues[name], queue.isHolding { return queue }
    return self.createQueue(
      name: name, durable: durable, exclusiveOwner: nil, autoDelete: false, arguments: [:], options: QueueOptions(),
      holder: holder)
  }

  func removeHoldingQueue(named name: String) {
    self.holders[name] = nil
    if let queue = self.queues[name], queue.isHolding { self.removeQueue(queue) }
  }

  static func lockedText(_ queue: Queue, vhost: String) -> String {
    "cannot obtain exclusive access to locked \(describe("queue", queue.name, vhost: vhost)). It could be "
      + "originally declared on another connection or the exclusive property value does not match that of the "
      + "original declaration."
  }

  private func checkExclusive(_ queue: Queue, connection: UInt64) throws(BrokerError) {
    if let owner = queue.exclusiveOwner, owner != connection {
      throw .resourceLocked(Self.lockedText(queue, vhost: self.name))
    }
  }

  /// queue.delete; returns the number of ready messages it had.
  public func deleteQueue(name: String, ifUnused: Bool = false, ifEmpty: Bool = false, connection: UInt64)
    throws(BrokerError) -> Int
  {
    guard let queue = self.queues[name] else { return 0 }  // idempotent, as RabbitMQ 3.x
    try self.checkExclusive(queue, connection: connection)
    try Self.checkNotHolding(queue, vhost: self.name)
    if ifUnused && !queue.consumers.isEmpty {
      throw .preconditionFailed("\(describe("queue", name, vhost: self.name)) in use")
    }
    if ifEmpty && queue.messageCount > 0 {
      throw .preconditionFailed("\(describe("queue", name, vhost: self.name)) not empty")
    }
    return self.removeQueue(queue)
  }

  /// Deletes a queue unconditionally: consumers are cancelled, bindings removed, messages dropped.
  @discardableResult
  public func removeQueue(_ queue: Queue) -> Int {
    guard self.queues[queue.name] === queue else { return 0 }
    let count = queue.messageCount
    self.queues[queue.name] = nil
    queue.isDeleted = true
    self.counters.values.queuesDeleted += 1
    self.topologyVersion &+= 1
    for binding in queue.incomingBindings { self.removeBinding(binding, autoDeleteSource: true) }
    for consumer in queue.removeAllConsumers() { consumer.channel.consumerCancelledByServer(consumer) }
    queue.storage.queueDeleted()
    self.topologyObserver?.queueDeleted(queue, in: self)
    return count
  }

  /// Deletes every queue, exchange and binding (the vhost goes away): consumers are cancelled and the references
  /// between bindings, queues and exchanges are dropped.
  public func removeAll() {
    for queue in Array(self.queues.values) { self.removeQueue(queue) }
    for exchange in Array(self.exchanges.values) {
      for binding in exchange.outgoingBindings { self.removeBinding(binding, autoDeleteSource: false) }
    }
    for exchange in Array(self.exchanges.values) where exchange !== self.defaultExchange {
      self.removeExchange(exchange)
    }
  }

  /// Deletes the exclusive queues of a connection that closed.
  public func removeExclusiveQueues(of connection: UInt64) {
    for queue in self.queues.values where queue.exclusiveOwner == connection { self.removeQueue(queue) }
  }

  /// Removes a consumer from its queue, deleting an auto-delete queue that lost its last consumer.
  public func removeConsumer(_ consumer: Consumer) {
    let queue = consumer.queue
    if queue.removeConsumer(consumer) {
      self.removeQueue(queue)
    } else if queue.options.singleActiveConsumer {
      queue.dispatch()  // the next consumer is active now
    }
  }

  /// Adds a consumer, with RabbitMQ's checks for exclusive consumers.
  public func addConsumer(_ consumer: Consumer) throws(BrokerError) {
    let queue = consumer.queue
    try Self.checkNewConsumer(on: queue, exclusive: consumer.exclusive)
    queue.addConsumer(consumer)
    queue.dispatch()
  }

  /// Whether a consumer may join a queue, as RabbitMQ checks: not beside an exclusive consumer, not exclusive
  /// beside others or on a single-active-consumer queue (403).
  public static func checkNewConsumer(on queue: Queue, exclusive: Bool) throws(BrokerError) {
    if queue.hasExclusiveConsumer || (exclusive && (!queue.consumers.isEmpty || queue.options.singleActiveConsumer)) {
      throw .accessRefused("\(describe("queue", queue.name, vhost: queue.vhost)) in exclusive use")
    }
  }

  private func makeServerName() -> String {
    while true {
      let name = "amq.gen-" + generatedNameSuffix()
      if self.queues[name] == nil { return name }
    }
  }

  // MARK: Bindings

  /// queue.bind.
  public func bindQueue(
    _ queueName: String,
    to exchangeName: String,
    routingKey: String,
    arguments: FieldTable = [:],
    connection: UInt64
  ) throws(BrokerError) {
    let queue = try self.queue(named: queueName, connection: connection)
    let exchange = try self.exchangeForBinding(exchangeName)
    try exchange.type.validate(
      bindingKey: routingKey, arguments: arguments, exchange: exchange, registry: self.registry)
    self.addBinding(
      Binding(source: exchange.name, destination: .queue(queue), routingKey: routingKey, arguments: arguments))
  }

  /// queue.unbind.
  public func unbindQueue(
    _ queueName: String,
    from exchangeName: String,
    routingKey: String,
    arguments: FieldTable = [:],
    connection: UInt64
  ) throws(BrokerError) {
    let queue = try self.queue(named: queueName, connection: connection)
    if exchangeName.isEmpty { throw .accessRefused("operation not permitted on the default exchange") }
    guard let exchange = self.exchanges[exchangeName] else { return }  // nothing to unbind, as RabbitMQ
    let binding = Binding(
      source: exchange.name, destination: .queue(queue), routingKey: routingKey, arguments: arguments)
    if exchange.outgoingBindings.contains(binding) { self.removeBinding(binding, autoDeleteSource: true) }
  }

  /// exchange.bind: `destination` receives what `source` routes with the key.
  public func bindExchange(destination: String, source: String, routingKey: String, arguments: FieldTable = [:])
    throws(BrokerError)
  {
    let destinationExchange = try self.exchangeForBinding(destination)
    let sourceExchange = try self.exchangeForBinding(source)
    try sourceExchange.type.validate(
      bindingKey: routingKey, arguments: arguments, exchange: sourceExchange, registry: self.registry)
    self.addBinding(
      Binding(source: source, destination: .exchange(destinationExchange), routingKey: routingKey, arguments: arguments)
    )
  }

  /// exchange.unbind.
  public func unbindExchange(destination: String, source: String, routingKey: String, arguments: FieldTable = [:])
    throws(BrokerError)
  {
    if destination.isEmpty || source.isEmpty {
      throw .accessRefused("operation not permitted on the default exchange")
    }
    guard let destinationExchange = self.exchanges[destination], let sourceExchange = self.exchanges[source] else {
      return
    }
    let binding = Binding(
      source: source, destination: .exchange(destinationExchange), routingKey: routingKey, arguments: arguments)
    if sourceExchange.outgoingBindings.contains(binding) { self.removeBinding(binding, autoDeleteSource: true) }
  }

  private func exchangeForBinding(_ name: String) throws(BrokerError) -> Exchange {
    if name.isEmpty { throw .accessRefused("operation not permitted on the default exchange") }
    guard let exchange = self.exchanges[name] else {
      throw .notFound("no \(describe("exchange", name, vhost: self.name))")
    }
    return exchange
  }

  private func addBinding(_ binding: Binding) {
    guard let source = self.exchanges[binding.source], !source.outgoingBindings.contains(binding) else { return }
    source.outgoingBindings.append(binding)
    binding.destination.incomingBindings.append(binding)
    source.router.bindingAdded(binding)
    self.topologyVersion &+= 1
    self.topologyObserver?.bindingAdded(binding, in: self)
  }

  private func removeBinding(_ binding: Binding, autoDeleteSource: Bool) {
    guard let source = self.exchanges[binding.source] else { return }
    source.outgoingBindings.removeAll { $0 == binding }
    binding.destination.incomingBindings.removeAll { $0 == binding }
    source.router.bindingRemoved(binding)
    self.topologyVersion &+= 1
    self.topologyObserver?.bindingRemoved(binding, in: self)
    if autoDeleteSource && source.autoDelete && source.outgoingBindings.isEmpty {
      self.removeExchange(source)
    }
  }

  /// The bindings of the virtual host (default-exchange bindings are implicit and not listed).
  public var bindings: [Binding] {
    self.exchanges.values.flatMap(\.outgoingBindings)
  }

  // MARK: Routing

  /// Publishes through a publisher's ``RouteCache``: a message with the same exchange and routing key as the one
  /// before, while the topology is unchanged, goes straight to the queue found last time (when that was exactly
  /// one queue), without hashing its key.
  @inlinable
  public func publish(
    _ message: Message, routingKey: String, to exchange: Exchange, publisher: (any FlowControlledPublisher)?,
    cache: inout RouteCache
  ) -> PublishOutcome {
    if cache.version == self.topologyVersion, cache.exchange === exchange, cache.routingKey == routingKey,
      let queue = cache.queue, !message.hasHeaders
    {
      return Self.enqueue(message, on: queue, publisher: publisher)
    }
    cache.queue = self.singleQueue(for: routingKey, exchange: exchange)
    cache.exchange = exchange
    cache.routingKey = routingKey
    cache.version = self.topologyVersion
    return self.publish(message, routingKey: routingKey, to: exchange, publisher: publisher)
  }

  /// Offers a message to one queue; a queue whose consumers fall behind holds `publisher` back.
  @inlinable
  static func enqueue(_ message: Message, on queue: Queue, publisher: (any FlowControlledPublisher)?)
    -> PublishOutcome
  {
    var outcome = PublishOutcome()
    outcome.add(queue.enqueue(message), storage: queue.storage)
    if let publisher, queue.isCongested { queue.throttle(publisher) }
    return outcome
  }

  /// The only queue a routing key reaches from an exchange, when it reaches exactly one queue and nothing else.
  @usableFromInline
  func singleQueue(for routingKey: String, exchange: Exchange) -> Queue? {
    if exchange === self.defaultExchange { return self.queues[routingKey] }
    return exchange.directRouter?.singleQueue(for: routingKey)
  }

  /// Routes a message with the routing key it carries; see ``publish(_:routingKey:to:publisher:)``.
  @discardableResult
  public func publish(
    _ message: Message, to exchange: Exchange, publisher: (any FlowControlledPublisher)? = nil
  ) -> PublishOutcome {
    self.publish(message, routingKey: message.routingKey, to: exchange, publisher: publisher)
  }

  /// Routes a message from an exchange to its queues (through exchange-to-exchange bindings, alternate exchanges
  /// and the `CC`/`BCC` headers) and offers it to each; returns what the queues did. A queue whose consumers fall
  /// behind holds `publisher` back (see ``Queue/isCongested``).
  @discardableResult
  public func publish(
    _ message: Message, routingKey: String, to exchange: Exchange, publisher: (any FlowControlledPublisher)? = nil
  ) -> PublishOutcome {
    if message.hasHeaders, let selected = SenderSelectedKeys(message) {
      return self.route(selected.message, keys: [routingKey] + selected.keys, from: exchange, publisher: publisher)
    }
    if exchange === self.defaultExchange {
      guard let queue = self.queues[routingKey] else {
        if routingKey.hasPrefix(Self.directReplyQueue + "."), self.deliverDirectReply(message, routingKey: routingKey) {
          return PublishOutcome(accepted: 1)
        }
        return PublishOutcome()
      }
      return Self.enqueue(message, on: queue, publisher: publisher)
    }
    if let direct = exchange.directRouter, let queue = direct.singleQueue(for: routingKey) {
      return Self.enqueue(message, on: queue, publisher: publisher)
    }
    return self.route(message, keys: CollectionOfOne(routingKey), from: exchange, publisher: publisher)
  }

  private func route(
    _ message: Message, keys: some Collection<String>, from exchange: Exchange,
    publisher: (any FlowControlledPublisher)?
  ) -> PublishOutcome {
    var routes = self.resolve(message, keys: keys, from: exchange)
    var outcome = PublishOutcome()
    for destination in routes.destinations {
      guard case .queue(let queue) = destination else { continue }
      outcome.add(queue.enqueue(message), storage: queue.storage)
      if let publisher, queue.isCongested { queue.throttle(publisher) }
    }
    routes.reset(epoch: self.routeEpoch)
    self.routes = routes
    return outcome
  }

  /// The queues a message reaches from an exchange with these routing keys (for dead-lettering, which leaves some
  /// out before enqueueing).
  func queues(routing message: Message, keys: [String], from exchange: Exchange) -> [Queue] {
    var routes = self.resolve(message, keys: keys, from: exchange)
    var queues: [Queue] = []
    for destination in routes.destinations {
      if case .queue(let queue) = destination { queues.append(queue) }
    }
    routes.reset(epoch: self.routeEpoch)
    self.routes = routes
    return queues
  }

  /// Where a message goes from an exchange: through exchange-to-exchange bindings and, when nothing is reached,
  /// alternate exchanges. Takes the reusable route set; the caller gives it back.
  private func resolve(_ message: Message, keys: some Collection<String>, from exchange: Exchange) -> RouteSet {
    self.routeEpoch &+= 1
    var routes = self.routes
    self.routes = RouteSet()
    routes.reset(epoch: self.routeEpoch)
    exchange.routeEpoch = self.routeEpoch
    var queueCount = 0
    var index = 0
    for key in keys {
      let input = RoutingInput(routingKey: key, message: message)
      if exchange === self.defaultExchange {
        if let queue = self.queues[key] { routes.insert(.queue(queue)) }
      } else {
        exchange.router.route(input, into: &routes)
      }
      queueCount += Self.expand(&routes, from: &index, input: input)
    }
    // Nothing routed: try the alternate exchange, as RabbitMQ does (once per exchange in the chain).
    var alternateFrom = exchange
    while queueCount == 0,
      let alternateName = alternateFrom.arguments["alternate-exchange"]?.stringValue
        ?? alternateFrom.policyAlternateExchange,
      let alternate = self.exchanges[alternateName], alternate.routeEpoch != self.routeEpoch
    {
      alternate.routeEpoch = self.routeEpoch
      alternateFrom = alternate
      let input = RoutingInput(routingKey: keys.first ?? "", message: message)
      alternate.router.route(input, into: &routes)
      queueCount += Self.expand(&routes, from: &index, input: input)
    }
    return routes
  }

  /// Routes through the exchanges among the new destinations (exchange-to-exchange bindings); counts the queues.
  private static func expand(_ routes: inout RouteSet, from index: inout Int, input: RoutingInput) -> Int {
    var queues = 0
    while index < routes.destinations.count {
      let destination = routes.destinations[index]
      index += 1
      switch destination {
      case .queue: queues += 1
      case .exchange(let exchange): exchange.router.route(input, into: &routes)
      }
    }
    return queues
  }
}

/// What became of a published message: how many queues took it and how many refused it. With no queue at all it
/// was unroutable (basic.return when mandatory); refused by every queue it is nacked in confirm mode.
public struct PublishOutcome: Sendable, Equatable {
  /// Queues that took it.
  public var accepted = 0
  /// Queues that refused it (full, `reject-publish`).
  public var refused = 0
  /// Queues that took it by dropping their oldest message.
  public var droppedOldest = 0
  /// The storage token the message waits for before it is safe (its confirm waits too); nil when it is safe now.
  public var storageToken: StorageToken?

  public init(accepted: Int = 0, refused: Int = 0, droppedOldest: Int = 0) {
    self.accepted = accepted
    self.refused = refused
    self.droppedOldest = droppedOldest
  }

  /// Whether no queue was reached.
  @inlinable public var isUnroutable: Bool { self.accepted == 0 && self.refused == 0 }

  /// Counts one queue's answer, and the storage token its storage now waits for.
  @inlinable
  public mutating func add(_ result: EnqueueResult, storage: any QueueStorage) {
    self.add(result)
    if result != .refused, let token = storage.pendingToken {
      self.storageToken = Swift.max(self.storageToken ?? token, token)
    }
  }

  /// Counts one queue's answer.
  @inlinable
  public mutating func add(_ result: EnqueueResult) {
    switch result {
    case .accepted: self.accepted += 1
    case .acceptedDroppingOldest:
      self.accepted += 1
      self.droppedOldest += 1
    case .refused: self.refused += 1
    }
  }
}

/// The `CC` and `BCC` headers of a message (RabbitMQ's sender-selected distribution): more routing keys for the
/// same exchange. `BCC` is removed from the message that is delivered.
struct SenderSelectedKeys {
  let keys: [String]
  let message: Message

  init?(_ message: Message) {
    var properties = message.properties
    guard var headers = properties.headers, headers["CC"] != nil || headers["BCC"] != nil else { return nil }
    self.keys = VirtualHost.routingKeys(in: headers["CC"]) + VirtualHost.routingKeys(in: headers["BCC"])
    if headers["BCC"] != nil {
      headers["BCC"] = nil
      properties.headers = headers
      self.message = Message.make(
        exchange: message.exchange, routingKey: message.routingKey, properties: properties, body: message.body)
    } else {
      self.message = message
    }
  }
}

/// Names: at most 255 bytes of UTF-8, as a short string allows.
func validateName(_ name: String, kind: String) throws(BrokerError) {
  if name.utf8.count > 255 {
    throw .preconditionFailed("\(kind) name too long")
  }
}

/// A publisher's memory of where its last message went (see ``VirtualHost/publish(_:routingKey:to:publisher:cache:)``).
public struct RouteCache {
  @usableFromInline var version: UInt64 = .max
  @usableFromInline var exchange: Exchange?
  @usableFromInline var routingKey: String = ""
  @usableFromInline var queue: Queue?

  public init() {}
}

/// 22 random characters of the alphabet RabbitMQ uses in the names it makes (`amq.gen-...`, `amq.ctag-...`).
public func generatedNameSuffix() -> String {
  let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
  var generator = SystemRandomNumberGenerator()
  return String((0..<22).map { _ in alphabet[Int(generator.next() % 64)] })
}
