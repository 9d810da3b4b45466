import AMQPProtocol
import DequeModule
import Logging
import NIOCore
import WarrenCore
import WarrenStore

/// One AMQP channel of a connection: carries out what its ``ChannelStateMachine`` decides against the broker, and
/// writes replies, deliveries and confirms through the connection's ``OutboundWriter``.
///
/// It holds its connection strongly; the connection drops its channels when it closes, which breaks the cycle.
final class ServerChannel: DeliveryChannel {
  let number: UInt16
  let connection: AMQPConnectionHandler
  let outbound: OutboundWriter
  let vhost: VirtualHost
  let operations: TopologyOperations
  /// The broker's counters (messages received, routed, delivered, ...).
  let counters: BrokerCounters
  /// The broker's clock and its `consumer_timeout` (milliseconds; 0: none), read once: deliveries take their
  /// deadlines from them.
  private let clock: BrokerClock
  private let defaultConsumerTimeout: Int
  var machine: ChannelStateMachine
  private var released = false
  private var lastExchange: Exchange?
  private var routeCache = RouteCache()
  private var touchedQueues: [Queue] = []
  /// Replies that wait for the store: a durable topology change is answered once its log record is synced, and the
  /// replies after it wait behind it.
  private var deferredReplies = Deque<(token: StorageToken, method: AMQPMethod)>()

  init(number: UInt16, connection: AMQPConnectionHandler, vhost: VirtualHost) {
    self.number = number
    self.connection = connection
    self.outbound = connection.outbound
    self.vhost = vhost
    self.counters = connection.broker.counters
    self.clock = connection.broker.clock
    self.defaultConsumerTimeout = connection.broker.limits.consumerTimeout
    self.operations = TopologyOperations(
      broker: connection.broker, vhost: vhost, user: connection.machine.username ?? "", connection: connection.id)
    self.machine = ChannelStateMachine(maxMessageSize: connection.broker.limits.maxMessageSize)
  }

  // MARK: Frames

  func methodReceived(_ method: AMQPMethod) {
    if case .basicPublish(let publish) = method { return self.publishReceived(publish) }
    self.perform(self.machine.methodReceived(method), method)
  }

  /// basic.publish: the exchange and the write permission are checked now, before any of the content is held, so
  /// a refused publisher cannot make the broker buffer its bodies (the channel closes; its content is dropped).
  func publishReceived(_ publish: BasicPublish) {
    if self.machine.state == .open {
      do throws(BrokerError) {
        if publish.immediate { throw .notImplemented("immediate=true") }
        _ = try self.exchange(named: publish.exchange)
      } catch {
        return self.fail(error, classID: BasicPublish.amqpClassID, methodID: BasicPublish.amqpMethodID)
      }
    }
    self.perform(self.machine.publishReceived(publish), nil)
  }

  func headerReceived(_ header: ContentHeader) { self.perform(self.machine.headerReceived(header), nil) }
  func bodyReceived(_ body: ByteBuffer) { self.perform(self.machine.bodyReceived(body), nil) }

  private func perform(_ action: ChannelStateMachine.Action, _ method: AMQPMethod?) {
    switch action {
    case .none:
      break
    case .reply(let reply):
      self.reply(reply)
    case .replyAndResume(let reply):
      self.reply(reply)
      self.resumeDeliveries()
    case .perform(let method):
      do throws(BrokerError) {
        try self.carryOut(method)
      } catch {
        self.fail(error, classID: method.classID, methodID: method.methodID)
      }
    case .publishReady:
      let content = self.machine.takeContent()
      do throws(BrokerError) {
        try self.publish(content)
      } catch {
        self.fail(error, classID: BasicPublish.amqpClassID, methodID: BasicPublish.amqpMethodID)
      }
    case .settleOne(let delivery):
      self.counters.values.messagesAcknowledged &+= 1
      delivery.queue.settle(delivery.message)
      delivery.queue.dispatch()
    case .settle(let settlement, let reply):
      self.settle(settlement)
      if let reply { self.reply(reply) }
    case .commit(let transaction):
      do throws(BrokerError) {
        for content in transaction.publishes { try self.route(content) }
        for settlement in transaction.settlements { self.settle(settlement) }
        self.reply(.txCommitOk(TxCommitOk()))
      } catch {
        self.fail(error, classID: 90, methodID: 20)
      }
    case .channelError(let error, let classID, let methodID):
      self.fail(error, classID: classID, methodID: methodID)
    case .connectionError(let error, let classID, let methodID):
      self.connection.connectionError(error, classID: classID, methodID: methodID)
    case .closeRequested:
      self.flushConfirms()
      self.release()
      self.reply(.channelCloseOk(ChannelCloseOk()))
      self.connection.channelClosed(self.number)
    case .closed:
      self.connection.channelClosed(self.number)
    }
  }

