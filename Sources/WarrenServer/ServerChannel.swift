import AMQPProtocol
import DequeModule
import Logging
import NIOCore
import WarrenCore

/// A delivery the client has not acknowledged yet.
struct UnackedDelivery {
  let tag: UInt64
  let queue: Queue
  let message: QueuedMessage
  let consumer: Consumer?
}

/// One AMQP channel of a connection: carries out its methods against the broker and delivers to its consumers.
final class ServerChannel: DeliveryChannel {
  let number: UInt16
  /// The connection outlives its channels (it releases them before it goes), so no reference counting here.
  unowned(unsafe) let connection: AMQPConnectionHandler
  unowned(unsafe) let vhost: VirtualHost
  var machine: ChannelStateMachine
  private var consumers: [String: Consumer] = [:]
  private var consumerPrefetch = 0
  private var channelPrefetch = 0
  private var unacked = Deque<UnackedDelivery>()
  private var nextDeliveryTag: UInt64 = 0
  private var flowActive = true
  private var confirmMode = false
  private var publishSequence: UInt64 = 0
  private var confirmedUpTo: UInt64 = 0
  private var transactional = false
  private var txPublishes: [(BasicPublish, ByteBuffer, ByteBuffer)] = []
  private var txSettlements: [AMQPMethod] = []
  private var touchedQueues: [Queue] = []
  private var released = false
  private var lastExchange: Exchange?
  private var routeCache = RouteCache()
  /// The broker's counters (messages received, routed, delivered, ...).
  let counters: BrokerCounters

  init(number: UInt16, connection: AMQPConnectionHandler) {
    self.number = number
    self.connection = connection
    self.vhost = connection.vhost!
    self.counters = connection.broker.counters
    self.machine = ChannelStateMachine(maxMessageSize: connection.broker.limits.maxMessageSize)
  }

  private var connectionID: UInt64 { self.connection.id }

  /// Throws 403 unless the connection's user has this access to the resource.
  private func authorize(_ access: Permission.Access, _ kind: String, _ name: String) throws(BrokerError) {
    try self.connection.broker.authorize(
      access, kind, name, vhost: self.vhost.name, user: self.connection.machine.username ?? "")
  }

  // MARK: Frames

  func methodReceived(_ method: AMQPMethod) {
    self.perform(self.machine.methodReceived(method))
  }

  func publishReceived(_ publish: BasicPublish) {
    self.perform(self.machine.publishReceived(publish))
  }

  func headerReceived(_ header: ContentHeader) {
    self.perform(self.machine.headerReceived(header))
  }

  func bodyReceived(_ body: ByteBuffer) {
    self.perform(self.machine.bodyReceived(body))
  }

