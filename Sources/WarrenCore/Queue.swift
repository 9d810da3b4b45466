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
  /// What the queue does: its arguments parsed into typed options, with the policies that apply to it.
  public private(set) var options: QueueOptions
  /// The policy applied to it, if any.
  public private(set) var policy: Policy?
  /// The operator policy applied to it, if any.
  public private(set) var operatorPolicy: Policy?
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
  public internal(set) var incomingBindings: [Binding] = []
  /// The routing pass that last added this queue to a ``RouteSet``.
  @usableFromInline var routeEpoch: UInt64 = 0

  private var nextConsumer = 0
  @usableFromInline var nextSequence: UInt32 = 0
  var hadConsumer = false
  /// The virtual host it belongs to: dead-lettered messages are republished there, and its timers come from it.
  public internal(set) weak var owner: VirtualHost?
  /// Whether an enqueue has more to do than append and dispatch (length limits, TTL).
  @usableFromInline var hasEnqueueRules: Bool
  /// Whether ready messages may expire: the queue has a TTL, or a message with an `expiration` was enqueued.
  @usableFromInline var mayExpire: Bool
  /// The earliest timer this queue has asked its virtual host for (uptime nanoseconds), if one is pending.
  var scheduledTimer: UInt64?
  /// When it was last used (a consumer, basic.get, a redeclare), for `x-expires`.
  var lastUsed: UInt64 = 0
  /// Whether it holds messages for an exchange (its storage is a ``DueOrderedStorage``): clients cannot consume
  /// from it, and each message leaves at its due time, to the holder.
  public let isHolding: Bool
  /// The holder of a holding queue (the exchange's router), kept by its storage.
  public var holder: (any MessageHolder)? { (self.storage as? DueOrderedStorage)?.holder }

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
    self.isHolding = storage is DueOrderedStorage
    self.hasEnqueueRules = Self.hasEnqueueRules(options) || self.isHolding
    // Recovered messages may carry expirations; a holding queue's messages are all due some time.
    self.mayExpire = options.messageTTL != nil || storage.count > 0 || self.isHolding
    self.lastUsed = clock.nowNanoseconds
    // Messages a store gave back at recovery are numbered 1...count.
    self.nextSequence = UInt32(truncatingIfNeeded: storage.count)
  }

  static func hasEnqueueRules(_ options: QueueOptions) -> Bool {
    options.maxLength != nil || options.maxLengthBytes != nil || options.messageTTL != nil
  }

  /// Policies changed what the queue does: the new limits and TTL apply at once (the oldest dropped over a new
  /// length limit, what a new TTL expires expired); the storage and the queue type stay as declared.
  func policyApplied(_ options: QueueOptions, policy: Policy?, operatorPolicy: Policy?) {
    var options = options
    options.maxPriority = self.options.maxPriority
    options.queueType = self.options.queueType
    self.options = options
    self.policy = policy
    self.operatorPolicy = operatorPolicy
    self.hasEnqueueRules = Self.hasEnqueueRules(options) || self.isHolding
    if options.messageTTL != nil { self.mayExpire = true }
    if options.overflow == .dropHead { _ = self.dropHeadOverLimits() }
    self.expireHead()
    self.markUsed()
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
    if self.hasEnqueueRules || message.hasExpiration { return self.enqueueWithRules(message) }
    self.messagesPublished &+= 1
    self.storage.append(
      QueuedMessage(message: message, sequence: self.takeSequence(), enqueuedAt: self.clock.nowNanoseconds))
    if !self.consumers.isEmpty { self.dispatch() }
    return .accepted
  }

  /// An enqueue with length limits or TTL, as RabbitMQ's classic queues: `reject-publish` refuses a message that
  /// would go over a limit (`reject-publish-dlx` dead-letters it too), `drop-head` takes it and drops (dead-letters)
  /// the oldest; a message no consumer took at once expires now when its TTL is 0.
  @usableFromInline func enqueueWithRules(_ message: Message) -> EnqueueResult {
    if self.options.overflow != .dropHead && self.wouldOverflow(adding: message.bodySize) {
      if self.options.overflow == .rejectPublishDeadLetter { self.deadLetter(message, reason: .maxlen) }
      return .refused
    }
    self.messagesPublished &+= 1
    if message.hasExpiration { self.mayExpire = true }
    self.storage.append(
      QueuedMessage(message: message, sequence: self.takeSequence(), enqueuedAt: self.clock.nowNanoseconds))
    if !self.consumers.isEmpty { self.dispatch() }
    var result = EnqueueResult.accepted
    if self.options.overflow == .dropHead && self.dropHeadOverLimits() { result = .acceptedDroppingOldest }
    if self.mayExpire { self.expireHead() }
    return result
  }

  /// Whether one more ready message of `size` bytes goes over `x-max-length` or `x-max-length-bytes`.
  func wouldOverflow(adding size: Int) -> Bool {
    if let limit = self.options.maxLength, self.storage.count + 1 > limit { return true }
    if let limit = self.options.maxLengthBytes, self.storage.bytes + size > limit { return true }
    return false
  }

  /// Drops (dead-letters) the oldest ready messages while the queue is over a limit; returns whether it dropped any.
  func dropHeadOverLimits() -> Bool {
    var dropped = false
    while (self.options.maxLength.map { self.storage.count > $0 } ?? false)
      || (self.options.maxLengthBytes.map { self.storage.bytes > $0 } ?? false),
      let head = self.storage.removeFirst()
    {
      self.storage.settled(head)
      self.deadLetter(head.message, reason: .maxlen)
      dropped = true
    }
    return dropped
  }

  // MARK: Expiry

  /// The most expired messages removed in one go: the rest wait for the next turn of the loop, so that a million
  /// messages expiring at once do not stall other connections.
  public static let expiryBatch = 2_000

  /// When a ready message expires here (uptime nanoseconds): its enqueue time plus the lower of the queue's TTL
  /// and its own `expiration`; nil when it never does.
  @usableFromInline func expiry(of queued: QueuedMessage) -> UInt64? {
    if self.isHolding { return self.holder?.dueTime(of: queued) }
    var ttl = self.options.messageTTL
    if queued.message.hasExpiration, let own = queued.message.expirationMilliseconds { ttl = min(ttl ?? own, own) }
    guard let ttl else { return nil }
    return queued.enqueuedAt &+ UInt64(ttl) &* 1_000_000
  }

  /// Removes the expired messages at the head, dead-lettering them (at most ``expiryBatch``), and asks for a timer
  /// for the next head that will expire. As in RabbitMQ, only the head is checked: a message with a short
  /// `expiration` behind one without waits until it reaches the head. A message that expires exactly now is
  /// still delivered by `dispatch` (`includingDue` false): that is how a TTL of 0 reaches a waiting consumer.
  /// A holding queue's head leaves at its due time the same way, to its holder.
  public func expireHead(includingDue: Bool = true) {
    guard self.mayExpire else { return }
    let now = self.clock.nowNanoseconds
    var expired = 0
    while let head = self.storage.head() {
      guard let deadline = self.expiry(of: head) else { return }
      if deadline > now || (deadline == now && !includingDue) { return self.scheduleTimer(at: deadline) }
      if expired == Self.expiryBatch { return self.scheduleTimer(at: now) }
      _ = self.storage.removeFirst()
      self.storage.settled(head)
      expired += 1
      if self.isHolding {
        self.holder?.release(head.message)
      } else {
        self.deadLetter(head.message, reason: .expired)
      }
    }
  }

  func scheduleTimer(at deadline: UInt64) {
    if let scheduled = self.scheduledTimer, scheduled <= deadline { return }
    guard let owner = self.owner, !self.isDeleted else { return }
    self.scheduledTimer = deadline
    owner.scheduleTimer(for: self, at: deadline)
  }

  /// A timer this queue asked for is due (on the broker's loop, the clock refreshed): expires what is due, and
  /// deletes the queue when it was unused for its `x-expires`.
  public func timerFired(deadline: UInt64) {
    if self.scheduledTimer == deadline { self.scheduledTimer = nil }
    guard !self.isDeleted else { return }
    self.expireHead()
    self.checkUnused()
  }

  /// The queue was used (consumed from, got from, declared again): its `x-expires` period starts again.
  public func markUsed() {
    guard let expires = self.options.expires else { return }
    self.lastUsed = self.clock.nowNanoseconds
    if self.consumers.isEmpty { self.scheduleTimer(at: self.lastUsed &+ UInt64(expires) &* 1_000_000) }
  }

  /// Deletes the queue when it has had no consumer and no use for its `x-expires` period.
  func checkUnused() {
    guard let expires = self.options.expires, self.consumers.isEmpty else { return }
    let deadline = self.lastUsed &+ UInt64(expires) &* 1_000_000
    if deadline <= self.clock.nowNanoseconds {
      self.owner?.removeQueue(self)
    } else {
      self.scheduleTimer(at: deadline)
    }
  }

  // MARK: Dead-lettering

  /// Hands a message that leaves this queue without being consumed to its dead-letter exchange, if it has one
  /// (counted either way).
  func deadLetter(_ message: Message, reason: DeadLetterReason) {
    self.owner?.deadLetter(message, from: self, reason: reason)
  }

  /// A delivery was rejected (basic.reject or basic.nack without requeue): settled and dead-lettered.
  public func reject(_ queued: QueuedMessage) {
    self.settle(queued)
    guard !self.isDeleted else { return }
    self.deadLetter(queued.message, reason: .rejected)
  }

  @usableFromInline func takeSequence() -> UInt32 {
    self.nextSequence &+= 1
    return self.nextSequence
  }

  /// Delivers ready messages to consumers in turn, as far as their channels allow (flow, prefetch, socket).
  public func dispatch() {
    // With x-single-active-consumer only the first consumer (the oldest) takes deliveries; the next one takes
    // over when it goes.
    let count = self.options.singleActiveConsumer ? min(1, self.consumers.count) : self.consumers.count
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
      if self.mayExpire {
        self.expireHead(includingDue: false)
        if self.storage.count == 0 { break }
      }
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
    self.markUsed()
    if self.mayExpire { self.expireHead() }
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
    if self.options.queueType == .quorum { return self.requeueCounting(messages) }
    self.storage.requeue(
      messages.map {
        var m = $0
        m.redelivered = true
        return m
      })
    if self.mayExpire { self.expireHead() }
  }

  /// A quorum queue counts each return: over `x-delivery-limit` a message is dead-lettered (reason
  /// `delivery_limit`), otherwise it goes back with an `x-delivery-count` header (the message is re-made with it;
  /// returns are rare).
  private func requeueCounting(_ messages: [QueuedMessage]) {
    var back: [QueuedMessage] = []
    for var queued in messages {
      queued.deliveryCount &+= 1
      if let limit = self.options.deliveryLimit, Int(queued.deliveryCount) > limit {
        self.storage.settled(queued)
        self.deadLetter(queued.message, reason: .deliveryLimit)
        continue
      }
      var properties = queued.message.properties
      var headers = properties.headers ?? [:]
      headers["x-delivery-count"] = .int64(Int64(queued.deliveryCount))
      properties.headers = headers
      let original = queued.message
      queued.message = Message.make(
        exchange: original.exchange, routingKey: original.routingKey, properties: properties, body: original.body)
      queued.redelivered = true
      back.append(queued)
    }
    self.storage.requeue(back)
    if self.mayExpire { self.expireHead() }
  }

  /// Removes every ready message; returns how many.
  public func purge() -> Int { self.storage.purge() }

  // MARK: Consumers

  func addConsumer(_ consumer: Consumer) {
    self.consumers.append(consumer)
    self.hadConsumer = true
    self.markUsed()
  }

  /// Removes a consumer; returns whether it was the last one of an auto-delete queue.
  func removeConsumer(_ consumer: Consumer) -> Bool {
    guard let index = self.consumers.firstIndex(where: { $0 === consumer }) else { return false }
    self.consumers.remove(at: index)
    if index < self.nextConsumer { self.nextConsumer -= 1 }
    if self.consumers.isEmpty {
      self.resumePublishers()  // no consumers: nothing to wait for
      self.markUsed()  // the x-expires period starts when the last consumer goes
    }
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