  /// Raises an error: soft ones close the channel, hard ones the connection.
  private func fail(_ error: BrokerError, classID: UInt16, methodID: UInt16) {
    if error.closesConnection {
      self.connection.connectionError(error, classID: classID, methodID: methodID)
      return
    }
    self.connection.logger.warning("closing channel \(self.number): \(error)")
    self.flushConfirms()
    self.release()
    self.reply(
      .channelClose(
        ChannelClose(replyCode: error.replyCode, replyText: error.replyText, classID: classID, methodID: methodID)))
  }

  private func reply(_ method: AMQPMethod) {
    if let last = self.deferredReplies.last {
      self.deferredReplies.append((last.token, method))
      return
    }
    self.outbound.writeMethod(channel: self.number, method)
  }

  /// Sends the replies that waited for storage up to `token` (or for `token` that failed: the change stands in
  /// memory, and the failure was logged).
  private func releaseDeferredReplies(upTo token: StorageToken) {
    while let first = self.deferredReplies.first, first.token <= token {
      self.deferredReplies.removeFirst()
      self.outbound.writeMethod(channel: self.number, first.method)
    }
  }

  /// The broker operations: topology, basic.get, basic.consume, basic.cancel.
  private func carryOut(_ method: AMQPMethod) throws(BrokerError) {
    switch method {
    case .basicGet(let m):
      try self.operations.authorize(.read, "queue", m.queue)
      let queue = try self.vhost.queue(named: m.queue, connection: self.connection.id)
      guard let message = queue.get(noAck: m.noAck) else {
        self.counters.values.messagesGetEmpty += 1
        return self.reply(.basicGetEmpty(BasicGetEmpty()))
      }
      if m.noAck {
        self.counters.values.messagesDeliveredGetAutoAck += 1
      } else {
        self.counters.values.messagesDeliveredGetManualAck += 1
      }
      if message.redelivered { self.counters.values.messagesRedelivered += 1 }
      let tag = self.machine.delivered(
        message, from: queue, to: nil, noAck: m.noAck, deadline: self.consumerTimeoutDeadline(queue))
      self.outbound.writeContent(
        channel: self.number,
        .basicGetOk(
          BasicGetOk(
            deliveryTag: tag, redelivered: message.redelivered, exchange: message.message.exchange,
            routingKey: message.message.routingKey, messageCount: UInt32(clamping: queue.messageCount))),
        message: message.message)
    case .basicConsume(let m) where m.queue == VirtualHost.directReplyQueue:
      if !m.noAck { throw .preconditionFailed("reply consumer cannot acknowledge") }
      if self.directReply != nil { throw .preconditionFailed("reply consumer already set") }
      let tag = try self.machine.consumerTag(requested: m.consumerTag)
      self.directReply = (tag, self.vhost.registerDirectReply(self))
      if !m.noWait { self.reply(.basicConsumeOk(BasicConsumeOk(consumerTag: tag))) }
    case .basicCancel(let m) where m.consumerTag == self.directReply?.tag:
      self.endDirectReply()
      if !m.noWait { self.reply(.basicCancelOk(BasicCancelOk(consumerTag: m.consumerTag))) }
    case .basicConsume(let m):
      try self.operations.authorize(.read, "queue", m.queue)
      let queue = try self.vhost.queue(named: m.queue, connection: self.connection.id)
      let tag = try self.machine.consumerTag(requested: m.consumerTag)
      try VirtualHost.checkNewConsumer(on: queue, exclusive: m.exclusive)
      let consumer = Consumer(
        tag: tag, queue: queue, noAck: m.noAck, exclusive: m.exclusive, prefetchCount: self.machine.consumerPrefetch,
        channel: self, arguments: m.arguments)
      self.machine.addConsumer(consumer)
      if !m.noWait { self.reply(.basicConsumeOk(BasicConsumeOk(consumerTag: tag))) }
      try self.vhost.addConsumer(consumer)  // delivers what is ready, after consume-ok
    case .basicCancel(let m):
      let consumer = self.machine.removeConsumer(tag: m.consumerTag)
      if !m.noWait { self.reply(.basicCancelOk(BasicCancelOk(consumerTag: m.consumerTag))) }
      if let consumer { self.vhost.removeConsumer(consumer) }
    default:
      let store = self.connection.runtime.store
      let logged = store?.lastLogGeneration
      guard let reply = try self.operations.perform(method) else { return }
      if let store, store.lastLogGeneration != logged {
        // Its own record's token (never older than those queued before it, which it waits behind anyway).
        self.deferredReplies.append((StorageToken(generation: store.lastLogGeneration), reply))
      } else {
        self.reply(reply)
      }
    }
  }

