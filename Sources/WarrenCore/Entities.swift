import AMQPProtocol

/// Something a binding leads to: a queue or an exchange. Routers keep references to destinations.
public class Destination {
  /// Which of the two a destination is.
  public enum Kind: Sendable { case queue, exchange }

  /// The queue's or exchange's name.
  public let name: String
  /// Whether it is a queue or an exchange.
  public let kind: Kind
  /// The routing pass that last added this destination to a ``RouteSet``.
  @usableFromInline var routeEpoch: UInt64 = 0
  /// The bindings that lead here.
  var incomingBindings: [Binding] = []

  init(name: String, kind: Kind) {
    self.name = name
    self.kind = kind
  }
}

/// An exchange: a type's router plus the flags it was declared with.
public final class Exchange: Destination {
  /// Its type.
  public let type: any ExchangeType
  /// Whether it survives a restart.
  public let durable: Bool
  /// Whether it is deleted when its last binding goes.
  public let autoDelete: Bool
  /// Whether clients may not publish to it directly.
  public let isInternal: Bool
  /// Its declare arguments.
  public let arguments: FieldTable
  /// Its routing index.
  public let router: any ExchangeRouter
  /// The router, when it is the core's direct router (publishing takes a shortcut through it).
  let directRouter: DirectRouter?
  /// The bindings from this exchange.
  public internal(set) var outgoingBindings: [Binding] = []
  /// Whether it was deleted (a channel's cached reference must look it up again).
  public internal(set) var isDeleted = false
  /// Messages published to this exchange by clients (not those reaching it through exchange-to-exchange bindings).
  public var messagesPublished = 0

  init(name: String, type: any ExchangeType, durable: Bool, autoDelete: Bool, isInternal: Bool, arguments: FieldTable) {
    self.type = type
    self.durable = durable
    self.autoDelete = autoDelete
    self.isInternal = isInternal
    self.arguments = arguments
    self.router = type.makeRouter(exchangeName: name, arguments: arguments)
    self.directRouter = self.router as? DirectRouter
    super.init(name: name, kind: .exchange)
  }
}

/// The side of a consumer that a queue delivers into: a channel of a client connection.
public protocol DeliveryChannel: AnyObject {
  /// Whether the channel can take another delivery for this consumer now (flow, channel prefetch, a writable socket).
  func canDeliver(to consumer: Consumer) -> Bool
  /// Delivers a message; the channel assigns the delivery tag and, unless no-ack, tracks it until settled.
  func deliver(_ message: QueuedMessage, from queue: Queue, to consumer: Consumer)
  /// The queue went away under the consumer (deleted); the channel tells the client if it can.
  func consumerCancelledByServer(_ consumer: Consumer)
}

/// A publisher that a queue can slow down: it stops reading from its socket until resumed.
public protocol FlowControlledPublisher: AnyObject {
  /// A queue it published to is behind its consumers: stop reading after the current read.
  func holdBackPublishing()
  /// The queues that held it back have caught up: read again.
  func resumePublishing()
}

/// A subscription of a channel to a queue.
public final class Consumer {
  /// The consumer tag, unique on its channel.
  public let tag: String
  /// The consumer tag's bytes, for writing deliveries.
  public let tagBytes: [UInt8]
  /// The queue consumed from.
  public let queue: Queue
  /// Whether deliveries count as acknowledged when sent.
  public let noAck: Bool
  /// Whether it is the queue's only consumer.
  public let exclusive: Bool
  /// The most unacknowledged deliveries it may hold (basic.qos, per consumer); 0 is no limit.
  public let prefetchCount: Int
  /// Its deliveries not yet acknowledged.
  public internal(set) var unacked: Int = 0
  /// The channel it belongs to. Not reference counted: a channel removes its consumers from their queues before
  /// it goes away.
  public unowned(unsafe) let channel: any DeliveryChannel
  /// The consume arguments.
  public let arguments: FieldTable

  public init(
    tag: String,
    queue: Queue,
    noAck: Bool,
    exclusive: Bool,
    prefetchCount: Int,
    channel: any DeliveryChannel,
    arguments: FieldTable = [:]
  ) {
    self.tag = tag
    self.tagBytes = Array(tag.utf8.prefix(255))
    self.queue = queue
    self.noAck = noAck
    self.exclusive = exclusive
    self.prefetchCount = prefetchCount
    self.channel = channel
    self.arguments = arguments
  }

  @inlinable var hasCapacity: Bool { self.prefetchCount == 0 || self.unacked < self.prefetchCount }
}

/// A queue: ready messages, consumers in round-robin, and counts of what is delivered but unacknowledged.
public final class Queue: Destination {
  /// The virtual host it lives in.
  public let vhost: String
  /// Whether it survives a restart.
  public let durable: Bool
  /// The connection that owns it, for an exclusive queue.
  public let exclusiveOwner: UInt64?
  /// Whether it is deleted when its last consumer goes.
  public let autoDelete: Bool
  /// Its declare arguments (`x-message-ttl`, `x-max-length`, ...).
  public let arguments: FieldTable
  /// Its ready messages.
  public let storage: any QueueStorage
  /// Its consumers, in the order they subscribed.
  public private(set) var consumers: [Consumer] = []
  /// Messages delivered (to consumers or basic.get) and not yet acknowledged.
  public private(set) var unackedCount = 0
  /// Whether it was deleted; late acknowledgements to it are ignored.
  public internal(set) var isDeleted = false
  /// The body bytes of the messages delivered and not yet acknowledged.
  public private(set) var unackedBytes = 0
  /// Messages enqueued since the queue was created (set by ``enqueue(_:)``).
  public var messagesPublished = 0

