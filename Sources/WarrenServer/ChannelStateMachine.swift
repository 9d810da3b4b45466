import AMQPProtocol
import DequeModule
import NIOCore
import WarrenCore

/// A delivery the client has not settled yet.
public struct UnackedDelivery {
  @usableFromInline init(tag: UInt64, queue: Queue, message: QueuedMessage, consumer: Consumer?, deadline: UInt64) {
    self.tag = tag
    self.queue = queue
    self.message = message
    self.consumer = consumer
    self.deadline = deadline
  }

  /// Its delivery tag on the channel.
  public let tag: UInt64
  /// The queue it came from.
  public let queue: Queue
  /// The message as the queue holds it.
  public let message: QueuedMessage
  /// The consumer it went to; nil for basic.get.
  public let consumer: Consumer?
  /// When it times out unacknowledged (uptime nanoseconds; `UInt64.max`: never): the consumer timeout.
  public let deadline: UInt64
}

/// Deliveries settled by one ack, nack, reject, recover or release.
public struct Settlement {
  /// The deliveries, in tag order.
  public var deliveries: [UnackedDelivery]
  /// Whether they go back to their queues (nack/reject with requeue, recover, release) or are done with.
  public var requeue: Bool
  /// Whether the client acknowledged them (ack), for the counters.
  public var acknowledged: Bool
}

/// What a committed transaction does, in order: its publishes, then its settlements.
public struct Transaction {
  public var publishes: [ChannelStateMachine.Content] = []
  public var settlements: [Settlement] = []
}

/// The semantics of one channel as a value type: the close handshake, content (basic.publish + header + body frames)
/// assembled into whole messages, delivery tags and the unacknowledged deliveries, prefetch credit per consumer and
/// for the channel, channel.flow, publisher confirms and transactions. It takes events and returns actions;
/// ``ServerChannel`` carries them out against the broker and writes the replies.
///
/// The content being assembled lives in stored properties, not in the state: a publish passes through here for
/// every message, and moving it through enum payloads cost a fifth of the publish path.
public struct ChannelStateMachine {
  /// Where the channel's frames are.
  public enum State: Sendable, Equatable {
    case open
    case awaitingHeader
    case awaitingBody
    /// The server sent channel.close and waits for close-ok; other frames are dropped.
    case closing
    case closed
  }

  /// Plain, publisher confirms or transactional (exclusive of each other).
  public enum Mode: Sendable, Equatable {
    case plain, confirm, transactional
  }

  /// What the executor must do.
  public enum Action {
    /// Nothing (more frames needed, a frame dropped while closing, or state changed silently).
    case none
    /// Send this method.
    case reply(AMQPMethod)
    /// Send this method, then let the queues of this channel's consumers deliver again (credit or flow returned).
    case replyAndResume(AMQPMethod)
    /// A broker operation for the executor (declare, bind, delete, purge, get, consume, cancel).
    case perform(AMQPMethod)
    /// A whole message arrived: take it with ``takeContent()``.
    case publishReady
    /// Settle these deliveries with their queues, then send `reply` if any.
    case settle(Settlement, reply: AMQPMethod?)
    /// The oldest delivery was acknowledged on its own: the common case, without building an array.
    case settleOne(UnackedDelivery)
    /// tx.commit: route the publishes, settle the settlements, then send tx.commit-ok.
    case commit(Transaction)
    /// A soft error: close the channel with it.
    case channelError(BrokerError, classID: UInt16, methodID: UInt16)
    /// A hard error: close the connection with it.
    case connectionError(BrokerError, classID: UInt16, methodID: UInt16)
    /// The client sent channel.close: release everything, answer close-ok, free the number.
    case closeRequested
    /// The client answered our channel.close: the channel number is free.
    case closed
  }

  /// A whole message: its basic.publish, property bytes and body.
  public struct Content: Sendable {
    public var publish: BasicPublish
    public var properties: ByteBuffer
    public var body: ByteBuffer
  }

  public private(set) var state: State = .open
  public private(set) var mode: Mode = .plain
  let maxMessageSize: Int

  // Content being assembled.
  private var publish = BasicPublish()
  private var properties = ByteBuffer()
  private var body = ByteBuffer()
  private var bodySize = 0
  private var received = 0