  // MARK: Publishing

  private func publish(_ content: ChannelStateMachine.Content) throws(BrokerError) {
    if let rewritten = try self.checkProperties(content.properties) {
      var content = content  // a copy only when a property is rewritten (direct reply-to)
      content.properties = rewritten
      return try self.publishChecked(content)
    }
    try self.publishChecked(content)
  }

  private func publishChecked(_ content: ChannelStateMachine.Content) throws(BrokerError) {
    if self.machine.mode == .transactional {
      _ = try self.exchange(named: content.publish.exchange)
      self.machine.addToTransaction(content)
      return
    }
    try self.route(content)
  }

  /// The exchange a client publishes to, with its write permission checked once per exchange (the cache remembers).
  @inline(__always)
  private func exchange(named name: String) throws(BrokerError) -> Exchange {
    if let cached = self.lastExchange, !cached.isDeleted, cached.name == name { return cached }
    let exchange = try self.vhost.exchangeForPublish(name)
    try self.operations.authorize(.write, "exchange", name)
    self.lastExchange = exchange
    return exchange
  }

  /// As RabbitMQ: a `user_id` property must name the authenticated user, an `expiration` must be a non-negative
  /// integer (406), and a `reply_to` of `amq.rabbitmq.reply-to` becomes the channel's reply-to name (the properties
  /// returned). The property flags are read without decoding; the properties are decoded only when one of those
  /// is set.
  @inline(__always)
  private func checkProperties(_ properties: ByteBuffer) throws(BrokerError) -> ByteBuffer? {
    guard let flags = properties.getInteger(at: properties.readerIndex, as: UInt16.self), flags & 0x0310 != 0 else {
      return nil
    }
    var raw = properties
    guard let decoded = try? BasicProperties(from: &raw) else { return nil }
    if let userID = decoded.userId, userID != self.operations.user {
      throw .preconditionFailed(
        "user_id property set to '\(userID)' but authenticated user was '\(self.operations.user)'")
    }
    if let expiration = decoded.expiration, Message.parseExpiration(expiration) == nil {
      throw .preconditionFailed("invalid expiration '\(expiration)': \(Self.expirationError(expiration))")
    }
    return try self.directReplyProperties(decoded)
  }

  /// Why an `expiration` is refused, in RabbitMQ's (Erlang's) words.
  static func expirationError(_ text: String) -> String {
    let digits = text.prefix { $0.isASCII && ($0.isNumber || $0 == "-" || $0 == "+") }
    guard let value = Int64(digits) else { return "no_integer" }
    if digits.count < text.count { return "{leftover_string,\"\(text.dropFirst(digits.count))\"}" }
    return "{value_negative,\(value)}"
  }

  private func route(_ content: ChannelStateMachine.Content) throws(BrokerError) {
    let publish = content.publish
    let exchange = try self.exchange(named: publish.exchange)
    let message = Message.make(
      exchange: publish.exchange, routingKey: publish.routingKey, rawProperties: content.properties, body: content.body)
    self.connection.publishesThisRead += 1
    self.counters.values.messagesReceived &+= 1
    self.counters.recordMessageSize(content.body.readableBytes)
    exchange.messagesPublished &+= 1
    let outcome = self.vhost.publish(
      message, routingKey: publish.routingKey, to: exchange, publisher: self.connection, cache: &self.routeCache)
    if outcome.accepted > 0 {
      self.counters.values.messagesRouted &+= 1
    } else if outcome.isUnroutable && publish.mandatory {
      self.counters.values.messagesUnroutableReturned += 1
      self.outbound.writeContent(
        channel: self.number,
        .basicReturn(
          BasicReturn(
            replyCode: 312, replyText: "NO_ROUTE", exchange: publish.exchange, routingKey: publish.routingKey)),
        message: message)
    } else if outcome.isUnroutable {
      self.counters.values.messagesUnroutableDropped += 1
    }
    if self.machine.mode == .confirm {
      self.counters.values.messagesReceivedConfirm &+= 1
      // Unroutable messages are confirmed (after their return); refused by every queue it reached: nacked; taken
      // by a queue whose storage must sync first: confirmed when the storage reports that token complete.
      if outcome.accepted == 0 && outcome.refused > 0 {
        self.machine.published(.nack)
      } else if let token = outcome.storageToken {
        self.machine.published(.waiting(token))
      } else {
        self.machine.published(.ack)
      }
    }
  }

