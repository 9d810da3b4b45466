import AMQPProtocol
import HeapModule

/// Decides when each message of a holding queue is due, and takes it back then. An exchange type that delays
/// messages (the delayed-message exchange) is one: its router routes a delayed message into the queue the broker
/// keeps for it (``ExchangeContext/holdingQueue(for:)``), and gets it back at its due time.
///
/// Called on the broker's event loop only.
public protocol MessageHolder: AnyObject {
  /// When a held message is due, in uptime nanoseconds of the broker's clock (its `enqueuedAt` is the time it was
  /// held, also after a restart).
  func dueTime(of message: QueuedMessage) -> UInt64
  /// A held message is due: it has left the queue (settled in the store) and is the holder's to route.
  func release(_ message: Message)
}

/// A holding queue's messages, in the order they are due (the same due time in the order they came). The
/// messages are in memory, as RabbitMQ's delayed-message plugin keeps them in a Mnesia table; `base` keeps the
/// persistent ones in the store, so that they are recovered after a restart (and given back to this storage, in
/// any order, at its creation).
public final class DueOrderedStorage: QueueStorage {
  struct Held: Comparable {
    var due: UInt64
    var order: UInt64
    var message: QueuedMessage

    static func < (lhs: Held, rhs: Held) -> Bool { (lhs.due, lhs.order) < (rhs.due, rhs.order) }
    static func == (lhs: Held, rhs: Held) -> Bool { lhs.due == rhs.due && lhs.order == rhs.order }
  }

  private let storage: any QueueStorage
  /// Who says when each message is due (weak: the exchange's router, owned by the exchange); with none, never.
  public internal(set) weak var holder: (any MessageHolder)?
  private var held = Heap<Held>()
  private var nextOrder: UInt64 = 0
  public private(set) var bytes = 0
  public var count: Int { self.held.count }

  /// Orders what `base` keeps by `holder`'s due times. Messages `base` recovered are taken from it at once.
  public init(base: any QueueStorage, holder: any MessageHolder) {
    self.storage = base
    self.holder = holder
    while let recovered = base.removeFirst() { self.insert(recovered) }
  }

  private func insert(_ message: QueuedMessage) {
    let due = self.holder?.dueTime(of: message) ?? .max
    self.held.insert(Held(due: due, order: self.nextOrder, message: message))
    self.nextOrder &+= 1
    self.bytes += message.message.bodySize
  }

  /// Stored by `base` (a persistent message written to the store), then taken from it: `base` keeps no ready
  /// messages of its own, only their records, until each is settled.
  public func append(_ message: QueuedMessage) {
    self.storage.append(message)
    guard let stored = self.storage.removeFirst() else { return }
    self.insert(stored)
  }

  public func removeFirst() -> QueuedMessage? {
    guard let first = self.held.popMin() else { return nil }
    self.bytes -= first.message.message.bodySize
    return first.message
  }

  public func head() -> QueuedMessage? { self.held.min?.message }

  public func requeue(_ messages: [QueuedMessage]) {
    for message in messages { self.insert(message) }
  }

  public func purge() -> Int {
    let purged = self.count
    while let message = self.removeFirst() { self.storage.settled(message) }
    return purged
  }

  public func settled(_ message: QueuedMessage) { self.storage.settled(message) }

  public func delivered(_ message: QueuedMessage) { self.storage.delivered(message) }

  public var pendingToken: StorageToken? { self.storage.pendingToken }

  /// The held messages go; their records are settled (`base` no longer knows them as ready messages).
  public func queueDeleted() {
    _ = self.purge()
    self.storage.queueDeleted()
  }

  public func makeSibling() -> any QueueStorage { self.storage.makeSibling() }

  public var base: any QueueStorage { self.storage.base }
}

/// A holder known only weakly (the exchange's router owns it).
struct WeakHolder {
  weak var holder: (any MessageHolder)?
}

/// What a router may use besides its bindings, given to ``ExchangeType/makeRouter(context:)``: the exchange it
/// routes for, every registered type (to route like another one), a queue that holds messages until they are due,
/// and publishing anew from the exchange.
public struct ExchangeContext {
  /// The exchange's name.
  public let exchangeName: String
  /// Its declare arguments.
  public let arguments: FieldTable
  /// Whether it is durable (its holding queue is durable too, and keeps persistent messages across restarts).
  public let durable: Bool
  /// The exchange types the broker has.
  public let registry: ExchangeRegistry
  weak var vhost: VirtualHost?

  public init(
    exchangeName: String, arguments: FieldTable, durable: Bool = false, registry: ExchangeRegistry = ExchangeRegistry()
  ) {
    self.exchangeName = exchangeName
    self.arguments = arguments
    self.durable = durable
    self.registry = registry
  }

  init(exchangeName: String, arguments: FieldTable, durable: Bool, vhost: VirtualHost?) {
    self.init(
      exchangeName: exchangeName, arguments: arguments, durable: durable,
      registry: vhost?.registry ?? ExchangeRegistry())
    self.vhost = vhost
  }

  /// The name of the exchange's holding queue: `amq.delayed.` and the exchange's name (the prefix keeps clients
  /// from declaring it), as LavinMQ names its delayed exchanges' queues.
  public var holdingQueueName: String { "amq.delayed." + self.exchangeName }

  /// Makes `holder` the one the exchange's holding queue hands its messages to. Call it when the router is made:
  /// a holding queue recovered after a restart finds its holder by its name.
  public func register(_ holder: any MessageHolder) {
    self.vhost?.register(holder, queueName: self.holdingQueueName)
  }

  /// The exchange's holding queue, created (durable when the exchange is) on first use; nil outside a virtual
  /// host. Clients cannot consume from, bind, purge or delete it; it shows in queue listings and metrics.
  public func holdingQueue(for holder: any MessageHolder) -> Queue? {
    self.vhost?.holdingQueue(named: self.holdingQueueName, holder: holder, durable: self.durable)
  }

  /// The exchange is going: its holding queue goes with the messages it holds.
  public func removeHoldingQueue() {
    self.vhost?.removeHoldingQueue(named: self.holdingQueueName)
  }

  /// Routes a message from the exchange as if it were published to it now, with the routing key it carries; no
  /// publisher waits for it (nothing to confirm or return). Returns the number of queues it reached.
  @discardableResult
  public func publish(_ message: Message) -> Int {
    guard let vhost = self.vhost, let exchange = vhost.exchanges[self.exchangeName], !exchange.isDeleted else {
      return 0
    }
    return vhost.publish(message, to: exchange).accepted
  }
}