  // Deliveries.
  private var nextDeliveryTag: UInt64 = 0
  /// Unacknowledged deliveries in tag order.
  public private(set) var unacked = Deque<UnackedDelivery>()
  /// Consumers by tag.
  public private(set) var consumers: [String: Consumer] = [:]
  /// The prefetch count for consumers created from now on (basic.qos global=false).
  public private(set) var consumerPrefetch = 0
  /// The most unacknowledged deliveries for the whole channel (basic.qos global=true); 0 is no limit.
  public private(set) var channelPrefetch = 0
  /// channel.flow: whether the client takes deliveries.
  public private(set) var flowActive = true

  /// Publisher confirms.
  public private(set) var confirms = ConfirmTracker()
  private var transaction = Transaction()
  /// Deliveries settled inside the open transaction (back to unacked on rollback).
  private var transactionSettled: [UnackedDelivery] = []

  /// Creates an open channel's machine.
  public init(maxMessageSize: Int) {
    self.maxMessageSize = maxMessageSize
  }

  /// Whether the channel is closing or closed (no deliveries).
  public var isClosing: Bool { self.state == .closing || self.state == .closed }
  /// The memory held for a message being received (the capacity of its body so far).
  public var bufferedContentBytes: Int { self.state == .awaitingBody ? self.body.capacity : 0 }
  /// Whether a publish's header or body frames are still to come.
  public var isReceivingContent: Bool { self.state == .awaitingHeader || self.state == .awaitingBody }

  // MARK: Frames

  /// A method frame arrived.
  public mutating func methodReceived(_ method: AMQPMethod) -> Action {
    switch self.state {
    case .closed:
      return .none
    case .closing:
      switch method {
      case .channelCloseOk:
        self.state = .closed
        return .closed
      case .channelClose:
        self.state = .closed  // both sides closed at once: answer, and the number is free
        return .closeRequested
      default:
        return .none
      }
    case .awaitingHeader, .awaitingBody:
      return .connectionError(
        .unexpectedFrame("expected content header for class 60, got non content header frame instead"),
        classID: BasicPublish.amqpClassID, methodID: BasicPublish.amqpMethodID)
    case .open:
      return self.semantics(of: method)
    }
  }

  /// A basic.publish arrived (the same as ``methodReceived(_:)`` with it).
  @inline(__always)
  public mutating func publishReceived(_ publish: BasicPublish) -> Action {
    guard self.state == .open else { return self.methodReceived(.basicPublish(publish)) }
    self.publish = publish
    self.state = .awaitingHeader
    return .none
  }

  /// A content header frame arrived.
  public mutating func headerReceived(_ header: ContentHeader) -> Action {
    switch self.state {
    case .closing, .closed:
      return .none
    case .awaitingHeader:
      if header.classID != BasicPublish.amqpClassID {
        return .connectionError(
          .unexpectedFrame("expected content header for class 60, got class \(header.classID)"),
          classID: BasicPublish.amqpClassID, methodID: BasicPublish.amqpMethodID)
      }
      if header.bodySize > UInt64(self.maxMessageSize) {
        self.state = .open
        return .channelError(
          .preconditionFailed(
            "message size \(header.bodySize) is larger than configured max size \(self.maxMessageSize)"),
          classID: BasicPublish.amqpClassID, methodID: BasicPublish.amqpMethodID)
      }
      self.properties = header.rawProperties
      if header.bodySize == 0 {
        self.state = .open
        return .publishReady
      }
      self.bodySize = Int(header.bodySize)
      self.received = 0
      self.state = .awaitingBody
      return .none
    default:
      return .connectionError(
        .unexpectedFrame("expected method frame, got non method frame instead"), classID: 0, methodID: 0)
    }
  }

  /// A content body frame arrived.
  public mutating func bodyReceived(_ part: ByteBuffer) -> Action {
    switch self.state {
    case .closing, .closed:
      return .none
    case .awaitingBody:
      let size = part.readableBytes
      let remaining = self.bodySize - self.received
      if size > remaining {
        return .connectionError(
          .unexpectedFrame("content body of \(self.bodySize) bytes exceeded by \(size - remaining) bytes"),
          classID: BasicPublish.amqpClassID, methodID: BasicPublish.amqpMethodID)
      }
      if self.received == 0 && size == remaining {
        self.body = part  // one frame: no copy
      } else {
        if self.received == 0 { self.body = ByteBuffer() }
        var part = part
        self.body.writeBuffer(&part)  // grows with what arrives, never by what the header claims
      }
      self.received += size
      if self.received == self.bodySize {
        self.state = .open
        return .publishReady
      }
      return .none
    default:
      return .connectionError(
        .unexpectedFrame("expected method frame, got non method frame instead"), classID: 0, methodID: 0)
    }
  }