  /// Storage made everything up to `token` durable: the confirms waiting for it become due.
  func storageCompleted(upTo token: StorageToken) {
    self.releaseDeferredReplies(upTo: token)
    self.machine.storageCompleted(upTo: token)
    self.flushConfirms()
  }

  /// Storage could not make `token` durable: the publishes that waited for it are nacked.
  func storageFailed(upTo token: StorageToken) {
    self.releaseDeferredReplies(upTo: token)
    self.machine.storageFailed(upTo: token)
    self.flushConfirms()
  }

  /// Sends the confirms that are due (basic.ack/basic.nack, `multiple` where it can): once per read batch.
  func flushConfirms() {
    while let confirm = self.machine.nextConfirm() {
      if case .basicAck = confirm.method { self.counters.values.messagesConfirmed &+= confirm.count }
      self.reply(confirm.method)
    }
  }

  // MARK: Consuming

  func canDeliver(to consumer: Consumer) -> Bool {
    self.connection.isWritable && self.machine.canDeliver(to: consumer)
  }

  func deliver(_ message: QueuedMessage, from queue: Queue, to consumer: Consumer) {
    let tag = self.machine.delivered(
      message, from: queue, to: consumer, noAck: consumer.noAck,
      deadline: consumer.noAck ? .max : self.consumerTimeoutDeadline(queue))
    if consumer.noAck {
      self.counters.values.messagesDeliveredConsumeAutoAck &+= 1
      queue.storage.settled(message)
    } else {
      self.counters.values.messagesDeliveredConsumeManualAck &+= 1
    }
    if message.redelivered { self.counters.values.messagesRedelivered &+= 1 }
    self.outbound.writeDelivery(
      channel: self.number, consumerTag: consumer.tagBytes, deliveryTag: tag, redelivered: message.redelivered,
      message: message.message)
  }

  func consumerCancelledByServer(_ consumer: Consumer) {
    guard self.machine.removeConsumer(tag: consumer.tag) != nil else { return }
    if self.connection.machine.clientSupportsConsumerCancelNotify {
      self.reply(.basicCancel(BasicCancel(consumerTag: consumer.tag, noWait: true)))
    }
  }

  /// Cancels every consumer from the server's side (basic.cancel to clients that support it): the broker is
  /// shutting down. Unacknowledged deliveries stay with the channel until it closes.
  func cancelConsumersForShutdown() {
    for consumer in Array(self.machine.consumers.values) {
      self.vhost.removeConsumer(consumer)
      self.consumerCancelledByServer(consumer)
    }
  }

  /// Whether a publish is half received (its header or body frames are still to come).
  var isReceivingContent: Bool { self.machine.isReceivingContent }

  /// Lets the queues of this channel's consumers deliver again (flow on, prefetch raised, socket writable).
  func resumeDeliveries() {
    self.touchedQueues.removeAll(keepingCapacity: true)
    for consumer in self.machine.consumers.values where !self.touchedQueues.contains(where: { $0 === consumer.queue }) {
      self.touchedQueues.append(consumer.queue)
    }
    for queue in self.touchedQueues { queue.dispatch() }
  }

  // MARK: Settling and release

