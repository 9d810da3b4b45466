import AMQPProtocol

/// What a queue did with a message offered to it.
public enum EnqueueResult: Sendable, Equatable {
  /// Added at the tail.
  case accepted
  /// Added at the tail; the oldest ready message was dropped to stay within the queue's length limit.
  case acceptedDroppingOldest
  /// Not added: the queue is full and refuses publishes (`x-overflow: reject-publish`).
  case refused
}

/// A queue: ready messages, consumers in round-robin, and counts of what is delivered but unacknowledged.
public final class Queue {
  /// Its name.
  public let name: String
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
  /// The arguments parsed into typed options.
  public let options: QueueOptions
  /// Its ready messages.
  public let storage: any QueueStorage
  /// Where enqueue times come from.
  public let clock: BrokerClock
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
  /// The bindings to this queue.
  var incomingBindings: [Binding] = []
  /// The routing pass that last added this queue to a ``RouteSet``.
  @usableFromInline var routeEpoch: UInt64 = 0

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
    options: QueueOptions = QueueOptions(),
    clock: BrokerClock = BrokerClock(),
    storage: any QueueStorage = InMemoryQueueStorage()
  ) {
    self.name = name
    self.vhost = vhost
    self.durable = durable
    self.exclusiveOwner = exclusiveOwner
    self.autoDelete = autoDelete
    self.arguments = arguments
    self.options = options
    self.clock = clock
    self.storage = storage
    // Messages a store gave back at recovery are numbered 1...count.
    self.nextSequence = UInt32(truncatingIfNeeded: storage.count)
  }

  /// This queue as a binding's destination.
  public var asDestination: Destination { .queue(self) }

  /// The number of ready messages.
  public var messageCount: Int { self.storage.count }

  /// Whether a consumer holds the queue exclusively.
  public var hasExclusiveConsumer: Bool { self.consumers.first?.exclusive == true }

  /// Adds a message at the tail, stamped with the clock's time, and delivers what can be delivered.
  @inlinable
  @discardableResult
  public func enqueue(_ message: Message) -> EnqueueResult {
    self.messagesPublished &+= 1
    self.storage.append(
      QueuedMessage(message: message, sequence: self.takeSequence(), enqueuedAt: self.clock.nowNanoseconds))
    if !self.consumers.isEmpty { self.dispatch() }
    return .accepted
  }

  @usableFromInline func takeSequence() -> UInt32 {
    self.nextSequence &+= 1
    return self.nextSequence
  }

  /// Delivers ready messages to consumers in turn, as far as their channels allow (flow, prefetch, socket).
  public func dispatch() {
    let count = self.consumers.count
    guard count > 0 else { return }
    var refused = 0
    while refused < count, self.storage.count > 0 {
      if self.nextConsumer >= count { self.nextConsumer = 0 }
      let consumer = self.consumers[self.nextConsumer]
      self.nextConsumer += 1
      guard consumer.channel.canDeliver(to: consumer) else {
        refused += 1
        continue
      }
      refused = 0
      let message = self.storage.removeFirst()!
      if !consumer.noAck {
        self.unackedCount += 1
        self.unackedBytes += message.message.bodySize
        self.storage.delivered(message)
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

  // MARK: Getting and settling

  /// Takes the head for basic.get; tracked as unacknowledged unless `noAck`.
  public func get(noAck: Bool) -> QueuedMessage? {
    guard let message = self.storage.removeFirst() else { return nil }
    if !noAck {
      self.unackedCount += 1
      self.unackedBytes += message.message.bodySize
      self.storage.delivered(message)
    } else {
      self.storage.settled(message)
    }
    return message
  }

  /// A delivery is done with (acknowledged, or rejected without requeue); call ``dispatch()`` after a batch.
  public func settle(_ message: QueuedMessage) {
    guard !self.isDeleted else { return self.storage.settled(message) }
    self.unackedCount -= 1
    self.unackedBytes -= message.message.bodySize
    self.storage.settled(message)
  }

  /// Puts unsettled deliveries back at their positions, marked redelivered; call ``dispatch()`` after.
  public func requeue(_ messages: [QueuedMessage]) {
    if self.isDeleted {  // nowhere to go back to: the store forgets them
      for message in messages { self.storage.settled(message) }
      return
    }
    guard !messages.isEmpty else { return }
    for message in messages {
      self.unackedCount -= 1
      self.unackedBytes -= message.message.bodySize
    }
    self.storage.requeue(
      messages.map {
        var m = $0
        m.redelivered = true
        return m
      })
  }

  /// Removes every ready message; returns how many.
  public func purge() -> Int { self.storage.purge() }

  // MARK: Consumers

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