  /// The message completed by the last ``Action/publishReady``.
  public mutating func takeContent() -> Content {
    let content = Content(publish: self.publish, properties: self.properties, body: self.body)
    self.properties = ByteBuffer()
    self.body = ByteBuffer()
    return content
  }

  /// The server closes the channel (an error): drop everything but close/close-ok from now on.
  public mutating func serverClosing() {
    self.state = .closing
  }

  // MARK: Methods

  private mutating func semantics(of method: AMQPMethod) -> Action {
    switch method {
    case .basicPublish(let publish):
      return self.publishReceived(publish)
    case .channelClose:
      self.state = .closed
      return .closeRequested
    case .channelOpen:
      return .channelError(.channelError("second 'channel.open' seen"), classID: 20, methodID: 10)
    case .channelFlow(let flow):
      self.flowActive = flow.active
      let reply = AMQPMethod.channelFlowOk(ChannelFlowOk(active: flow.active))
      return flow.active ? .replyAndResume(reply) : .reply(reply)
    case .channelFlowOk:
      return .none
    case .accessRequest:
      return .reply(.accessRequestOk(AccessRequestOk(ticket: 1)))

    case .basicQos(let m):
      if m.prefetchSize != 0 { return self.error(.notImplemented("prefetch_size!=0 (\(m.prefetchSize))"), method) }
      let reply = AMQPMethod.basicQosOk(BasicQosOk())
      if m.global {
        self.channelPrefetch = Int(m.prefetchCount)
        return .replyAndResume(reply)
      }
      // Unlike RabbitMQ (new consumers only), and as LavinMQ: the channel's existing consumers take the new
      // prefetch too. Celery raises the prefetch of a live consumer this way when the broker is not RabbitMQ.
      self.consumerPrefetch = Int(m.prefetchCount)
      if self.consumers.isEmpty { return .reply(reply) }
      for consumer in self.consumers.values { consumer.prefetchCount = self.consumerPrefetch }
      return .replyAndResume(reply)
    case .basicAck, .basicNack, .basicReject:
      return self.settlementReceived(method)
    case .basicRecover(let m):
      return self.recover(requeue: m.requeue, reply: .basicRecoverOk(BasicRecoverOk()), method)
    case .basicRecoverAsync(let m):
      return self.recover(requeue: m.requeue, reply: nil, method)

    case .confirmSelect(let m):
      if self.mode == .transactional {
        return self.error(.preconditionFailed("cannot switch from tx to confirm mode"), method)
      }
      self.mode = .confirm
      return m.noWait ? .none : .reply(.confirmSelectOk(ConfirmSelectOk()))
    case .txSelect:
      if self.mode == .confirm {
        return self.error(.preconditionFailed("cannot switch from confirm to tx mode"), method)
      }
      self.mode = .transactional
      return .reply(.txSelectOk(TxSelectOk()))
    case .txCommit:
      guard self.mode == .transactional else {
        return self.error(.preconditionFailed("channel is not transactional"), method)
      }
      let committed = self.transaction
      self.transaction = Transaction()
      self.transactionSettled.removeAll()
      return .commit(committed)
    case .txRollback:
      guard self.mode == .transactional else {
        return self.error(.preconditionFailed("channel is not transactional"), method)
      }
      // As RabbitMQ: acknowledgements made in the transaction are forgotten; those deliveries are unacked again.
      self.restoreUnacked(self.transactionSettled)
      self.transaction = Transaction()
      self.transactionSettled.removeAll()
      return .reply(.txRollbackOk(TxRollbackOk()))

    case .exchangeDeclare, .exchangeDelete, .exchangeBind, .exchangeUnbind, .queueDeclare, .queueBind, .queueUnbind,
      .queuePurge, .queueDelete, .basicGet, .basicConsume, .basicCancel:
      return .perform(method)
    default:
      return self.error(.commandInvalid("unexpected method from client: \(method.name)"), method)
    }
  }

  private func error(_ error: BrokerError, _ method: AMQPMethod) -> Action {
    error.closesConnection
      ? .connectionError(error, classID: method.classID, methodID: method.methodID)
      : .channelError(error, classID: method.classID, methodID: method.methodID)
  }