  private var nextConsumer = 0
  @usableFromInline var nextSequence: UInt32 = 0
  var hadConsumer = false

  init(
    name: String,
    vhost: String,
    durable: Bool,
    exclusiveOwner: UInt64?,
    autoDelete: Bool,
    arguments: FieldTable,
    storage: any QueueStorage = InMemoryQueueStorage()
  ) {
    self.vhost = vhost
    self.durable = durable
    self.exclusiveOwner = exclusiveOwner
    self.autoDelete = autoDelete
    self.arguments = arguments
    self.storage = storage
    super.init(name: name, kind: .queue)
  }

  /// The number of ready messages.
  public var messageCount: Int { self.storage.count }

  /// Whether a consumer holds the queue exclusively.
  public var hasExclusiveConsumer: Bool { self.consumers.first?.exclusive == true }

  /// Adds a message at the tail and delivers what can be delivered.
  @inlinable
  public func enqueue(_ message: Message) {
    self.messagesPublished &+= 1
    self.storage.append(QueuedMessage(message: message, sequence: self.takeSequence()))
    if !self.consumers.isEmpty { self.dispatch() }
  }

  @usableFromInline func takeSequence() -> UInt32 {
    self.nextSequence &+= 1
    return self.nextSequence
  }

  /// Delivers ready messages to consumers in turn, as far as their prefetch and channels allow.
  public func dispatch() {
    let count = self.consumers.count
    guard count > 0 else { return }
    var refused = 0
    while refused < count, self.storage.count > 0 {
      if self.nextConsumer >= count { self.nextConsumer = 0 }
      let consumer = self.consumers[self.nextConsumer]
      self.nextConsumer += 1
      guard consumer.hasCapacity, consumer.channel.canDeliver(to: consumer) else {
        refused += 1
        continue
      }
      refused = 0
      let message = self.storage.removeFirst()!
      if !consumer.noAck {
        consumer.unacked += 1
        self.unackedCount += 1
        self.unackedBytes += message.message.bodySize
      }
      consumer.channel.deliver(message, from: self, to: consumer)
    }
    if !self.throttledPublishers.isEmpty && self.storage.count <= Queue.flowLowWatermark {
      self.resumePublishers()
    }
  }

  // MARK: Flow control

  /// Ready messages above which a queue that has consumers holds its publishers back.
  public static let flowHighWatermark = 8192
  /// Ready messages at or below which held-back publishers read again.
  public static let flowLowWatermark = 2048
  private var throttledPublishers: [any FlowControlledPublisher] = []

  /// Whether consumers are falling behind: publishers to this queue should wait.
  @inlinable public var isCongested: Bool {
    self.storage.count > Queue.flowHighWatermark && !self.consumers.isEmpty
  }

  /// Holds a publisher back until this queue has caught up.
  public func throttle(_ publisher: any FlowControlledPublisher) {
    if !self.throttledPublishers.contains(where: { $0 === publisher }) { self.throttledPublishers.append(publisher) }
    publisher.holdBackPublishing()
  }

  func resumePublishers() {
    let publishers = self.throttledPublishers
    self.throttledPublishers.removeAll()
    for publisher in publishers { publisher.resumePublishing() }
  }

  /// Takes the head for basic.get; tracked as unacknowledged unless `noAck`.
  public func get(noAck: Bool) -> QueuedMessage? {
    guard let message = self.storage.removeFirst() else { return nil }
    if !noAck {
      self.unackedCount += 1
      self.unackedBytes += message.message.bodySize
    }
    return message
  }

  /// A delivery was acknowledged, rejected or returned; call ``dispatch()`` after a batch of them.
  public func settle(_ message: QueuedMessage, consumer: Consumer?) {
    guard !self.isDeleted else { return }
    self.unackedCount -= 1
    self.unackedBytes -= message.message.bodySize
    if let consumer, consumer.queue === self { consumer.unacked -= 1 }
  }

  /// Puts settled deliveries back at their positions, marked redelivered.
  public func requeue(_ messages: [QueuedMessage]) {
    guard !self.isDeleted, !messages.isEmpty else { return }
    self.storage.requeue(
      messages.map {
        var m = $0
        m.redelivered = true
        return m
      })
  }

  /// Removes every ready message; returns how many.
  public func purge() -> Int { self.storage.purge() }

  func addConsumer(_ consumer: Consumer) {
    self.consumers.append(consumer)
    self.hadConsumer = true
  }

  /// Removes a consumer; returns whether it was the last one of an auto-delete queue.
  func removeConsumer(_ consumer: Consumer) -> Bool {
    guard let index = self.consumers.firstIndex(where: { $0 === consumer }) else { return false }
    self.consumers.remove(at: index)
    if index < self.nextConsumer { self.nextConsumer -= 1 }
    if self.consumers.isEmpty { self.resumePublishers() }  // no consumers: nothing to wait for
    // Its unacked deliveries still count for the queue until the channel settles them.
    return self.autoDelete && self.consumers.isEmpty && self.hadConsumer
  }

  func removeAllConsumers() -> [Consumer] {
    self.resumePublishers()
    let all = self.consumers
    self.consumers.removeAll()
    return all
  }
}