  private func perform(_ action: ChannelStateMachine.Action) {
    switch action {
    case .none:
      break
    case .method(let method):
      do {
        try self.handle(method)
      } catch {
        self.fail(error, classID: method.classID, methodID: method.methodID)
      }
    case .publishReady:
      let content = self.machine.takeContent()
      do {
        try self.publish(content.publish, content.properties, content.body)
      } catch {
        self.fail(error, classID: 60, methodID: 40)
      }
    case .channelError(let error, let classID, let methodID):
      self.fail(error, classID: classID, methodID: methodID)
    case .connectionError(let error, let classID, let methodID):
      self.connection.connectionError(error, classID: classID, methodID: methodID)
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
    self.machine.serverClosing()
    self.release()
    self.connection.writeMethod(
      channel: self.number,
      .channelClose(
        ChannelClose(replyCode: error.replyCode, replyText: error.replyText, classID: classID, methodID: methodID)))
  }

  private func reply(_ method: AMQPMethod) {
    self.connection.writeMethod(channel: self.number, method)
  }

  // MARK: Methods

  private func handle(_ method: AMQPMethod) throws(BrokerError) {
    switch method {
    case .channelClose:
      self.flushConfirms()
      self.release()
      self.reply(.channelCloseOk(ChannelCloseOk()))
      self.connection.channelClosed(self.number)
    case .channelFlow(let flow):
      self.flowActive = flow.active
      self.reply(.channelFlowOk(ChannelFlowOk(active: flow.active)))
      if flow.active { self.resumeDeliveries() }
    case .channelFlowOk:
      break
    case .accessRequest:
      self.reply(.accessRequestOk(AccessRequestOk(ticket: 1)))

    case .exchangeDeclare(let m):
      if !m.passive { try self.authorize(.configure, "exchange", m.exchange) }
      try self.vhost.declareExchange(
        name: m.exchange, type: m.type, passive: m.passive, durable: m.durable, autoDelete: m.autoDelete,
        isInternal: m.isInternal, arguments: m.arguments)
      if !m.noWait { self.reply(.exchangeDeclareOk(ExchangeDeclareOk())) }
    case .exchangeDelete(let m):
      try self.authorize(.configure, "exchange", m.exchange)
      try self.vhost.deleteExchange(name: m.exchange, ifUnused: m.ifUnused)
      if !m.noWait { self.reply(.exchangeDeleteOk(ExchangeDeleteOk())) }
    case .exchangeBind(let m):
      try self.authorize(.write, "exchange", m.destination)
      try self.authorize(.read, "exchange", m.source)
      try self.vhost.bindExchange(
        destination: m.destination, source: m.source, routingKey: m.routingKey, arguments: m.arguments)
      if !m.noWait { self.reply(.exchangeBindOk(ExchangeBindOk())) }
    case .exchangeUnbind(let m):
      try self.authorize(.write, "exchange", m.destination)
      try self.authorize(.read, "exchange", m.source)
      try self.vhost.unbindExchange(
        destination: m.destination, source: m.source, routingKey: m.routingKey, arguments: m.arguments)
      if !m.noWait { self.reply(.exchangeUnbindOk(ExchangeUnbindOk())) }

    case .queueDeclare(let m):
      if !m.passive { try self.authorize(.configure, "queue", m.queue.isEmpty ? "amq.gen-" : m.queue) }
      let queue = try self.vhost.declareQueue(
        name: m.queue, passive: m.passive, durable: m.durable, exclusive: m.exclusive, autoDelete: m.autoDelete,
        arguments: m.arguments, connection: self.connectionID)
      if !m.noWait {
        self.reply(
          .queueDeclareOk(
            QueueDeclareOk(
              queue: queue.name, messageCount: UInt32(clamping: queue.messageCount),
              consumerCount: UInt32(clamping: queue.consumers.count))))
      }
    case .queueBind(let m):
      try self.authorize(.write, "queue", m.queue)
      try self.authorize(.read, "exchange", m.exchange)
      try self.vhost.bindQueue(
        m.queue, to: m.exchange, routingKey: m.routingKey, arguments: m.arguments, connection: self.connectionID)
      if !m.noWait { self.reply(.queueBindOk(QueueBindOk())) }
    case .queueUnbind(let m):
      try self.authorize(.write, "queue", m.queue)
      try self.authorize(.read, "exchange", m.exchange)
      try self.vhost.unbindQueue(
        m.queue, from: m.exchange, routingKey: m.routingKey, arguments: m.arguments, connection: self.connectionID)
      self.reply(.queueUnbindOk(QueueUnbindOk()))
    case .queuePurge(let m):
      try self.authorize(.read, "queue", m.queue)
      let queue = try self.vhost.queue(named: m.queue, connection: self.connectionID)
      let count = queue.purge()
      if !m.noWait { self.reply(.queuePurgeOk(QueuePurgeOk(messageCount: UInt32(clamping: count)))) }
    case .queueDelete(let m):
      try self.authorize(.configure, "queue", m.queue)
      let count = try self.vhost.deleteQueue(
        name: m.queue, ifUnused: m.ifUnused, ifEmpty: m.ifEmpty, connection: self.connectionID)
      if !m.noWait { self.reply(.queueDeleteOk(QueueDeleteOk(messageCount: UInt32(clamping: count)))) }

    case .basicQos(let m):
      if m.prefetchSize != 0 {
        throw .notImplemented("prefetch_size!=0 (\(m.prefetchSize))")
      }
      if m.global {
        self.channelPrefetch = Int(m.prefetchCount)
        self.resumeDeliveries()
      } else {
        self.consumerPrefetch = Int(m.prefetchCount)
      }
      self.reply(.basicQosOk(BasicQosOk()))
    case .basicConsume(let m):
      try self.consume(m)
    case .basicCancel(let m):
      if let consumer = self.consumers.removeValue(forKey: m.consumerTag) {
        if !m.noWait { self.reply(.basicCancelOk(BasicCancelOk(consumerTag: m.consumerTag))) }
        self.vhost.removeConsumer(consumer)
      } else if !m.noWait {
        self.reply(.basicCancelOk(BasicCancelOk(consumerTag: m.consumerTag)))
      }
    case .basicGet(let m):
      try self.authorize(.read, "queue", m.queue)
      let queue = try self.vhost.queue(named: m.queue, connection: self.connectionID)
      guard let message = queue.get(noAck: m.noAck) else {
        self.counters.values.messagesGetEmpty += 1
        self.reply(.basicGetEmpty(BasicGetEmpty()))
        return
      }
      if m.noAck {
        self.counters.values.messagesDeliveredGetAutoAck += 1
      } else {
        self.counters.values.messagesDeliveredGetManualAck += 1
      }
      if message.redelivered { self.counters.values.messagesRedelivered += 1 }
      self.nextDeliveryTag += 1
      if !m.noAck {
        self.unacked.append(
          UnackedDelivery(tag: self.nextDeliveryTag, queue: queue, message: message, consumer: nil))
      }
      self.connection.writeContent(
        channel: self.number,
        .basicGetOk(
          BasicGetOk(
            deliveryTag: self.nextDeliveryTag, redelivered: message.redelivered, exchange: message.message.exchange,
            routingKey: message.message.routingKey, messageCount: UInt32(clamping: queue.messageCount))),
        message: message.message)
    case .basicAck, .basicNack, .basicReject:
      if self.transactional {
        _ = try self.takeDeliveries(method)  // validate now, apply at commit
        self.txSettlements.append(method)
        return
      }
      try self.settle(method)
    case .basicRecover(let m):
      try self.recover(requeue: m.requeue)
      self.reply(.basicRecoverOk(BasicRecoverOk()))
    case .basicRecoverAsync(let m):
      try self.recover(requeue: m.requeue)

    case .confirmSelect(let m):
      if self.transactional { throw .preconditionFailed("cannot switch from tx to confirm mode") }
      self.confirmMode = true
      if !m.noWait { self.reply(.confirmSelectOk(ConfirmSelectOk())) }
    case .txSelect:
      if self.confirmMode { throw .preconditionFailed("cannot switch from confirm to tx mode") }
      self.transactional = true
      self.reply(.txSelectOk(TxSelectOk()))
    case .txCommit:
      guard self.transactional else { throw .preconditionFailed("channel is not transactional") }
      let publishes = self.txPublishes
      let settlements = self.txSettlements
      self.txPublishes.removeAll()
      self.txSettlements.removeAll()
      for (publish, properties, body) in publishes { try self.route(publish, properties, body) }
      for settlement in settlements { try self.settle(settlement) }
      self.reply(.txCommitOk(TxCommitOk()))
    case .txRollback:
      guard self.transactional else { throw .preconditionFailed("channel is not transactional") }
      self.txPublishes.removeAll()
      self.txSettlements.removeAll()
      self.reply(.txRollbackOk(TxRollbackOk()))

    case .channelOpen:
      throw .channelError("second 'channel.open' seen")
    default:
      throw .commandInvalid("unexpected method from client: \(method.name)")
    }
  }

  // MARK: Publishing

  private func publish(_ publish: BasicPublish, _ properties: ByteBuffer, _ body: ByteBuffer) throws(BrokerError) {
    if publish.immediate { throw .notImplemented("immediate=true") }
    if self.transactional {
      _ = try self.vhost.exchangeForPublish(publish.exchange)
      try self.authorize(.write, "exchange", publish.exchange)
      self.txPublishes.append((publish, properties, body))
      return
    }
    try self.route(publish, properties, body)
  }

  private func route(_ publish: BasicPublish, _ properties: ByteBuffer, _ body: ByteBuffer) throws(BrokerError) {
    let exchange: Exchange
    if let cached = self.lastExchange, !cached.isDeleted, cached.name == publish.exchange {
      exchange = cached
    } else {
      exchange = try self.vhost.exchangeForPublish(publish.exchange)
      try self.authorize(.write, "exchange", publish.exchange)  // once per exchange: the cache remembers
      self.lastExchange = exchange
    }
    let message = Message.make(
      exchange: publish.exchange, routingKey: publish.routingKey, rawProperties: properties, body: body)
    self.connection.publishesThisRead += 1
    self.counters.values.messagesReceived &+= 1
    self.counters.recordMessageSize(body.readableBytes)
    exchange.messagesPublished &+= 1
    let routed = self.vhost.publish(
      message, routingKey: publish.routingKey, to: exchange, publisher: self.connection, cache: &self.routeCache)
    if routed > 0 {
      self.counters.values.messagesRouted &+= 1
    } else if publish.mandatory {
      self.counters.values.messagesUnroutableReturned += 1
    } else {
      self.counters.values.messagesUnroutableDropped += 1
    }
    if routed == 0 && publish.mandatory {
      self.connection.writeContent(
        channel: self.number,
        .basicReturn(
          BasicReturn(
            replyCode: 312, replyText: "NO_ROUTE", exchange: publish.exchange, routingKey: publish.routingKey)),
        message: message)
    }
    if self.confirmMode {
      self.publishSequence += 1
      self.counters.values.messagesReceivedConfirm &+= 1
    }
  }

  /// Sends one basic.ack (multiple when it can) for every publish confirmed since the last one.
  func flushConfirms() {
    guard self.confirmMode, self.publishSequence > self.confirmedUpTo else { return }
    let multiple = self.publishSequence - self.confirmedUpTo > 1
    self.counters.values.messagesConfirmed &+= Int(self.publishSequence - self.confirmedUpTo)
    self.confirmedUpTo = self.publishSequence
    self.reply(.basicAck(BasicAck(deliveryTag: self.publishSequence, multiple: multiple)))
  }

  // MARK: Consuming

  private func consume(_ m: BasicConsume) throws(BrokerError) {
    try self.authorize(.read, "queue", m.queue)
    let queue = try self.vhost.queue(named: m.queue, connection: self.connectionID)
    var tag = m.consumerTag
    if tag.isEmpty {
      repeat { tag = "amq.ctag-" + Self.randomSuffix() } while self.consumers[tag] != nil
    } else if self.consumers[tag] != nil {
      throw .notAllowed("attempt to reuse consumer tag '\(tag)'")
    }
    if queue.hasExclusiveConsumer || (m.exclusive && !queue.consumers.isEmpty) {
      throw .accessRefused("\(describeQueue(queue)) in exclusive use")
    }
    let consumer = Consumer(
      tag: tag, queue: queue, noAck: m.noAck, exclusive: m.exclusive, prefetchCount: self.consumerPrefetch,
      channel: self, arguments: m.arguments)
    self.consumers[tag] = consumer
    if !m.noWait { self.reply(.basicConsumeOk(BasicConsumeOk(consumerTag: tag))) }
    try self.vhost.addConsumer(consumer)  // delivers what is ready, after consume-ok
  }

  private func describeQueue(_ queue: Queue) -> String {
    "queue '\(queue.name)' in vhost '\(queue.vhost)'"
  }

  private static func randomSuffix() -> String {
    let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    var generator = SystemRandomNumberGenerator()
    return String((0..<22).map { _ in alphabet[Int(generator.next() % 64)] })
  }

  func canDeliver(to consumer: Consumer) -> Bool {
    self.flowActive && self.connection.isWritable && !self.machine.isClosing
      && (self.channelPrefetch == 0 || self.unacked.count < self.channelPrefetch)
  }

  func deliver(_ message: QueuedMessage, from queue: Queue, to consumer: Consumer) {
    self.nextDeliveryTag += 1
    if !consumer.noAck {
      self.unacked.append(
        UnackedDelivery(tag: self.nextDeliveryTag, queue: queue, message: message, consumer: consumer))
      self.counters.values.messagesDeliveredConsumeManualAck &+= 1
    } else {
      self.counters.values.messagesDeliveredConsumeAutoAck &+= 1
    }
    if message.redelivered { self.counters.values.messagesRedelivered &+= 1 }
    self.connection.writeDelivery(
      channel: self.number, consumerTag: consumer.tagBytes, deliveryTag: self.nextDeliveryTag,
      redelivered: message.redelivered, message: message.message)
  }

  func consumerCancelledByServer(_ consumer: Consumer) {
    guard self.consumers.removeValue(forKey: consumer.tag) != nil else { return }
    if self.connection.machine.clientSupportsConsumerCancelNotify {
      self.reply(.basicCancel(BasicCancel(consumerTag: consumer.tag, noWait: true)))
    }
  }

  /// Cancels every consumer from the server's side (basic.cancel to clients that support it): the broker is
  /// shutting down. Unacknowledged deliveries stay with the channel until it closes.
  func cancelConsumersForShutdown() {
    let consumers = Array(self.consumers.values)
    for consumer in consumers {
      self.vhost.removeConsumer(consumer)
      self.consumerCancelledByServer(consumer)
    }
  }

  /// Whether a publish is half received (its header or body frames are still to come).
  var isReceivingContent: Bool { self.machine.isReceivingContent }

  /// Lets the queues of this channel's consumers deliver again (flow on, prefetch raised, socket writable).
  func resumeDeliveries() {
    self.touchedQueues.removeAll(keepingCapacity: true)
    for consumer in self.consumers.values where !self.touchedQueues.contains(where: { $0 === consumer.queue }) {
      self.touchedQueues.append(consumer.queue)
    }
    for queue in self.touchedQueues { queue.dispatch() }
  }

  // MARK: Acknowledgements

  /// Removes the deliveries an ack/nack/reject names, or throws 406 for an unknown tag.
  private func takeDeliveries(_ method: AMQPMethod) throws(BrokerError) -> [UnackedDelivery] {
    let tag: UInt64
    let multiple: Bool
    switch method {
    case .basicAck(let m): (tag, multiple) = (m.deliveryTag, m.multiple)
    case .basicNack(let m): (tag, multiple) = (m.deliveryTag, m.multiple)
    case .basicReject(let m): (tag, multiple) = (m.deliveryTag, false)
    default: return []
    }
    if multiple {
      if tag == 0 {
        let all = Array(self.unacked)
        self.unacked.removeAll()
        return all
      }
      guard let first = self.unacked.first, first.tag <= tag else {
        throw .preconditionFailed("unknown delivery tag \(tag)")
      }
      var taken: [UnackedDelivery] = []
      while let head = self.unacked.first, head.tag <= tag { taken.append(self.unacked.removeFirst()) }
      return taken
    }
    if let head = self.unacked.first, head.tag == tag { return [self.unacked.removeFirst()] }
    guard let index = self.index(ofTag: tag) else { throw .preconditionFailed("unknown delivery tag \(tag)") }
    return [self.unacked.remove(at: index)]
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

  private func settle(_ method: AMQPMethod) throws(BrokerError) {
    let requeue: Bool
    switch method {
    case .basicNack(let m): requeue = m.requeue
    case .basicReject(let m): requeue = m.requeue
    default: requeue = false
    }
    // The common case, one ack of the oldest delivery, without building arrays.
    if case .basicAck(let m) = method, !m.multiple, let head = self.unacked.first, head.tag == m.deliveryTag {
      self.unacked.removeFirst()
      self.counters.values.messagesAcknowledged &+= 1
      head.queue.settle(head.message, consumer: head.consumer)
      head.queue.dispatch()
      return
    }
    let deliveries = try self.takeDeliveries(method)
    if case .basicAck = method { self.counters.values.messagesAcknowledged += deliveries.count }
    self.settle(deliveries, requeue: requeue)
  }

  private func settle(_ deliveries: [UnackedDelivery], requeue: Bool) {
    self.touchedQueues.removeAll(keepingCapacity: true)
    for delivery in deliveries {
      delivery.queue.settle(delivery.message, consumer: delivery.consumer)
      if !self.touchedQueues.contains(where: { $0 === delivery.queue }) { self.touchedQueues.append(delivery.queue) }
    }
    let queues = self.touchedQueues
    if requeue {
      for queue in queues {
        queue.requeue(deliveries.filter { $0.queue === queue }.map(\.message))
      }
    }
    for queue in queues { queue.dispatch() }
  }

  private func recover(requeue: Bool) throws(BrokerError) {
    guard requeue else { throw .notImplemented("requeue=false") }
    let all = Array(self.unacked)
    self.unacked.removeAll()
    self.settle(all, requeue: true)
  }

  // MARK: Release

  /// Cancels the consumers and requeues every unacknowledged delivery (channel closed or connection lost).
  func release() {
    guard !self.released else { return }
    self.released = true
    self.machine.serverClosing()
    let consumers = Array(self.consumers.values)
    self.consumers.removeAll()
    for consumer in consumers { self.vhost.removeConsumer(consumer) }
    let all = Array(self.unacked)
    self.unacked.removeAll()
    self.settle(all, requeue: true)
    self.txPublishes.removeAll()
    self.txSettlements.removeAll()
  }
}