  private func settle(_ settlement: Settlement) {
    let deliveries = settlement.deliveries
    if settlement.acknowledged { self.counters.values.messagesAcknowledged += deliveries.count }
    guard !deliveries.isEmpty else { return }
    // Usually every delivery settled at once comes from one queue: no list of queues, no filtering.
    let first = deliveries[0].queue
    var oneQueue = true
    for i in deliveries.indices where deliveries[i].queue !== first {
      oneQueue = false
      break
    }
    let rejected = !settlement.requeue && !settlement.acknowledged  // dead-lettered
    if oneQueue {
      if settlement.requeue {
        first.requeue(deliveries.map(\.message))
      } else if rejected {
        for i in deliveries.indices { first.reject(deliveries[i].message) }
      } else {
        for i in deliveries.indices { first.settle(deliveries[i].message) }
      }
      first.dispatch()
      return
    }
    self.touchedQueues.removeAll(keepingCapacity: true)
    for i in deliveries.indices where !self.touchedQueues.contains(where: { $0 === deliveries[i].queue }) {
      self.touchedQueues.append(deliveries[i].queue)
    }
    let queues = self.touchedQueues
    for queue in queues {
      if settlement.requeue {
        queue.requeue(deliveries.filter { $0.queue === queue }.map(\.message))
      } else {
        for i in deliveries.indices where deliveries[i].queue === queue {
          if rejected { queue.reject(deliveries[i].message) } else { queue.settle(deliveries[i].message) }
        }
      }
    }
    for queue in queues { queue.dispatch() }
  }

  // MARK: Consumer timeout

  /// The consumer timeout of a delivery from `queue`, in milliseconds (0: none): the queue's
  /// `x-consumer-timeout`, else the broker's `consumer_timeout`.
  private func consumerTimeout(_ queue: Queue) -> Int {
    queue.options.consumerTimeout ?? self.defaultConsumerTimeout
  }

  @inline(__always)
  private func consumerTimeoutDeadline(_ queue: Queue) -> UInt64 {
    let timeout = self.consumerTimeout(queue)
    guard timeout > 0 else { return .max }
    return self.clock.nowNanoseconds &+ UInt64(timeout) &* 1_000_000
  }

  /// Closes the channel, as RabbitMQ does, when a delivery stayed unacknowledged past its consumer timeout (its
  /// deliveries go back to their queues).
  func checkConsumerTimeout(now: UInt64) {
    guard self.machine.state == .open, let late = self.machine.timedOutDelivery(now: now) else { return }
    let timeout = self.consumerTimeout(late.queue)
    self.fail(
      .preconditionFailed(
        "delivery acknowledgement on channel \(self.number) timed out. Timeout value used: \(timeout) ms. "
          + "This timeout value can be configured, see consumers doc guide to learn more"),
      classID: 0, methodID: 0)
  }

  // MARK: Direct reply-to

  /// The channel's reply consumer (consuming from `amq.rabbitmq.reply-to`): its tag and reply-to name.
  private var directReply: (tag: String, name: String)?

  private func endDirectReply() {
    guard let directReply = self.directReply else { return }
    self.vhost.unregisterDirectReply(directReply.name)
    self.directReply = nil
  }

  /// A request's `reply_to` of `amq.rabbitmq.reply-to` becomes this channel's reply-to name (406 when the channel
  /// does not consume replies); nil when there is nothing to rewrite.
  private func directReplyProperties(_ properties: BasicProperties) throws(BrokerError) -> ByteBuffer? {
    guard properties.replyTo == VirtualHost.directReplyQueue else { return nil }
    guard let directReply = self.directReply else {
      throw .preconditionFailed("fast reply consumer does not exist")
    }
    var rewritten = properties
    rewritten.replyTo = directReply.name
    var bytes = ByteBuffer()
    rewritten.encode(into: &bytes)
    return bytes
  }

  /// Cancels the consumers and requeues every unacknowledged delivery (channel closed or connection lost).
  func release() {
    guard !self.released else { return }
    self.released = true
    self.endDirectReply()
    let (consumers, unacked) = self.machine.release()
    for consumer in consumers { self.vhost.removeConsumer(consumer) }
    self.settle(unacked)
  }
}

extension ServerChannel: DirectReplyTarget {
  /// A reply for this channel's reply consumer: delivered at once, no-ack, with the channel's next delivery tag.
  func deliverDirectReply(_ message: Message) {
    guard let directReply = self.directReply, self.machine.state == .open else { return }
    self.counters.values.messagesDeliveredConsumeAutoAck &+= 1
    self.outbound.writeDelivery(
      channel: self.number, consumerTag: Array(directReply.tag.utf8), deliveryTag: self.machine.takeDeliveryTag(),
      redelivered: false, message: message)
  }
}