  // MARK: Publishing

  /// A message taken with ``takeContent()`` joins the open transaction (routed at tx.commit).
  public mutating func addToTransaction(_ content: Content) {
    self.transaction.publishes.append(content)
  }

  /// The outcome of a routed publish, in confirm mode: its confirm is sent by ``nextConfirm()`` when due.
  @inlinable
  public mutating func published(_ outcome: ConfirmTracker.Outcome) {
    if self.mode == .confirm { self.confirmsRecord(outcome) }
  }

  @usableFromInline mutating func confirmsRecord(_ outcome: ConfirmTracker.Outcome) {
    self.confirms.record(outcome)
  }

  /// Storage made everything up to `token` durable.
  public mutating func storageCompleted(upTo token: StorageToken) {
    self.confirms.storageCompleted(upTo: token)
  }

  /// Storage failed to make `token` durable: the publishes waiting for it are nacked.
  public mutating func storageFailed(upTo token: StorageToken) {
    self.confirms.storageFailed(upTo: token)
  }

  /// The next confirm to send (call until nil, once per read batch).
  public mutating func nextConfirm() -> ConfirmTracker.Confirm? {
    guard self.mode == .confirm else { return nil }
    return self.confirms.nextConfirm()
  }

  // MARK: Consumers and deliveries

  /// The tag for a new consumer: the client's, unless already used on this channel (530), or a generated one.
  public func consumerTag(requested: String) throws(BrokerError) -> String {
    if requested.isEmpty {
      var tag: String
      repeat { tag = "amq.ctag-" + generatedNameSuffix() } while self.consumers[tag] != nil
      return tag
    }
    if self.consumers[requested] != nil { throw .notAllowed("attempt to reuse consumer tag '\(requested)'") }
    return requested
  }

  /// A consumer was created on this channel.
  public mutating func addConsumer(_ consumer: Consumer) {
    self.consumers[consumer.tag] = consumer
  }

  /// basic.cancel, or the queue went away: forgets the consumer (its deliveries stay unacked).
  public mutating func removeConsumer(tag: String) -> Consumer? {
    self.consumers.removeValue(forKey: tag)
  }

  /// Whether a consumer may take another delivery: flow on, channel open, and both prefetch limits have room.
  @inlinable
  public func canDeliver(to consumer: Consumer) -> Bool {
    self.flowActive && self.state != .closing && self.state != .closed
      && (self.channelPrefetch == 0 || self.unacked.count < self.channelPrefetch)
      && consumer.hasCapacity
  }

  /// A delivery goes out to a consumer (or, with `consumer` nil, in answer to basic.get): returns its tag and,
  /// unless no-ack, tracks it until settled.
  @inlinable
  public mutating func delivered(
    _ message: QueuedMessage, from queue: Queue, to consumer: Consumer?, noAck: Bool, deadline: UInt64 = .max
  ) -> UInt64 {
    let tag = self.takeDeliveryTag()
    if !noAck {
      consumer?.unacked += 1
      if deadline < self.earliestDeadline { self.earliestDeadline = deadline }
      self.appendUnacked(
        UnackedDelivery(tag: tag, queue: queue, message: message, consumer: consumer, deadline: deadline))
    }
    return tag
  }

  /// No unacked delivery times out before this (it may be later: acknowledgements do not move it).
  @usableFromInline var earliestDeadline: UInt64 = .max

  /// An unacknowledged delivery whose consumer timeout has passed at `now`, if any (cheap while none can have).
  public mutating func timedOutDelivery(now: UInt64) -> UnackedDelivery? {
    guard self.earliestDeadline <= now else { return nil }
    var earliest = UInt64.max
    for delivery in self.unacked {
      if delivery.deadline <= now { return delivery }
      earliest = min(earliest, delivery.deadline)
    }
    self.earliestDeadline = earliest
    return nil
  }

  @usableFromInline mutating func takeDeliveryTag() -> UInt64 {
    self.nextDeliveryTag += 1
    return self.nextDeliveryTag
  }

  @usableFromInline mutating func appendUnacked(_ delivery: consuming UnackedDelivery) {
    self.unacked.append(delivery)
  }

  private mutating func settlementReceived(_ method: AMQPMethod) -> Action {
    let tag: UInt64
    let multiple: Bool
    let requeue: Bool
    let acknowledged: Bool
    switch method {
    case .basicAck(let m): (tag, multiple, requeue, acknowledged) = (m.deliveryTag, m.multiple, false, true)
    case .basicNack(let m): (tag, multiple, requeue, acknowledged) = (m.deliveryTag, m.multiple, m.requeue, false)
    case .basicReject(let m): (tag, multiple, requeue, acknowledged) = (m.deliveryTag, false, m.requeue, false)
    default: return .none
    }
    // The common case, one ack of the oldest delivery, without building an array.
    if acknowledged, !multiple, self.mode != .transactional, self.firstUnackedTag == tag {
      let head = self.unacked.removeFirst()
      head.consumer?.unacked -= 1
      return .settleOne(head)
    }
    guard let deliveries = self.takeDeliveries(tag: tag, multiple: multiple) else {
      return .channelError(
        .preconditionFailed("unknown delivery tag \(tag)"), classID: method.classID, methodID: method.methodID)
    }
    let settlement = Settlement(deliveries: deliveries, requeue: requeue, acknowledged: acknowledged)
    if self.mode == .transactional {
      self.transaction.settlements.append(settlement)
      self.transactionSettled.append(contentsOf: deliveries)
      return .none
    }
    return .settle(settlement, reply: nil)
  }

  /// Removes the deliveries a tag names (`multiple`: all up to it; tag 0 with multiple: all), or nil if unknown.
  private mutating func takeDeliveries(tag: UInt64, multiple: Bool) -> [UnackedDelivery]? {
    var taken: [UnackedDelivery] = []
    if multiple {
      if tag == 0 {
        taken = Array(self.unacked)
        self.unacked.removeAll()
      } else {
        guard let first = self.firstUnackedTag, first <= tag else { return nil }
        // Tags increase along the deque: count those up to `tag`, then move them out (no copies).
        var count = 1
        while count < self.unacked.count, self.unacked[count].tag <= tag { count += 1 }
        taken.reserveCapacity(count)
        for _ in 0..<count { taken.append(self.unacked.removeFirst()) }
      }
    } else if self.firstUnackedTag == tag {
      taken = [self.unacked.removeFirst()]
    } else {
      guard let index = self.index(ofTag: tag) else { return nil }
      taken = [self.unacked.remove(at: index)]
    }
    for delivery in taken { delivery.consumer?.unacked -= 1 }
    return taken
  }

  /// The tag of the oldest unacked delivery, read without copying the delivery.
  private var firstUnackedTag: UInt64? {
    self.unacked.isEmpty ? nil : self.unacked[0].tag
  }

  private func index(ofTag tag: UInt64) -> Int? {
    var low = 0
    var high = self.unacked.count - 1
    while low <= high {
      let mid = (low + high) / 2
      let t = self.unacked[mid].tag
      if t == tag { return mid }
      if t < tag { low = mid + 1 } else { high = mid - 1 }
    }
    return nil
  }

  /// Puts deliveries back among the unacked, in tag order (tx.rollback).
  private mutating func restoreUnacked(_ deliveries: [UnackedDelivery]) {
    guard !deliveries.isEmpty else { return }
    for delivery in deliveries { delivery.consumer?.unacked += 1 }
    var merged = Array(self.unacked) + deliveries
    merged.sort { $0.tag < $1.tag }
    self.unacked = Deque(merged)
  }

  private mutating func recover(requeue: Bool, reply: AMQPMethod?, _ method: AMQPMethod) -> Action {
    guard requeue else { return self.error(.notImplemented("requeue=false"), method) }
    let all = self.takeDeliveries(tag: 0, multiple: true) ?? []
    return .settle(Settlement(deliveries: all, requeue: true, acknowledged: false), reply: reply)
  }

  // MARK: Release

  /// The channel goes away (closed, or its connection did): forgets every consumer and unacked delivery and the
  /// open transaction, and returns them for the executor to hand back to their queues.
  public mutating func release() -> (consumers: [Consumer], unacked: Settlement) {
    if self.state != .closed { self.state = .closing }
    let consumers = Array(self.consumers.values)
    self.consumers.removeAll()
    self.restoreUnacked(self.transactionSettled)  // an uncommitted transaction's acknowledgements do not count
    self.transaction = Transaction()
    self.transactionSettled.removeAll()
    let all = self.takeDeliveries(tag: 0, multiple: true) ?? []
    return (consumers, Settlement(deliveries: all, requeue: true, acknowledged: false))
  }
}
